"""`payloop`: one entry point for developers and operators (DESIGN.md section 4)."""
from __future__ import annotations

import argparse
import asyncio
import sys

from payloop.cli import backbone_commands, bench, dev
from payloop.cli.errors import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payloop", description="Payloop developer and operator tool")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("dev", help="run the whole platform locally (embedded PostgreSQL, Tansu, localstripe)")
    p.add_argument("--root", default=".payloop", help="state directory (default .payloop/)")
    p.add_argument("--port-offset", type=int, default=0,
                   help="add N to every port (services 8100+N.., broker 9092+N, PostgreSQL 54329+N)")
    p.add_argument("--no-seed", action="store_true", help="do not create the demo tenant")
    p.add_argument("--speed", type=float, default=1.0,
                   help="run the simulated calendar N times faster (the collections and payments clocks and the "
                        "Stripe sandbox's banking days), e.g. 2880: a month in 15 min")
    p.set_defaults(func=dev.run_dev)

    p = sub.add_parser("token", help="mint a dev JWT (HS256, PAYLOOP_JWT_SECRET)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--scopes", default="admin", help="comma-separated, e.g. ar:read,payments:write")
    p.add_argument("--ttl-hours", type=float, default=12)
    p.set_defaults(func=backbone_commands.token)

    p = sub.add_parser("migrate", help="upgrade service databases to the newest schema")
    p.add_argument("services", nargs="*", help="default: all six")
    p.add_argument("--create-database", action="store_true", help="create missing databases")
    p.set_defaults(func=backbone_commands.migrate)

    p = sub.add_parser("topics", help="list topics; --create makes the catalogue's topics")
    p.add_argument("--create", action="store_true")
    p.set_defaults(func=backbone_commands.topics)

    events = sub.add_parser("events", help="read topics; render the event catalogue")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    p = events_sub.add_parser("tail", help="print a topic's events as JSON lines")
    p.add_argument("topic")
    p.add_argument("-n", "--lines", type=int, default=20, help="how many of the latest events to print")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--tenant", help="only this tenant's events")
    p.set_defaults(func=backbone_commands.events_tail)
    p = events_sub.add_parser("schema", help="render docs/events (AsyncAPI + JSON Schemas) from the catalogue")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    p.add_argument("--root", default=".", help="repository root")
    p.set_defaults(func=backbone_commands.events_schema)

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    p = dlq_sub.add_parser("list", help="dead-letter topics, how many letters each holds and how many wait for a replay")
    p.set_defaults(func=backbone_commands.dlq_list)
    p = dlq_sub.add_parser("show", help="the dead letters of one topic, with their errors")
    p.add_argument("topic", help="e.g. invoice.created.dlq.payments")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=backbone_commands.dlq_show)
    p = dlq_sub.add_parser("replay", help="re-publish pending dead letters (or the named ones) to their original topic")
    p.add_argument("topic")
    p.add_argument("--event-id", action="append", default=[], help="only these events (repeatable)")
    p.set_defaults(func=backbone_commands.dlq_replay)

    p = sub.add_parser("sync", help="run a PSA sync now for a tenant's connections (through psa_ingest)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--connection", action="append", default=[], help="only these connection ids")
    p.add_argument("--full", action="store_true", help="re-read everything, not only what changed")
    p.add_argument("--url", help="psa_ingest base URL (default http://127.0.0.1:8101)")
    p.set_defaults(func=backbone_commands.sync)

    p = sub.add_parser("bench", help="measure the platform on the embedded stack, print a table, write "
                       "bench/results/<date>.json (docs/benchmarks.md)")
    p.add_argument("parts", nargs="*", help=f"only these of {', '.join(bench.PARTS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes, about two minutes")
    p.add_argument("--keep", action="store_true", help="keep the run's directory (logs, databases)")
    p.add_argument("--root", default=".", help="repository root")
    p.set_defaults(func=bench.bench)

    consumers = sub.add_parser("consumers", help="consumer groups")
    consumers_sub = consumers.add_subparsers(dest="consumers_command", required=True)
    p = consumers_sub.add_parser("lag", help="per group and partition: committed offset, high watermark, lag")
    p.add_argument("--group", action="append", default=[], help="only these groups")
    p.set_defaults(func=backbone_commands.consumers_lag)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except KeyboardInterrupt:
        result = 130
    except CliError as exc:
        print(f"payloop: {exc}", file=sys.stderr)
        result = 2
    sys.exit(result or 0)
