"""`payloop dev`: the whole platform on one machine, under `.payloop/`, stopped by Ctrl-C.

Starts (unless configured to use existing ones) an embedded PostgreSQL with one database per
service and the Tansu broker, then the Stripe sandbox (localstripe behind it), creates the topics,
migrates, starts the six services as separate processes, waits for their /readyz, seeds the demo
tenant and prints what runs where. Every child dies with us: we stop them on SIGINT/SIGTERM, and
the kernel sends them SIGTERM if we die without cleaning up (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from payloop.auth import mint_token
from payloop.cli.demo import DEMO_TENANT, demo_today
from payloop.cli.errors import CliError
from payloop.embedded import (
    EMBEDDED_TOPIC_PARTITIONS, EmbeddedBroker, EmbeddedPostgres, port_open, stop_process, wait_for_port,
)
from payloop.kafka import ensure_topics
from payloop.migrations import ensure_database
from payloop.services import SERVICES, ServiceSpec
from payloop.simulators import SIMULATORS
from payloop.simulators.localstripe_process import localstripe_command
from payloop.settings import platform_settings

BROKER_PORT = 9092
POSTGRES_PORT = 54329
STRIPE_PORT = 8420  # the Stripe sandbox, the one Stripe URL the services know
LOCALSTRIPE_PORT = 8421  # localstripe, behind the sandbox


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setpgrp()  # our own process group: a terminal's Ctrl-C reaches only `payloop dev`, which stops us


@dataclass
class DevPlatform:
    root: Path
    port_offset: int = 0
    speed: float = 1.0
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    children: dict[str, subprocess.Popen] = field(default_factory=dict)

    def port(self, base: int) -> int:
        return base + self.port_offset

    def say(self, text: str) -> None:
        print(f"payloop dev: {text}", flush=True)

    # --- infrastructure ---------------------------------------------------------------------------
    def start_infrastructure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.env.setdefault("PAYLOOP_ENV", "dev")
        if not all(self.env.get(s.database_url_env) for s in SERVICES):
            port = self.port(POSTGRES_PORT)
            if port_open("127.0.0.1", port):
                raise CliError(f"port {port} is taken: is another `payloop dev` running? (--port-offset N)")
            self.say(f"starting PostgreSQL on 127.0.0.1:{port} (data in {self.root / 'postgres'})")
            self.postgres = EmbeddedPostgres(self.root / "postgres", port)
            self.postgres.start()
            for spec in SERVICES:
                self.env.setdefault(spec.database_url_env, self.postgres.url(spec.database))
        else:
            self.say("using the databases named by PAYLOOP_<SERVICE>_DATABASE_URL")
        if not self.env.get("PAYLOOP_KAFKA_BOOTSTRAP"):
            port = self.port(BROKER_PORT)
            if port_open("127.0.0.1", port):
                raise CliError(f"port {port} is taken: is another broker or `payloop dev` running?")
            self.say(f"starting the Tansu broker on 127.0.0.1:{port} (memory storage)")
            self.broker = EmbeddedBroker(self.root / "broker", port)
            self.broker.start()
            self.env["PAYLOOP_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
            self.env.setdefault("PAYLOOP_TOPIC_PARTITIONS", str(EMBEDDED_TOPIC_PARTITIONS))
        else:
            self.say(f"using the broker at {self.env['PAYLOOP_KAFKA_BOOTSTRAP']}")
        os.environ.update(self.env)
        platform_settings.cache_clear()

    def start_stripe(self) -> None:
        """localstripe, and the Stripe sandbox in front of it that adds ACH, card declines and payouts."""
        localstripe = self.port(LOCALSTRIPE_PORT)
        # This root's Stripe objects, kept across restarts beside its databases.
        self._spawn("localstripe", localstripe_command(localstripe, self.root / "localstripe.pickle"),
                    log=self.root / "logs" / "sim-localstripe.log")
        self._spawn("stripe", [sys.executable, "-m", "payloop.simulators.stripe_sandbox", "--port",
                               str(self.port(STRIPE_PORT)), "--localstripe", f"http://127.0.0.1:{localstripe}",
                               "--speed", str(self.speed)],
                    log=self.root / "logs" / "sim-stripe.log")
        self.env.setdefault("PAYLOOP_STRIPE_API_BASE", f"http://127.0.0.1:{self.port(STRIPE_PORT)}")
        self.env.setdefault("PAYLOOP_STRIPE_WEBHOOK_SECRET", "whsec_" + secrets.token_hex(16))

    def register_stripe_webhook(self) -> None:
        """The sandbox (and localstripe behind it) post their events, signed with our secret, to payments."""
        payments = next(s for s in SERVICES if s.name == "payments")
        response = httpx.post(
            f"{self.env['PAYLOOP_STRIPE_API_BASE']}/_config/webhooks/payloop",
            data={"url": f"http://127.0.0.1:{self.service_port(payments)}/webhooks/stripe",
                  "secret": self.env["PAYLOOP_STRIPE_WEBHOOK_SECRET"]}, timeout=10)
        if response.status_code != 200:
            raise CliError(f"registering the Stripe webhook with the Stripe sandbox failed: {response.status_code}")

    def start_simulators(self) -> None:
        # The PSAs' books are dated around today, where the services' clocks start (and `--speed` runs them on).
        today = demo_today().isoformat()
        for sim in SIMULATORS:
            port = self.port(sim.port)
            extra = [arg for option, base in sim.extra_ports for arg in (option, str(self.port(base)))]
            extra += ["--today", today] if sim.dated_book else []
            self._spawn(sim.name, [sys.executable, "-m", f"payloop.simulators.{sim.module}", "--port", str(port),
                                   *extra], log=self.root / "logs" / f"sim-{sim.name}.log")

    def wait_outside_systems(self) -> None:
        """Stripe and the simulators start beside the services; they must listen before seeding."""
        for name, port in [("localstripe", self.port(LOCALSTRIPE_PORT)), ("stripe", self.port(STRIPE_PORT)),
                           *((sim.name, self.port(sim.port)) for sim in SIMULATORS)]:
            wait_for_port("127.0.0.1", port, 60, self.children[name], name)

    def prepare(self) -> None:
        self.say("creating topics and databases; each service migrates its own as it starts")
        asyncio.run(ensure_topics())
        asyncio.run(self._ensure_databases())

    async def _ensure_databases(self) -> None:
        for spec in SERVICES:
            await ensure_database(self.env[spec.database_url_env])

    # --- services ---------------------------------------------------------------------------------
    def service_port(self, spec: ServiceSpec) -> int:
        return self.port(spec.port)

    def wire_services(self) -> None:
        """Point the services at this run's ports (they default to the un-offset dev ports)."""
        payments = next(s for s in SERVICES if s.name == "payments")
        collections = next(s for s in SERVICES if s.name == "collections")
        self.env.setdefault("PAYLOOP_COLLECTIONS_SMTP_PORT", str(self.port(1025)))
        self.env.setdefault("PAYLOOP_COLLECTIONS_CHECKOUT_BASE_URL",
                            f"http://127.0.0.1:{self.service_port(payments)}/checkout")
        self.env.setdefault("PAYLOOP_COLLECTIONS_PUBLIC_BASE_URL", f"http://127.0.0.1:{self.service_port(collections)}")
        self.env.setdefault("PAYLOOP_PAYMENTS_PUBLIC_URL", f"http://127.0.0.1:{self.service_port(payments)}")
        qbo, xero = f"http://127.0.0.1:{self.port(8210)}", f"http://127.0.0.1:{self.port(8211)}"
        for name, value in (("QUICKBOOKS_API_BASE", qbo), ("QUICKBOOKS_AUTH_URL", f"{qbo}/connect/oauth2"),
                            ("QUICKBOOKS_TOKEN_URL", f"{qbo}/oauth2/v1/tokens/bearer"),
                            ("XERO_API_BASE", f"{xero}/api.xro/2.0"),
                            ("XERO_AUTH_URL", f"{xero}/identity/connect/authorize"),
                            ("XERO_TOKEN_URL", f"{xero}/connect/token"), ("XERO_CONNECTIONS_URL", f"{xero}/connections")):
            self.env.setdefault(f"PAYLOOP_GL_{name}", value)
        if self.speed != 1:  # both schedulers live on the simulated calendar
            self.env.setdefault("PAYLOOP_COLLECTIONS_CLOCK_SPEED", str(self.speed))
            self.env.setdefault("PAYLOOP_PAYMENTS_CLOCK_SPEED", str(self.speed))

    def start_services(self) -> None:
        self.wire_services()
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        for spec in SERVICES:
            port = self.service_port(spec)
            if port_open("127.0.0.1", port):
                raise CliError(f"port {port} for {spec.name} is taken (--port-offset N picks other ports)")
            self._spawn(spec.name, [sys.executable, "-m", spec.module, "serve", "--migrate", "--port", str(port)],
                        log=logs / f"{spec.name}.log")

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        pending = {spec.name: f"http://127.0.0.1:{self.service_port(spec)}/readyz" for spec in SERVICES}
        with httpx.Client(timeout=2) as client:
            while pending and time.monotonic() < deadline:
                for name, url in list(pending.items()):
                    proc = self.children[name]
                    if proc.poll() is not None:
                        raise CliError(f"{name} exited with code {proc.returncode}; see "
                                       f"{self.root / 'logs' / (name + '.log')}")
                    try:
                        if client.get(url).status_code == 200:
                            del pending[name]
                            self.say(f"{name} ready")
                    except httpx.HTTPError:
                        pass
                time.sleep(0.25)
        if pending:
            raise CliError(f"not ready after {timeout_s:.0f}s: {', '.join(pending)} "
                           f"(logs in {self.root / 'logs'})")

    def seed(self) -> None:
        from payloop.cli.demo import seed_demo

        seed_demo(self)

    def _spawn(self, name: str, command: list[str], log: Path | None = None) -> None:
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.children[name] = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                preexec_fn=_die_with_parent)

    def summary(self) -> str:
        token = mint_token(DEMO_TENANT, ["admin"])
        lines = ["", "Payloop is running:"]
        for spec in SERVICES:
            base = f"http://127.0.0.1:{self.service_port(spec)}"
            lines.append(f"  {spec.name:12} {base}/docs   (OpenAPI {base}/openapi.json)")
        lines += [
            f"  {'broker':12} {self.env['PAYLOOP_KAFKA_BOOTSTRAP']}",
            f"  {'stripe':12} http://127.0.0.1:{self.port(STRIPE_PORT)}   (Stripe sandbox: ACH, declines, payouts;"
            f" POST /_sim/advance; localstripe behind it on :{self.port(LOCALSTRIPE_PORT)})",
            *[f"  {sim.name:12} http://127.0.0.1:{self.port(sim.port)}   ({sim.description})"
              for sim in SIMULATORS],
            f"  {'logs':12} {self.root / 'logs'}",
            "",
            f"Dev token (tenant {DEMO_TENANT}, admin):",
            f"  export PAYLOOP_TOKEN={token}",
            "  curl -H \"Authorization: Bearer $PAYLOOP_TOKEN\" "
            f"http://127.0.0.1:{self.service_port(SERVICES[0])}/v1/tenants/{DEMO_TENANT}",
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)

    # --- shutdown ---------------------------------------------------------------------------------
    def stop(self) -> None:
        services = [self.children[s.name] for s in SERVICES if s.name in self.children]
        for proc in services:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in services:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for name, proc in self.children.items():
            stop_process(proc, signal.SIGTERM, 10)
        if self.broker:
            self.broker.stop()
        if self.postgres:
            self.postgres.stop()


def run_dev(args) -> int:
    platform = DevPlatform(Path(args.root).resolve(), args.port_offset, speed=args.speed)
    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    try:
        platform.start_infrastructure()
        platform.start_stripe()
        platform.start_simulators()
        platform.prepare()
        platform.start_services()
        platform.wait_ready()
        platform.wait_outside_systems()
        platform.register_stripe_webhook()
        if not args.no_seed:
            platform.seed()
        print(platform.summary(), flush=True)
        platform.say(f"up in {time.monotonic() - started:.1f}s")
        while True:
            for name, proc in platform.children.items():
                if proc.poll() is not None:
                    raise CliError(f"{name} exited with code {proc.returncode}; stopping everything "
                                   f"(logs in {platform.root / 'logs'})")
            time.sleep(0.5)
    except KeyboardInterrupt:
        platform.say("stopping ...")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        platform.stop()
        platform.say("stopped")
