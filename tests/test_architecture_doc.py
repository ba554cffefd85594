"""docs/architecture.md's topic table says who consumes what today; this keeps it true to the code."""
import re
from pathlib import Path

from payloop.events.catalogue import CATALOGUE
from payloop_collections.service import SERVICE as COLLECTIONS
from payloop_gl_posting.service import SERVICE as GL_POSTING
from payloop_payments.service import SERVICE as PAYMENTS
from payloop_psa_ingest.service import SERVICE as PSA_INGEST
from payloop_reporting.service import SERVICE as REPORTING
from payloop_tenants.service import SERVICE as TENANTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
SERVICES = [TENANTS, PSA_INGEST, PAYMENTS, COLLECTIONS, GL_POSTING, REPORTING]
ROW = re.compile(r"^\| `([a-z_.]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$")


def consumed_today() -> dict[str, list[str]]:
    return {t: [s.name for s in SERVICES if t in s.handlers] for t in CATALOGUE.types()}


def expected_table() -> str:
    lines = ["| topic | producer | consumed today by |", "|---|---|---|"]
    for topic, consumers in consumed_today().items():
        lines.append(f"| `{topic}` | {CATALOGUE.current(topic).producer} | {', '.join(consumers) or '-'} |")
    return "\n".join(lines)


def test_topic_table_matches_the_services_handlers():
    text = DOC.read_text()
    assert expected_table() in text, (
        "docs/architecture.md's topic table differs from the code; replace it with:\n\n" + expected_table())
