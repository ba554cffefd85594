"""The embedded stack the benchmarks run on: PostgreSQL, Tansu and the six services as processes.

The services start exactly as `payloop dev` starts them (`payloop.cli.dev.DevPlatform`: `python -m
payloop_<name> serve --migrate`, each its own process), on a private PostgreSQL and broker in a
temporary directory and on free ports, so a benchmark never meets a running `payloop dev`.

PostgreSQL runs with `track_commit_timestamp = on`: latencies are measured from one commit to
another with `pg_xact_commit_timestamp` on one server clock: the consumer's inbox row (its xmin) and
the producer's transaction (its id, noted by the writer: the outbox row's xmin is the relay's once it
is marked sent).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from payloop.cli.dev import DevPlatform
from payloop.db import asyncpg_dsn
from payloop.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, port_open, wait_for_port
from payloop.services import SERVICES
from payloop.settings import platform_settings


def _free_offset() -> int:
    """A port offset under which every service port (8100-8105, SMTP 1025) is free."""
    for offset in range(21000, 40000, 97):
        ports = [spec.port + offset for spec in SERVICES] + [1025 + offset]
        if not any(port_open("127.0.0.1", p) for p in ports):
            return offset
    raise RuntimeError("no free port range for the services")


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), from the kernel's own accounting."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Stack:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="payloop-bench-")))
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    platform: DevPlatform | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(f"  {text}", flush=True)

    def start_infrastructure(self) -> None:
        self.postgres = EmbeddedPostgres(self.root / "postgres", free_port())
        self.postgres.start()
        self._enable_commit_timestamps()
        self.broker = EmbeddedBroker(self.root / "broker", free_port())
        self.broker.start()
        self.say(f"PostgreSQL on :{self.postgres.port}, Tansu on :{self.broker.port}, under {self.root}")

    def _enable_commit_timestamps(self) -> None:
        async def alter() -> None:
            conn = await asyncpg.connect(asyncpg_dsn(self.postgres.url()))
            try:
                await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
            finally:
                await conn.close()
        asyncio.run(alter())
        self.postgres.stop()  # the setting takes a restart
        self.postgres.start()

    def env(self) -> dict[str, str]:
        return {
            **os.environ, "PAYLOOP_ENV": "dev", "PAYLOOP_LOG_LEVEL": "WARNING",
            "PAYLOOP_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            **{spec.database_url_env: self.postgres.url(f"bench_{spec.name}") for spec in SERVICES},
            **self.extra_env,
        }

    def start_services(self) -> None:
        """Topics, databases and the six services, as `payloop dev` makes them; waits for /readyz."""
        self.platform = DevPlatform(self.root / "dev", port_offset=_free_offset(), env=self.env())
        self.platform.start_infrastructure()  # uses our PostgreSQL and broker (named in the environment)
        self.platform.prepare()
        # Collections mails reminders for overdue invoices: an SMTP sink takes them, as in `payloop dev`.
        smtp_port = self.platform.port(1025)
        self.platform._spawn("smtp-sink", [sys.executable, "-m", "payloop.simulators.smtp_sink", "--port",
                                           str(free_port()), "--smtp-port", str(smtp_port)],
                             log=self.root / "smtp-sink.log")
        self.platform.start_services()
        self.platform.wait_ready(timeout_s=180)
        wait_for_port("127.0.0.1", smtp_port, 60, self.platform.children["smtp-sink"], "SMTP sink")

    def url(self, service: str) -> str:
        spec = next(s for s in SERVICES if s.name == service)
        return f"http://127.0.0.1:{self.platform.service_port(spec)}"

    def database_url(self, service: str) -> str:
        return self.postgres.url(f"bench_{service}")

    def dsn(self, service: str) -> str:
        return asyncpg_dsn(self.database_url(service))

    def service_pids(self) -> dict[str, int]:
        return {spec.name: self.platform.children[spec.name].pid for spec in SERVICES
                if spec.name in (self.platform.children if self.platform else {})}

    def peak_rss(self) -> dict[str, float | None]:
        return {name: peak_rss_mib(pid) for name, pid in self.service_pids().items()}

    def check_alive(self) -> None:
        for name, proc in (self.platform.children if self.platform else {}).items():
            if proc.poll() is not None:
                log = self.platform.root / "logs" / f"{name}.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")

    def stop(self, keep: bool = False) -> None:
        if self.platform is not None:
            self.platform.stop()  # the services and the SMTP sink; PostgreSQL and the broker are ours
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        platform_settings.cache_clear()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def host_load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cpus": os.cpu_count() or 0}

