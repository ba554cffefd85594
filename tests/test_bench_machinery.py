"""The benchmark's own machinery, on tiny inputs and without timing anything: the figures' ratios,
the table and the results file of `bench/results.py`, the CLI's part checking, and the generated
ConnectWise book the ingestion benchmark syncs. (`payloop bench --quick` runs the measurements.)"""
from __future__ import annotations

import json
import sys
from argparse import Namespace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from payloop.cli import bench as bench_cli
from payloop.cli.errors import CliError
from payloop.simulators.connectwise import API_ROOT, CLIENT_ID, COMPANY_ID, PRIVATE_KEY, PUBLIC_KEY, ConnectWiseSimulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from results import Figure, Run, middle_rate, percentile  # noqa: E402


def test_percentile_is_nearest_rank():
    samples = [float(n) for n in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile([7.0], 99) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_middle_rate_leaves_out_a_slow_start_and_a_slow_end():
    # A run whose first and last tenth crawl: 10 events in 10 s each side, 80 in 8 s between.
    start = [float(n) for n in range(10)]
    steady = [10 + n * 0.1 for n in range(80)]
    end = [18 + n for n in range(1, 11)]
    assert middle_rate(end + steady + start) == pytest.approx(79 / 7.9)
    assert middle_rate(start + steady + end, share=1.0) == pytest.approx(99 / 28)
    with pytest.raises(ValueError):
        middle_rate([5.0] * 10)


def test_ratios_table_and_results_file(tmp_path):
    run = Run(sizes={"invoices": 10}, started_at="2026-11-24T18:00:00+00:00")
    throughput = run.add(Figure("ingestion", "ingestion", 1_000.0, "invoices/s", raw=40_000.0, raw_label="raw",
                                target=">= 0.25 of raw", met=False))
    latency = run.add(Figure("hop.p99", "hop p99", 60.0, "ms", raw=12.0, target="< 50 ms", met=False,
                             note="lower bound: 3 not applied in time"))
    plain = run.add(Figure("rss.tenants", "peak RSS tenants", 120.0, "MiB", target="< 250 MB", met=True))
    assert throughput.ratio == 0.025
    assert latency.ratio == 5.0
    assert plain.ratio is None

    table = run.table().splitlines()
    assert table[0].split() == ["figure", "value", "raw", "limit", "(same", "run)", "ratio", "target", "note"]
    assert "0.025" in table[2] and "NOT met" in table[2] and "40,000 invoices/s (raw)" in table[2]
    assert "5.00" in table[3] and "lower bound: 3 not applied in time" in table[3]
    assert table[4].rstrip().endswith("< 250 MB met")

    path = run.write(tmp_path, suffix="-quick")
    assert path == tmp_path / "2026-11-24-quick.json"
    written = json.loads(path.read_text())
    assert written["sizes"] == {"invoices": 10}
    assert [(f["key"], f["ratio"]) for f in written["figures"]] == [
        ("ingestion", 0.025), ("hop.p99", 5.0), ("rss.tenants", None)]


def test_cli_refuses_unknown_parts_and_a_missing_suite(tmp_path):
    with pytest.raises(CliError, match="no benchmark"):
        bench_cli.bench(Namespace(root=str(tmp_path), parts=[], quick=True, keep=False))
    with pytest.raises(CliError, match="unknown part"):
        bench_cli.bench(Namespace(root=str(Path(__file__).resolve().parents[1]), parts=["warp"], quick=True,
                                  keep=False))


async def test_generated_connectwise_book_pages_and_adds_up():
    sim = ConnectWiseSimulator(companies=7, invoices=120)
    assert ConnectWiseSimulator().state.invoices.keys() != sim.state.invoices.keys()  # the default is the demo
    state = sim.state
    assert len(state.companies) == 7 and len(state.agreements) == 7 and len(state.invoices) == 120
    per_company = {cid: 0 for cid in state.companies}
    for invoice in state.invoices.values():
        per_company[invoice["company"]["id"]] += 1
        lines = [p for p in state.products.values() if p["invoice"]["id"] == invoice["id"]]
        total = sum(Decimal(str(p["quantity"])) * Decimal(str(p["price"])) for p in lines)
        assert Decimal(str(invoice["total"])) == total
        paid = invoice["status"]["name"] == "Paid"
        assert Decimal(str(invoice["balance"])) == (0 if paid else total)
    assert sorted(per_company.values()) == [17, 17, 17, 17, 17, 17, 18]

    transport = httpx.ASGITransport(app=sim.app)
    auth = httpx.BasicAuth(f"{COMPANY_ID}+{PUBLIC_KEY}", PRIVATE_KEY)
    async with httpx.AsyncClient(transport=transport, base_url="http://cw" + API_ROOT, auth=auth,
                                 headers={"clientId": CLIENT_ID}) as client:
        first = await client.get("/finance/invoices", params={"pageSize": 100, "page": 1})
        second = await client.get("/finance/invoices", params={"pageSize": 100, "page": 2})
        assert len(first.json()) == 100 and len(second.json()) == 20
        assert 'rel="next"' in first.headers["link"]
        ids = [i["id"] for i in first.json()[:3]]
        lines = await client.get("/procurement/products", params={
            "pageSize": 1000, "conditions": f"invoice/id in ({','.join(map(str, ids))})"})
        assert {p["invoice"]["id"] for p in lines.json()} == set(ids)
