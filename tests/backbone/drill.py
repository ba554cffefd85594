"""Harness for the backbone drills: a source service relaying its outbox to a sink consumer group,
each a real process, on the test session's PostgreSQL and broker."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from payloop.db import asyncpg_dsn, make_engine, make_session_factory
from payloop.embedded import free_port
from payloop.events import new_event
from payloop.outbox import publish_many

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import drill_service  # noqa: E402


@dataclass
class Drill:
    infra: object
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    source_url: str = ""
    sink_url: str = ""
    source: subprocess.Popen | None = None
    sinks: dict[int, subprocess.Popen] = field(default_factory=dict)
    logs: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return drill_service.drill_topic(self.run)

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq.drill_sink_{self.run}"

    async def setup(self) -> None:
        drill_service.register(self.run)
        self.source_url = await self.infra.fresh_database("drill", drill_service.MIGRATIONS)
        self.sink_url = await self.infra.fresh_database("drill", drill_service.MIGRATIONS)
        self.logs = self.infra.root / f"drill-{self.run}"
        self.logs.mkdir()

    def env(self) -> dict[str, str]:
        return {
            **self.infra.env(),
            "DRILL_RUN": self.run,
            "PAYLOOP_DRILL_SOURCE_DATABASE_URL": self.source_url,
            "PAYLOOP_DRILL_SINK_DATABASE_URL": self.sink_url,
            "PAYLOOP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            "PAYLOOP_CONSUMER_MAX_ATTEMPTS": "3",
            "PAYLOOP_CONSUMER_BACKOFF_INITIAL_MS": "50",
            "PAYLOOP_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }

    def _spawn(self, role: str, name: str, extra: dict[str, str]) -> subprocess.Popen:
        port = free_port()
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "drill_service.py"), role, "serve", "--port", str(port)],
            env={**self.env(), **extra}, stdout=log, stderr=subprocess.STDOUT,
        )
        proc.port = port  # type: ignore[attr-defined]
        return proc

    async def start_source(self) -> None:
        self.source = self._spawn("source", "source", {"PAYLOOP_RUN_CONSUMERS": "false"})
        await wait_ready(self.source)

    def start_sink(self, index: int) -> subprocess.Popen:
        self.sinks[index] = self._spawn("sink", f"sink-{index}", {"PAYLOOP_RUN_RELAY": "false"})
        return self.sinks[index]

    def kill_sink(self, index: int) -> None:
        proc = self.sinks[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def write(self, steps: list[tuple[str, int, bool]], batch: int = 500) -> list[uuid.UUID]:
        """Write (key, seq, poison) steps through the source's outbox, `batch` per transaction."""
        engine = make_engine(self.source_url, pool_size=2)
        ids = []
        try:
            factory = make_session_factory(engine)
            for start in range(0, len(steps), batch):
                events = [new_event(self.topic, tenant_id="drill", client_id=key, producer="drill_source",
                                    data={"key": key, "seq": seq, "poison": poison})
                          for key, seq, poison in steps[start:start + batch]]
                async with factory() as session, session.begin():
                    await publish_many(session, events)
                ids += [e.id for e in events]
        finally:
            await engine.dispose()
        return ids

    async def sink_query(self, sql: str, *args):
        conn = await asyncpg.connect(asyncpg_dsn(self.sink_url))
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def applied(self) -> int:
        return (await self.sink_query("SELECT count(*) AS n FROM drill_effects"))[0]["n"]

    async def wait_applied(self, n: int, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while (count := await self.applied()) < n:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {count} of {n} events applied after {timeout:.0f}s; "
                                     f"logs in {self.logs}")
            await asyncio.sleep(0.5)

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "payloop"), *args, env=self.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        text = out.decode()
        assert proc.returncode == 0, f"payloop {' '.join(args)} failed ({proc.returncode}):\n{text}"
        return text

    def stop(self) -> None:
        drill_service.unregister(self.run)
        for proc in [self.source, *self.sinks.values()]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [self.source, *self.sinks.values()]:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def wait_ready(proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"process exited with {proc.returncode}")
            try:
                if (await client.get(f"http://127.0.0.1:{proc.port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("not ready in time")
            await asyncio.sleep(0.2)


def chained_steps(keys: int, per_key: int) -> list[tuple[str, int, bool]]:
    """Steps interleaved across keys, each key's seq 1..per_key in order."""
    return [(f"k{k:03d}", seq, False) for seq in range(1, per_key + 1) for k in range(keys)]
