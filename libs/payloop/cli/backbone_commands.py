"""CLI commands over the event backbone: tokens, migrations, topics, tailing, dead letters, lag."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from payloop.auth import KNOWN_SCOPES, mint_token
from payloop.cli.errors import CliError
from payloop.dead_letters import Letter, letters, replay_marker_headers
from payloop.events.topics import is_dlq, split_dlq
from payloop.kafka import ensure_topics, list_topics, make_consumer, make_producer
from payloop.services import SERVICES, service
from payloop.settings import platform_settings

DLQ_HEADER_PREFIX = "dlq-"


def token(args) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise CliError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}")
    print(mint_token(args.tenant, scopes, ttl=timedelta(hours=args.ttl_hours)))
    return 0


def migrate(args) -> int:
    names = args.services or [s.name for s in SERVICES]
    for name in names:
        spec = service(name)
        if not os.environ.get(spec.database_url_env):
            raise CliError(f"{spec.database_url_env} is not set (run inside `payloop dev`, or export it)")
        command = [sys.executable, "-m", spec.module, "migrate"]
        if args.create_database:
            command.append("--create-database")
        print(f"migrating {name} ...", flush=True)
        done = subprocess.run(command)
        if done.returncode != 0:
            raise CliError(f"migration of {name} failed (exit {done.returncode})")
    print(f"migrated {len(names)} database(s)")
    return 0


async def topics(args) -> int:
    await _require_broker()
    if args.create:
        created = await ensure_topics()
        print(f"created {len(created)} topic(s)" + (f": {', '.join(created)}" if created else ""))
    for topic in await list_topics():
        print(topic)
    return 0


async def events_tail(args) -> int:
    await _require_broker()
    consumer = await _assigned_consumer([args.topic])
    last: deque = deque(maxlen=max(args.lines, 0))
    try:
        caught_up = False
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            records = [r for rs in batches.values() for r in rs]
            records.sort(key=lambda r: r.timestamp)
            for record in records:
                line = _render(record)
                if args.tenant and line.get("tenant_id") != args.tenant:
                    continue
                if caught_up:
                    print(json.dumps(line), flush=True)
                else:
                    last.append(line)
            if not records and not caught_up:
                caught_up = True
                for line in last:
                    print(json.dumps(line), flush=True)
                if not args.follow:
                    return 0
    finally:
        await consumer.stop()


def events_schema(args) -> int:
    from payloop.events import schema_docs

    root = Path(args.root)
    if args.write:
        changed = schema_docs.write_documents(root)
        print(f"wrote {len(changed)} changed file(s)" + "".join(f"\n  {p}" for p in changed))
        return 0
    stale = schema_docs.check_documents(root)
    if stale:
        print("docs/events is out of date with the catalogue; run `make schemas`:", file=sys.stderr)
        for path in stale:
            print(f"  {path}", file=sys.stderr)
        return 1
    print("docs/events matches the catalogue")
    return 0


async def dlq_list(args) -> int:
    await _require_broker()
    dead = [t for t in await list_topics() if is_dlq(t)]
    if not dead:
        print("no dead-letter topics")
        return 0
    by_topic = await _letters_by_topic(dead)
    print(f"{'dead-letter topic':60} {'letters':>8} {'pending':>8}")
    for topic in dead:
        found = by_topic[topic]
        print(f"{topic:60} {len(found):>8} {sum(letter.pending for letter in found):>8}")
    return 0


async def dlq_show(args) -> int:
    await _require_broker()
    await _require_topic(args.topic)
    found = await _letters(args.topic)
    for letter in found[: args.limit]:
        headers, info = letter.headers, _render(letter.record)
        state = "pending" if letter.pending else f"replayed at {letter.replayed_at}"
        print(f"- event {info.get('id', '?')} ({info.get('type', '?')}, tenant {info.get('tenant_id', '?')}): {state}")
        print(f"  from {headers.get('dlq-original-topic')}[{headers.get('dlq-original-partition')}]"
              f"@{headers.get('dlq-original-offset')} group {headers.get('dlq-consumer-group')}"
              f" after {headers.get('dlq-attempts')} attempt(s) at {headers.get('dlq-failed-at')}")
        print(f"  error: {headers.get('dlq-error')}")
    pending = sum(letter.pending for letter in found)
    print(f"{len(found)} dead letter(s) in {args.topic}, {pending} pending")
    return 0


async def dlq_replay(args) -> int:
    """Re-publish to the original topic, then mark each letter replayed on its dead-letter topic.

    Without --event-id only pending letters are replayed; named events are replayed even if they were
    before. Groups that applied an event already skip it by their inbox, so replaying twice is harmless.
    """
    await _require_broker()
    await _require_topic(args.topic)
    if not is_dlq(args.topic):
        raise CliError(f"{args.topic} is not a dead-letter topic (expected TOPIC.dlq.GROUP)")
    original, group = split_dlq(args.topic)
    wanted = set(args.event_id)
    producer = make_producer()
    await producer.start()
    replayed, seen = 0, set()
    try:
        for letter in await _letters(args.topic):
            event_id = _render(letter.record).get("id")
            if (wanted and event_id not in wanted) or (not wanted and not letter.pending) or event_id in seen:
                continue
            seen.add(event_id)
            record = letter.record
            headers = [(k, v) for k, v in (record.headers or []) if not k.startswith(DLQ_HEADER_PREFIX)]
            headers.append(("payloop-replayed-for", group.encode()))
            await producer.send_and_wait(original, value=record.value, key=record.key, headers=headers)
            await producer.send_and_wait(args.topic, value=b"", key=record.key,
                                         headers=replay_marker_headers(letter.headers, datetime.now(UTC)))
            replayed += 1
            print(f"replayed {event_id} -> {original}", flush=True)
    finally:
        await producer.stop()
    missing = wanted - seen
    if missing:
        raise CliError(f"not found in {args.topic}: {', '.join(sorted(missing))}")
    print(f"replayed {replayed} event(s) to {original}")
    return 0


async def consumers_lag(args) -> int:
    await _require_broker()
    settings = platform_settings()
    groups = args.group or [s.name for s in SERVICES]
    topics_all = [t for t in await list_topics() if not is_dlq(t)]
    probe = await _assigned_consumer(topics_all)
    try:
        await _fetch_until_idle(probe)  # learn each partition's high watermark
        high = {tp: probe.highwater(tp) or 0 for tp in probe.assignment()}
    finally:
        await probe.stop()
    print(f"{'group':14} {'topic':28} {'part':>4} {'committed':>10} {'high':>10} {'lag':>8}")
    total = 0
    for group in groups:
        member = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                  enable_auto_commit=False)
        await member.start()
        try:
            for tp in sorted(high, key=lambda t: (t.topic, t.partition)):
                committed = await asyncio.wait_for(member.committed(tp), 10)
                if committed is None:
                    continue
                lag = max(high[tp] - committed, 0)
                total += lag
                print(f"{group:14} {tp.topic:28} {tp.partition:>4} {committed:>10} {high[tp]:>10} {lag:>8}")
        finally:
            await member.stop()
    print(f"total lag: {total}")
    return 0


# --- helpers --------------------------------------------------------------------------------------

async def _require_broker() -> None:
    bootstrap = platform_settings().kafka_bootstrap
    try:
        await asyncio.wait_for(list_topics(), 10)
    except (KafkaConnectionError, OSError, asyncio.TimeoutError) as exc:
        raise CliError(f"cannot reach the broker at {bootstrap} (PAYLOOP_KAFKA_BOOTSTRAP): {exc!r}") from None


async def _require_topic(topic: str) -> None:
    if topic not in await list_topics():
        raise CliError(f"no topic {topic!r}; `payloop dlq list` shows the dead-letter topics")


async def _assigned_consumer(topic_names: list[str]) -> AIOKafkaConsumer:
    """A group-less consumer assigned every partition from the start (no group join to wait for)."""
    consumer = make_consumer(group_id=None)
    await consumer.start()
    partitions = []
    for topic in topic_names:
        for partition in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic):
            partitions.append(TopicPartition(topic, partition))
    consumer.assign(partitions)
    if partitions:
        await consumer.seek_to_beginning(*partitions)
    return consumer


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer._client.cluster.partitions_for_topic(topic) or set()


async def _fetch_until_idle(consumer: AIOKafkaConsumer) -> list:
    records = []
    while True:
        batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
        if not batches:
            return records
        for rs in batches.values():
            records.extend(rs)


async def _letters_by_topic(topic_names: list[str]) -> dict[str, list[Letter]]:
    records: dict[str, list] = {t: [] for t in topic_names}
    consumer = await _assigned_consumer(topic_names)
    try:
        for record in await _fetch_until_idle(consumer):
            records[record.topic].append(record)
    finally:
        await consumer.stop()
    return {topic: letters(found) for topic, found in records.items()}


async def _letters(topic: str) -> list[Letter]:
    return (await _letters_by_topic([topic]))[topic]


def _render(record) -> dict:
    try:
        body = json.loads(record.value)
    except (ValueError, TypeError):
        return {"raw": (record.value or b"")[:200].decode(errors="replace"), "offset": record.offset}
    return body if isinstance(body, dict) else {"raw": body}


def sync(args) -> int:
    """Run a PSA sync now, through the psa_ingest API (`POST /v1/psa/connections/{id}/sync`)."""
    import httpx

    base = args.url or f"http://127.0.0.1:{service('psa_ingest').port}"
    headers = {"Authorization": f"Bearer {mint_token(args.tenant, ['psa:write', 'ar:read'])}"}
    with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
        try:
            connections = client.get("/v1/psa/connections")
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach psa_ingest at {base}: {exc}") from None
        if connections.status_code != 200:
            raise CliError(f"listing connections failed: {connections.status_code} {connections.text[:300]}")
        ids = [c["id"] for c in connections.json().get("items", [])
               if not args.connection or c["id"] in args.connection]
        if not ids:
            raise CliError(f"tenant {args.tenant!r} has no PSA connection" +
                           (f" among {', '.join(args.connection)}" if args.connection else ""))
        failed = 0
        for connection_id in ids:
            print(f"syncing {connection_id} ...", flush=True)
            response = client.post(f"/v1/psa/connections/{connection_id}/sync", json={"full": args.full})
            if response.status_code != 200:
                raise CliError(f"sync of {connection_id} refused: {response.status_code} {response.text[:300]}")
            run = response.json()
            counts = ", ".join(f"{k} {v}" for k, v in sorted(run.get("counts", {}).items())) or "nothing new"
            print(f"  {run['status']}: {counts}" + (f"; error: {run['error']}" if run.get("error") else ""))
            failed += run["status"] != "succeeded"
    return 1 if failed else 0
