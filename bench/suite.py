"""`payloop bench`: the whole benchmark on the embedded stack; prints a table and writes bench/results/.

    .venv/bin/python bench/suite.py [--quick] [--only PART ...] [--keep]

Parts, in the order they run (docs/benchmarks.md says what each measures and how):
  raw        the machine's raw limits: aiokafka produce, consume and hop latency; asyncpg batch inserts
  freshness  the same as hop at 20 events/s: reporting's freshness (issue 7) when consumers keep up
  hop        event hop latency at a steady 500 events/s, outbox commit to consumer commit, and
             reporting's freshness
  autopay    10,000 due auto-pay charges against the Stripe simulator limited to Stripe's 100 requests/s
  ingestion  invoices/s from ConnectWise pages to rows in reporting (10 tenants x 10,000 invoices)
  aging      /v1/aging p50/p99 at 1,000,000 invoices
Peak RSS of each service process is read after the parts that run the platform.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PAYLOOP_ENV", "dev")  # HS256 dev tokens, as `payloop dev`

from payloop.embedded import EMBEDDED_TOPIC_PARTITIONS  # noqa: E402
from payloop_payments.settings import PaymentsSettings  # noqa: E402
from results import Figure, Run  # noqa: E402
from stack import Stack, host_load  # noqa: E402

# Ingestion runs after the others on the platform: its backlog in the slower consumers would distort them.
PARTS = ("raw", "freshness", "hop", "autopay", "ingestion", "aging")
PLATFORM_PARTS = ("freshness", "hop", "autopay", "ingestion")
RSS_TARGET_MIB = 250
LATENCY_TARGET_MS = 50
FRESHNESS_TARGET_MS = 1000
STRIPE_RATE_LIMIT = 100


@dataclass(frozen=True)
class Sizes:
    raw_events: int = 100_000
    raw_rows: int = 100_000
    raw_hop_seconds: float = 20
    tenants: int = 10
    companies: int = 100
    invoices_per_tenant: int = 10_000
    freshness_rate: int = 20  # a busy MSP's pace, well within what the consumers sustain
    freshness_seconds: float = 30
    hop_rate: int = 500
    hop_seconds: float = 30
    autopay_charges: int = 10_000
    autopay_raw_charges: int = 1_000  # charges of the sandbox-alone raw limit
    aging_invoices: int = 1_000_000
    aging_tenants: int = 100
    aging_requests: int = 2000
    drain_timeout_s: float = 300  # longest wait for every consumer to apply a part's events
    autopay_timeout_s: float = 600  # longest auto-pay run measured (the charges done by then count)
    ingestion_timeout_s: float = 1200  # longest ingestion measured (the invoices visible by then count)


QUICK = Sizes(raw_events=20_000, raw_rows=20_000, raw_hop_seconds=5, tenants=2, companies=20,
              invoices_per_tenant=500, freshness_seconds=10, hop_seconds=5, autopay_charges=100,
              autopay_raw_charges=100, aging_invoices=50_000,
              aging_tenants=10, aging_requests=300, drain_timeout_s=60, autopay_timeout_s=60,
              ingestion_timeout_s=120)


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_raw(run: Run, sizes: Sizes, stack: Stack) -> dict:
    import raw_limits
    step("raw limits: the broker and PostgreSQL alone")
    from payloop.migrations import ensure_database
    asyncio.run(ensure_database(stack.database_url("raw")))
    database = asyncio.run(raw_limits.postgres_inserts(stack.dsn("raw"), sizes.raw_rows))
    print(f"  asyncpg executemany: {database['inserts_per_s']:,.0f} rows/s", flush=True)
    broker = asyncio.run(raw_limits.broker_throughput(sizes.raw_events))
    print(f"  aiokafka: produce {broker['produce_per_s']:,.0f}/s, consume {broker['consume_per_s']:,.0f}/s",
          flush=True)
    hop = asyncio.run(raw_limits.broker_hop_latency(sizes.hop_rate, sizes.raw_hop_seconds))
    print(f"  aiokafka hop at {sizes.hop_rate}/s: p50 {hop['p50_ms']:.1f} ms, p99 {hop['p99_ms']:.1f} ms "
          f"(fetch_max_wait_ms={hop['fetch_max_wait_ms']})", flush=True)
    raw = {"postgres": database, "broker": broker, "broker_hop": hop,
           "pipeline_limit_per_s": min(database["inserts_per_s"], broker["produce_per_s"], broker["consume_per_s"])}
    run.details["raw"] = raw
    run.add(Figure("raw.broker_produce", "raw: aiokafka produce (batched, acks=all)", broker["produce_per_s"],
                   "events/s"))
    run.add(Figure("raw.broker_consume", "raw: aiokafka consume", broker["consume_per_s"], "events/s"))
    run.add(Figure("raw.postgres_insert", "raw: asyncpg executemany (1,000 a transaction)",
                   database["inserts_per_s"], "rows/s"))
    run.add(Figure("raw.broker_hop_p99", f"raw: aiokafka hop p99 at {sizes.hop_rate}/s", hop["p99_ms"], "ms"))
    return raw


async def run_ingestion(run: Run, sizes: Sizes, stack: Stack, raw: dict | None, drain_timeout_s: float) -> None:
    import ingestion
    step(f"ingestion: {sizes.tenants} tenants x {sizes.invoices_per_tenant:,} invoices "
         f"({sizes.tenants * sizes.companies:,} clients)")
    result = await ingestion.run(stack, tenants=sizes.tenants, companies=sizes.companies,
                                 invoices=sizes.invoices_per_tenant, timeout_s=sizes.ingestion_timeout_s,
                                 drain_timeout_s=drain_timeout_s)
    run.details["ingestion"] = result
    print(f"  {result['visible']:,} of {result['invoices']:,} invoices visible in reporting after "
          f"{result['seconds']:.1f}s", flush=True)
    limit = raw["pipeline_limit_per_s"] if raw else None
    ratio_ok = None if limit is None else result["invoices_per_s"] / limit >= 0.25
    run.add(Figure("ingestion.invoices_per_s", "(i) ingestion, PSA pages -> reporting rows",
                   result["invoices_per_s"], "invoices/s", raw=limit, raw_label="slowest raw stage",
                   target=">= 0.25 of raw", met=ratio_ok,
                   note="" if result["complete"] else f"cut at {result['seconds'] / 60:.0f} min: "
                   f"{result['visible']:,} of {result['invoices']:,} visible"))
    fresh = result["freshness_under_load"]
    if fresh.get("count"):
        run.add(Figure("ingestion.freshness_p99", "    reporting freshness p99 during ingestion", fresh["p99_ms"],
                       "ms"))
    late = [s for s, at in result["consumers_caught_up_s"].items() if at is None]
    for service, at in result["consumers_caught_up_s"].items():
        print(f"  {service:12} " + (f"had applied every invoice {at:.0f}s later" if at is not None
                                    else "had not applied every invoice in time"), flush=True)
    if late and drain_timeout_s:  # a platform part follows, and meets this backlog
        run.skipped["drain"] = f"{', '.join(late)} still behind after ingestion: later parts ran with that backlog"


async def run_hop(run: Run, stack: Stack, raw: dict | None, *, part: str, rate: int, seconds: float,
                  drain_timeout_s: float) -> None:
    """`invoice.created` at a steady rate: hop latency to the five consumers, and reporting's freshness."""
    import hop_latency
    step(f"{part}: invoice.created at a steady {rate}/s for {seconds:.0f}s")
    result = await hop_latency.run(stack, rate=rate, seconds=seconds, drain_timeout_s=drain_timeout_s)
    run.details[part] = result
    relay = result["relay"]
    if relay.get("count"):
        print(f"  psa_ingest's relay picked events up after p50 {relay['p50_ms']:.1f} ms, p99 {relay['p99_ms']:.1f} ms"
              " (outbox commit -> relay transaction)", flush=True)
    for service, figures in result["consumers"].items():
        if figures.get("count"):
            print(f"  -> {service:12} p50 {figures['p50_ms']:9.1f} ms  p99 {figures['p99_ms']:9.1f} ms"
                  + (f"  ({figures['pending']:,} not applied: lower bounds)" if figures["pending"] else ""),
                  flush=True)
    raw_hop = raw["broker_hop"] if raw else None
    pooled = result["all_consumers"]
    if pooled.get("count"):
        note = _pending_note(pooled)
        run.add(Figure(f"{part}.p50", f"(ii) hop latency p50 at {rate}/s (5 consumers)", pooled["p50_ms"],
                       "ms", raw=raw_hop and raw_hop["p50_ms"], raw_label="aiokafka hop p50", note=note))
        run.add(Figure(f"{part}.p99", f"(ii) hop latency p99 at {rate}/s (5 consumers)", pooled["p99_ms"],
                       "ms", raw=raw_hop and raw_hop["p99_ms"], raw_label="aiokafka hop p99",
                       target=f"< {LATENCY_TARGET_MS} ms", met=pooled["p99_ms"] < LATENCY_TARGET_MS, note=note))
    fresh = result["consumers"].get("reporting", {})
    if fresh.get("count"):
        note = _pending_note(fresh)
        run.add(Figure(f"{part}.reporting_p50", f"reporting freshness p50 at {rate}/s (outbox -> read model)",
                       fresh["p50_ms"], "ms", raw=raw_hop and raw_hop["p50_ms"], raw_label="aiokafka hop p50",
                       note=note))
        run.add(Figure(f"{part}.reporting_p99", f"reporting freshness p99 at {rate}/s (outbox -> read model)",
                       fresh["p99_ms"], "ms", raw=raw_hop and raw_hop["p99_ms"], raw_label="aiokafka hop p99",
                       target=f"< {FRESHNESS_TARGET_MS} ms", met=fresh["p99_ms"] < FRESHNESS_TARGET_MS, note=note))


def _pending_note(figures: dict) -> str:
    return f"lower bound: {figures['pending']:,} not applied in time" if figures.get("pending") else ""


async def run_autopay(run: Run, sizes: Sizes, stack: Stack, stripe) -> None:
    import autopay
    step(f"auto-pay: {sizes.autopay_charges:,} due charges, Stripe limited to {STRIPE_RATE_LIMIT} requests/s")
    alone = await autopay.sandbox_alone(stripe, charges=sizes.autopay_raw_charges)
    print(f"  raw: the Stripe sandbox alone answers {alone['charges_per_s']:.1f} charges/s (as our charges ask, "
          f"{alone['concurrency']} at once)", flush=True)
    result = await autopay.run(stack, stripe, charges=sizes.autopay_charges,
                               drain_timeout_s=sizes.drain_timeout_s, timeout_s=sizes.autopay_timeout_s)
    result["sandbox_alone"] = alone
    print(f"  {result['charged']:,} charged in {result['seconds']:.1f}s: {result['charges_per_s']:.1f}/s; Stripe "
          f"answered {result['stripe_requests_per_s']:.1f} requests/s ({result['stripe_requests_per_charge']:.2f} a "
          f"charge) and refused {result['stripe_refused_429']:,} with 429", flush=True)
    run.details["autopay"] = result
    per_charge = result["stripe_requests_per_charge"]
    run.add(Figure("autopay.charges_per_s", "(iii) auto-pay charges dispatched, whole run", result["charges_per_s"],
                   "charges/s", raw=STRIPE_RATE_LIMIT / per_charge,
                   raw_label=f"{STRIPE_RATE_LIMIT} req/s / {per_charge:.2f} req a charge",
                   note="" if result["complete"] else f"only {result['charged']:,} of {result['charges']:,} in time"))
    if result["charges_per_s_middle_80"] is not None:
        # Payments paces its Stripe requests under Stripe's limit (a margin, so Stripe need not refuse any):
        # a steady rate at that pace is a run bounded by the processor's limit, not by our code.
        pace = PaymentsSettings.model_fields["stripe_max_requests_per_s"].default
        steady = result["charges_per_s_middle_80"]
        run.add(Figure("autopay.charges_per_s_middle_80", "(iii) auto-pay steady rate (middle 80% of the charges)",
                       steady, "charges/s", raw=pace / per_charge,
                       raw_label=f"our pace under Stripe's {STRIPE_RATE_LIMIT}: {pace:g} req/s / {per_charge:.2f}",
                       target="bounded by the processor (>= 0.95 of the pace)", met=steady * per_charge / pace >= 0.95))
    # On a small machine the simulator itself (Python, on the same cores) can be slower than Stripe's limit.
    limit = min(STRIPE_RATE_LIMIT / result["stripe_requests_per_charge"], alone["charges_per_s"])
    run.add(Figure("autopay.charges_per_s_of_sandbox", "(iii) auto-pay charges, against the sandbox alone",
                   result["charges_per_s"], "charges/s", raw=limit,
                   raw_label="the slower of Stripe's limit and the sandbox alone"))
    run.add(Figure("autopay.dispatch_p99", "(iii) auto-pay dispatch p99 (payment row -> outcome recorded)",
                   result["dispatch_p99_ms"], "ms"))
    run.add(Figure("autopay.waited_p99", "(iii) auto-pay p99 from enrolment to outcome recorded",
                   result["enrolled_to_outcome_p99_ms"], "ms"))


def run_aging(run: Run, sizes: Sizes, stack: Stack) -> None:
    import aging
    step(f"aging: {sizes.aging_invoices:,} invoices over {sizes.aging_tenants} tenants")
    result = aging.run(stack.postgres, stack.broker.bootstrap, invoices=sizes.aging_invoices,
                       tenants=sizes.aging_tenants, requests=sizes.aging_requests, logs=stack.root)
    run.details["aging"] = result
    roll_up = result["cases"]["GET /v1/aging"]
    for name, case in result["cases"].items():
        print(f"  {name:<52} p50 {case['p50_ms']:6.2f} ms  p99 {case['p99_ms']:6.2f} ms", flush=True)
    run.add(Figure("aging.p50", f"(iv) GET /v1/aging p50 at {sizes.aging_invoices:,} invoices", roll_up["p50_ms"],
                   "ms"))
    run.add(Figure("aging.p99", f"(iv) GET /v1/aging p99 at {sizes.aging_invoices:,} invoices", roll_up["p99_ms"],
                   "ms", target=f"< {LATENCY_TARGET_MS} ms", met=roll_up["p99_ms"] < LATENCY_TARGET_MS))


async def platform_parts(run: Run, sizes: Sizes, stack: Stack, raw: dict | None, parts: list[str]) -> None:
    """The parts that need the six services, on one event loop (the Stripe sandbox serves from it)."""
    stripe = None
    try:
        if "autopay" in parts:
            import autopay
            stripe = await autopay.Stripe(stack.root, STRIPE_RATE_LIMIT).start()
            stack.extra_env.update(stripe.env())
        step("starting the six services as processes (as `payloop dev` does)")
        await asyncio.to_thread(stack.start_services)
        on_platform = [p for p in parts if p in PLATFORM_PARTS]
        for part in on_platform:
            if part == "freshness":
                await run_hop(run, stack, raw, part=part, rate=sizes.freshness_rate, seconds=sizes.freshness_seconds,
                              drain_timeout_s=sizes.drain_timeout_s)
            elif part == "hop":
                await run_hop(run, stack, raw, part=part, rate=sizes.hop_rate, seconds=sizes.hop_seconds,
                              drain_timeout_s=sizes.drain_timeout_s)
            elif part == "autopay":
                await run_autopay(run, sizes, stack, stripe)
            elif part == "ingestion":  # last: its backlog only needs draining if a part follows
                await run_ingestion(run, sizes, stack, raw, sizes.drain_timeout_s if part != on_platform[-1] else 0)
        record_rss(run, stack)
        run.host["after_platform"] = host_load()
        await asyncio.to_thread(stack.platform.stop)
        stack.platform = None
    finally:
        if stripe is not None:
            await stripe.stop()


def record_rss(run: Run, stack: Stack) -> None:
    rss = stack.peak_rss()
    run.details["peak_rss_mib"] = rss
    for service, mib in rss.items():
        if mib is not None:
            run.add(Figure(f"rss.{service}", f"(v) peak RSS {service}", mib, "MiB",
                           target=f"< {RSS_TARGET_MIB} MB", met=mib * 1.048576 < RSS_TARGET_MIB))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about two minutes) instead of the "
                        "issue's (100,000 invoices, 10,000 charges, 1,000,000 invoices for aging)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where the JSON goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    parts = [p for p in PARTS if p in args.only]
    run = Run(sizes={**sizes.__dict__, "quick": args.quick, "parts": parts})
    run.host = {"at_start": host_load()}
    started = time.perf_counter()
    stack = Stack()
    print(f"payloop bench ({'quick' if args.quick else 'full'} sizes): {', '.join(parts)}; "
          f"load average {run.host['at_start']['load_1m']:.2f} on {run.host['at_start']['cpus']} CPUs", flush=True)
    try:
        step("starting PostgreSQL and the broker")
        stack.start_infrastructure()
        os.environ["PAYLOOP_KAFKA_BOOTSTRAP"] = stack.broker.bootstrap
        # As `payloop dev` has it on the embedded broker (the services inherit this environment).
        os.environ.setdefault("PAYLOOP_TOPIC_PARTITIONS", str(EMBEDDED_TOPIC_PARTITIONS))
        from payloop.settings import platform_settings
        platform_settings.cache_clear()
        run.details["settings"] = {"consumer_fetch_max_wait_ms": platform_settings().consumer_fetch_max_wait_ms,
                                   "topic_partitions": platform_settings().topic_partitions}
        raw = run_raw(run, sizes, stack) if "raw" in parts else None
        if set(PLATFORM_PARTS) & set(parts):
            asyncio.run(platform_parts(run, sizes, stack, raw, parts))
        if "aging" in parts:
            run_aging(run, sizes, stack)
    finally:
        stack.stop(keep=args.keep)
    run.host["at_end"] = host_load()
    run.details["seconds"] = time.perf_counter() - started
    # Only a full run of every part is <date>.json: a partial or quick run does not replace it.
    suffix = ("-quick" if args.quick else "") + ("" if parts == list(PARTS) else "-" + "-".join(parts))
    path = run.write(args.results, suffix=suffix)
    print(f"\n{run.table()}\n\nload average 1 min: {run.host['at_start']['load_1m']:.2f} at start, "
          f"{run.host['at_end']['load_1m']:.2f} at end ({run.host['at_start']['cpus']} CPUs); "
          f"{run.details['seconds']:.0f}s in all\nwritten to {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
