"""`payloop dev` brings the platform up and takes every process down again (issue 2)."""
import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer

from payloop.services import SERVICES

pytestmark = pytest.mark.slow

OFFSET = 2000


async def topic_partitions(bootstrap: str, topic: str) -> set[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        return consumer.partitions_for_topic(topic) or set()
    finally:
        await consumer.stop()


def test_payloop_dev_is_ready_within_60s_and_ctrl_c_leaves_nothing_behind(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith("PAYLOOP_") or k == "PAYLOOP_JWT_SECRET"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "payloop"), "dev", "--root", str(tmp_path / "state"),
         "--port-offset", str(OFFSET)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    def read() -> None:
        for line in proc.stdout:
            output.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    descendants: set[int] = set()
    try:
        pending = {s.name: f"http://127.0.0.1:{s.port + OFFSET}/readyz" for s in SERVICES}
        with httpx.Client(timeout=1) as client:
            while pending and time.monotonic() - started < 60:
                assert proc.poll() is None, "".join(output)
                for name, url in list(pending.items()):
                    try:
                        if client.get(url).status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                descendants |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
                time.sleep(0.2)
        assert not pending, f"not ready within 60 s: {sorted(pending)}\n{''.join(output)}"
        # On the embedded broker the topics have one partition each (decision 0009).
        assert asyncio.run(topic_partitions(f"127.0.0.1:{9092 + OFFSET}", "invoice.created")) == {0}
        # The demo tenant was seeded through the tenants API and reached another service by Kafka.
        token = subprocess.run([str(Path(sys.executable).parent / "payloop"), "token", "--tenant", "demo-msp",
                                "--scopes", "ar:read"], env=env, capture_output=True, text=True,
                               check=True).stdout.strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{8105 + OFFSET}/v1/tenant-profile",
                                     headers={"Authorization": f"Bearer {token}"})
            except httpx.ConnectError:
                raise AssertionError("reporting went away after it was ready; payloop dev said:\n"
                                     + "".join(output)) from None
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert response.status_code == 200 and response.json()["name"] == "Demo MSP"

        # The living demo: within a minute of being up, manual payers' reminders are in the SMTP
        # sink, and the checkout link in one of them opens the payer's page at payments.
        deadline = time.monotonic() + 60
        while True:
            sent = httpx.get(f"http://127.0.0.1:{8220 + OFFSET}/messages").json()["messages"]
            links = [m for message in sent for m in re.findall(r"http://\S+/checkout/[A-Za-z0-9_.=-]+",
                                                               message.get("text") or "")]
            if links or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert links, f"no reminder with a checkout link reached the SMTP sink: {sent[:2]}"
        page = httpx.get(links[0], timeout=10)
        assert page.status_code == 200 and "Demo MSP" in page.text, (links[0], page.status_code)

        # The drifting late payer, dated by ConnectWise's own payment dates, is the one drift alert.
        deadline = time.monotonic() + 60
        while True:
            alerts = httpx.get(f"http://127.0.0.1:{8105 + OFFSET}/v1/drift",
                               headers={"Authorization": f"Bearer {token}"}).json()["alerts"]
            if alerts or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert [a["name"] for a in alerts] == ["Keystone Logistics LLC"], alerts

        # The second MSP (HaloPSA and Xero): its auto-pay charges settle and are posted to Xero.
        xero_token = subprocess.run([str(Path(sys.executable).parent / "payloop"), "token", "--tenant",
                                     "demo-msp-xero", "--scopes", "ar:read"], env=env, capture_output=True,
                                    text=True, check=True).stdout.strip()
        deadline = time.monotonic() + 90
        while True:
            posted = httpx.get(f"http://127.0.0.1:{8104 + OFFSET}/v1/gl/entries", params={"state": "posted"},
                               headers={"Authorization": f"Bearer {xero_token}"}).json()["items"]
            if posted or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert posted and {e["system"] for e in posted} == {"xero"}, "".join(output[-20:])

        # Stripe's first payout of the demo MSP's settled charges becomes a deposit in QuickBooks.
        deadline = time.monotonic() + 90
        while True:
            deposits = [e for e in httpx.get(f"http://127.0.0.1:{8104 + OFFSET}/v1/gl/entries",
                                             params={"state": "posted"},
                                             headers={"Authorization": f"Bearer {token}"}).json()["items"]
                        if e["purpose"] == "deposit"]
            if deposits or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert deposits and deposits[0]["system"] == "quickbooks", "".join(output[-30:])
        descendants |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert len(descendants) >= 8  # six services, PostgreSQL, broker, localstripe
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        proc.wait(timeout=60)
        reader.join(timeout=10)
    text = "".join(output)
    assert proc.returncode == 0, text
    assert "stopped" in text
    time.sleep(0.5)
    alive = [pid for pid in descendants if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left behind: {[psutil.Process(p).cmdline() for p in alive]}"
