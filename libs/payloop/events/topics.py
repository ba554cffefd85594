"""Topic names: one topic per event type, plus dead-letter topics per consumer group."""
from __future__ import annotations

from payloop.events.catalogue import CATALOGUE

DLQ_MARKER = ".dlq."


def domain_topics() -> list[str]:
    return CATALOGUE.types()


def dlq_topic(topic: str, group: str) -> str:
    return f"{topic}{DLQ_MARKER}{group}"


def is_dlq(topic: str) -> bool:
    return DLQ_MARKER in topic


def split_dlq(topic: str) -> tuple[str, str]:
    """`invoice.created.dlq.payments` -> (`invoice.created`, `payments`)."""
    original, _, group = topic.partition(DLQ_MARKER)
    return original, group
