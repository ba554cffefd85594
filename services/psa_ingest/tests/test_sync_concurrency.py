"""One process runs at most `PAYLOOP_PSA_INGEST_MAX_CONCURRENT_SYNCS` syncs at once; the rest wait
their turn and still run, so a burst of sync requests cannot grow the process's memory without bound."""
import asyncio
from datetime import datetime

from payloop.testing.plugin import running_service
from payloop_psa_ingest.settings import psa_ingest_settings


async def test_syncs_beyond_the_limit_wait_their_turn_and_all_complete(infra, token, cw, psa, monkeypatch):
    monkeypatch.setenv("PAYLOOP_PSA_INGEST_MAX_CONCURRENT_SYNCS", "1")
    psa_ingest_settings.cache_clear()
    tenants = [f"{psa.TENANT}-gate-{n}" for n in range(3)]
    try:
        async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
            headers = {t: token(t, "psa:write", "ar:read") for t in tenants}
            connections = {t: await psa.connect(client, headers[t], cw) for t in tenants}
            answers = await asyncio.gather(*(
                client.post(f"/v1/psa/connections/{connections[t]}/sync", json={}, headers=headers[t])
                for t in tenants))
            runs = [a.json() for a in answers]
            assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
            assert [r["status"] for r in runs] == ["succeeded"] * 3
            assert all(r["counts"]["invoice.created"] > 400 for r in runs), runs
            windows = sorted((datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
                             for r in runs)
            for (_, finished), (started, _) in zip(windows, windows[1:]):
                assert started >= finished, f"two syncs overlapped: {windows}"
    finally:
        psa_ingest_settings.cache_clear()
