"""Dead letters on `{topic}.dlq.{group}`: the letters the consumer runtime writes, and replay markers.

A replay re-publishes the event to its original topic and then appends a marker record to the
dead-letter topic, with the letter's key (so the same partition, ordered after the letter). The topic
keeps its whole history, while the CLI and the reporting service can tell letters still waiting from
letters already replayed. If the replayed event fails again, a new letter follows the marker and the
event is waiting once more.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

REPLAYED_AT = "dlq-replayed-at"
# What a marker keeps from its letter, so a reader can place it without the letter at hand.
_MARKER_KEEPS = ("event-id", "tenant-id", "event-type", "dlq-consumer-group")


def headers_of(record) -> dict[str, str]:
    return {key: value.decode(errors="replace") for key, value in (record.headers or [])}


def is_replay_marker(headers: dict[str, str]) -> bool:
    return REPLAYED_AT in headers


def replay_marker_headers(letter_headers: dict[str, str], replayed_at: datetime) -> list[tuple[str, bytes]]:
    kept = [(name, letter_headers[name].encode()) for name in _MARKER_KEEPS if name in letter_headers]
    return kept + [(REPLAYED_AT, replayed_at.isoformat().encode())]


@dataclass
class Letter:
    record: object
    headers: dict[str, str]
    replayed_at: str | None = None

    @property
    def event_id(self) -> str | None:
        return self.headers.get("event-id")

    @property
    def pending(self) -> bool:
        return self.replayed_at is None


def letters(records) -> list[Letter]:
    """The letters of a dead-letter topic in order, each marked replayed when a marker follows it."""
    found: list[Letter] = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        headers = headers_of(record)
        if not is_replay_marker(headers):
            found.append(Letter(record, headers))
            continue
        for letter in found:
            if letter.event_id == headers.get("event-id") and letter.pending:
                letter.replayed_at = headers[REPLAYED_AT]
    return found
