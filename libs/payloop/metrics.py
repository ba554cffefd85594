"""Prometheus metrics shared by every service (exposed at /metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_BACKLOG = Gauge("payloop_outbox_backlog", "Outbox events not yet acknowledged by the broker", ["service"])
OUTBOX_PUBLISHED = Counter("payloop_outbox_published_total", "Outbox events published", ["service"])
OUTBOX_PUBLISH_ERRORS = Counter("payloop_outbox_publish_errors_total", "Failed relay batches", ["service"])
CONSUMER_LAG = Gauge("payloop_consumer_lag", "Records behind the high watermark", ["group", "topic", "partition"])
HANDLER_LATENCY = Histogram(
    "payloop_handler_seconds", "Event handler latency", ["group", "event_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HANDLER_ERRORS = Counter("payloop_handler_errors_total", "Event handler failures", ["group", "event_type"])
EVENTS_APPLIED = Counter("payloop_events_applied_total", "Events applied", ["group", "event_type"])
EVENTS_DUPLICATE = Counter("payloop_events_duplicate_total", "Redelivered events skipped by the inbox", ["group"])
DEAD_LETTERS = Counter("payloop_dead_letters_total", "Events sent to a dead-letter topic", ["group", "topic"])
EXTERNAL_API_ERRORS = Counter(
    "payloop_external_api_errors_total", "Errors from outside APIs", ["service", "system", "kind"]
)
