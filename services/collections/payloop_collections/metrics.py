"""Prometheus metrics of the collections service (served at /metrics with the platform's)."""
from prometheus_client import Counter

STEPS_DECIDED = Counter("payloop_collections_steps_total", "Reminder steps decided, by outcome", ["outcome"])
EMAILS = Counter("payloop_collections_emails_total", "Email deliveries per recipient, by result", ["result"])
