"""Domain units of the event catalogue and envelope (DESIGN.md sections 2 and 3). No infrastructure."""
from __future__ import annotations

import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from payloop.events import Envelope, new_event
from payloop.events.catalogue import (
    CATALOGUE,
    Catalogue,
    CatalogueEntry,
    EventData,
    MissingUpcaster,
    UnknownEventType,
)
from payloop.events.envelope import partition_key
from payloop.events.topics import dlq_topic, domain_topics, is_dlq, split_dlq
from payloop.ids import uuid7

# The "produces" column of DESIGN.md section 2, copied by hand: it is the contract.
DESIGN_PRODUCES: dict[str, list[str]] = {
    "tenants": ["tenant.updated"],
    "psa_ingest": [
        "client.upserted", "agreement.upserted", "invoice.created", "invoice.updated", "invoice.voided",
        "credit_memo.created", "ticket.flagged", "psa.payment_recorded", "psa.sync_failed",
    ],
    "payments": [
        "payment_method.updated", "autopay.changed", "payment.initiated", "payment.settled", "payment.failed",
        "payment.refunded", "payment.disputed", "installment_plan.created", "payout.paid",
    ],
    "collections": ["reminder.sent", "collection.escalated", "collection.paused", "promise.recorded"],
    "gl_posting": ["gl.posted", "gl.post_failed"],
    "reporting": [],
}
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")

PSA = {"source": "autotask", "external_id": "29384"}


def invoice_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "invoice_id": "inv_1",
        "psa": PSA,
        "number": "INV-1001",
        "agreement": None,
        "currency": "USD",
        "issued_on": "2025-03-01",
        "due_on": "2025-03-31",
        "terms": "Net 30",
        "status": "open",
        "subtotal_minor": 12550,
        "tax_minor": 0,
        "total_minor": 12550,
        "balance_minor": 12550,
        "lines": [{"kind": "time", "description": "Onsite", "quantity": "1.5",
                   "unit_price_minor": 8367, "amount_minor": 12550}],
    }
    data.update(overrides)
    return data


def settled_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "payment_id": "pay_1",
        "method": {"type": "card", "brand": "visa", "last4": "4242"},
        "amount_minor": 12550,
        "currency": "USD",
        "fee_minor": 394,
        "allocations": [{"invoice_id": "inv_1", "amount_minor": 12550}],
        "processor": {"payment_intent_id": "pi_1", "charge_id": "ch_1"},
    }
    data.update(overrides)
    return data


# --- the catalogue against DESIGN.md --------------------------------------------------------------

@pytest.mark.parametrize(
    "service,type", [(service, type) for service, types in DESIGN_PRODUCES.items() for type in types]
)
def test_every_designed_event_type_is_catalogued_with_its_producer(service: str, type: str):
    assert type in CATALOGUE.types(), f"DESIGN.md section 2 says {service} produces {type}"
    for version in CATALOGUE.versions(type):
        assert CATALOGUE.get(type, version).producer == service


def test_topics_are_the_catalogue_types_and_dlq_names_round_trip():
    assert domain_topics() == CATALOGUE.types() == sorted(CATALOGUE.types())
    topic = dlq_topic("invoice.created", "payments")
    assert topic == "invoice.created.dlq.payments"
    assert is_dlq(topic) and not is_dlq("invoice.created")
    assert split_dlq(topic) == ("invoice.created", "payments")


def _fields(model: type[EventData]) -> set[str]:
    return set(model.model_fields)


def _nested(model: type[EventData], field: str) -> type[EventData]:
    annotation = model.model_fields[field].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        for inner in (candidate, *getattr(candidate, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, EventData):
                return inner
    raise AssertionError(f"{model.__name__}.{field} is not a nested event model")


@pytest.mark.parametrize("type", ["invoice.created", "invoice.updated"])
def test_invoice_data_carries_the_contract_fields(type: str):
    model = CATALOGUE.current(type).model
    assert {"invoice_id", "psa", "number", "agreement", "currency", "issued_on", "due_on", "terms", "status",
            "subtotal_minor", "tax_minor", "total_minor", "balance_minor", "lines"} <= _fields(model)
    assert {"source", "external_id"} <= _fields(_nested(model, "psa"))
    assert {"id", "kind", "name"} <= _fields(_nested(model, "agreement"))
    assert {"kind", "description", "quantity", "unit_price_minor", "amount_minor",
            "agreement_line_id"} <= _fields(_nested(model, "lines"))
    extra = {"changes": {"status": {"from": "open", "to": "paid"}}} if type == "invoice.updated" else {}
    assert model.model_validate(invoice_data(agreement=None, **extra)).agreement is None  # "or null"
    if type == "invoice.updated":
        assert "changes" in _fields(model)


@pytest.mark.parametrize(
    "type", ["payment.settled", "payment.failed", "payment.refunded", "payment.disputed"]
)
def test_payment_data_carries_the_contract_fields(type: str):
    model = CATALOGUE.current(type).model
    assert {"payment_id", "method", "amount_minor", "currency", "fee_minor", "allocations", "attempt",
            "processor"} <= _fields(model)
    assert {"type", "brand", "last4"} <= _fields(_nested(model, "method"))
    assert {"invoice_id", "amount_minor"} <= _fields(_nested(model, "allocations"))
    assert {"name", "payment_intent_id", "charge_id"} <= _fields(_nested(model, "processor"))
    if type == "payment.failed":
        assert {"decline_code", "retryable", "next_attempt_at"} <= _fields(model)


def test_payout_and_reminder_data_carry_the_contract_fields():
    payout = CATALOGUE.current("payout.paid").model
    assert {"payout_id", "arrival_date", "amount_minor", "currency", "items"} <= _fields(payout)
    item_fields = _fields(_nested(payout, "items"))
    assert {"type", "payment_id", "gross_minor", "fee_minor", "net_minor"} <= item_fields
    reminder = CATALOGUE.current("reminder.sent").model
    assert {"invoice_ids", "step", "level", "channel", "to", "template"} <= _fields(reminder)


# --- money is integer minor units -----------------------------------------------------------------

BAD_MONEY = [10.5, "10", 10.0, "10.50", True, None]


@pytest.mark.parametrize("bad", BAD_MONEY, ids=repr)
@pytest.mark.parametrize(
    "type,build",
    [
        ("invoice.created", lambda v: invoice_data(total_minor=v)),
        ("invoice.created",
         lambda v: invoice_data(lines=[{**invoice_data()["lines"][0], "amount_minor": v}])),
        ("payment.settled", lambda v: settled_data(amount_minor=v)),
        ("payment.settled", lambda v: settled_data(allocations=[{"invoice_id": "inv_1", "amount_minor": v}])),
        ("payout.paid", lambda v: {"payout_id": "po_1", "arrival_date": "2025-04-04", "amount_minor": 100,
                                   "currency": "USD", "items": [{"type": "charge", "payment_id": "p",
                                                                 "gross_minor": 103, "fee_minor": 3,
                                                                 "net_minor": v}]}),
        ("credit_memo.created", lambda v: {"credit_memo_id": "cm_1", "psa": PSA, "number": "CM-1",
                                           "currency": "USD", "issued_on": "2025-03-02", "total_minor": v}),
    ],
)
def test_money_fields_reject_floats_and_strings(type: str, build, bad):
    model = CATALOGUE.current(type).model
    assert model.model_validate(build(100))  # the same payload with an integer is fine
    with pytest.raises(ValidationError):
        model.model_validate(build(bad))
    with pytest.raises(ValidationError):
        new_event(type, tenant_id="ten_1", client_id="cli_1", data=build(bad), producer="test")
    with pytest.raises(ValidationError):  # what a consumer sees after json.loads of the envelope
        CATALOGUE.parse(type, 1, json.loads(json.dumps(build(bad))))


def test_money_accepts_negative_and_zero_integers():
    model = CATALOGUE.current("invoice.created").model
    line = {"kind": "credit", "description": "Goodwill", "quantity": "1", "unit_price_minor": -500,
            "amount_minor": -500}
    parsed = model.model_validate(invoice_data(lines=[line], tax_minor=0))
    assert parsed.lines[0].amount_minor == -500 and parsed.tax_minor == 0


@pytest.mark.parametrize("currency", ["usd", "US", "USDX", "", 840])
def test_currency_is_an_iso_4217_code(currency):
    with pytest.raises(ValidationError):
        CATALOGUE.current("invoice.created").model.model_validate(invoice_data(currency=currency))


# --- additive changes ---------------------------------------------------------------------------

def test_unknown_data_fields_are_kept_top_level_and_nested():
    data = invoice_data(po_number="PO-77", psa={**PSA, "board": "Billing"})
    data["lines"][0]["sku"] = "ONSITE-HR"
    parsed = CATALOGUE.parse("invoice.created", 1, data)
    dumped = parsed.model_dump(mode="json")
    assert dumped["po_number"] == "PO-77"
    assert dumped["psa"]["board"] == "Billing"
    assert dumped["lines"][0]["sku"] == "ONSITE-HR"
    event = new_event("invoice.created", tenant_id="ten_1", client_id="cli_1", data=data,
                      producer="psa_ingest")
    assert event.data["po_number"] == "PO-77" and event.data["lines"][0]["sku"] == "ONSITE-HR"


def test_defaults_are_filled_so_consumers_see_every_field():
    event = new_event("payment.settled", tenant_id="ten_1", client_id="cli_1",
                      data=settled_data(fee_minor=0), producer="payments")
    assert event.data["attempt"] == 1
    assert event.data["processor"]["name"] == "stripe"
    assert event.data["settled_at"] is None


# --- new_event and the envelope -----------------------------------------------------------------

def test_new_event_validates_data_against_the_current_version():
    with pytest.raises(ValidationError):
        new_event("invoice.created", tenant_id="ten_1", client_id="cli_1",
                  data={k: v for k, v in invoice_data().items() if k != "due_on"}, producer="psa_ingest")
    with pytest.raises(ValidationError):
        new_event("invoice.created", tenant_id="ten_1", client_id="cli_1",
                  data=invoice_data(status="paid_in_cash"), producer="psa_ingest")
    with pytest.raises(UnknownEventType):
        new_event("invoice.exploded", tenant_id="ten_1", data={}, producer="psa_ingest")


def test_new_event_accepts_a_model_instance():
    model = CATALOGUE.current("invoice.created").model.model_validate(invoice_data())
    event = new_event("invoice.created", tenant_id="ten_1", client_id="cli_1", data=model,
                      producer="psa_ingest")
    assert event.data["issued_on"] == "2025-03-01"
    assert event.data["lines"][0]["amount_minor"] == 12550


def test_new_event_sets_envelope_key_and_headers():
    before = datetime.now(UTC)
    event = new_event("invoice.created", tenant_id="ten_1", client_id="cli_9", data=invoice_data(),
                      producer="psa_ingest")
    assert event.type == "invoice.created"
    assert event.version == CATALOGUE.current("invoice.created").version
    assert event.tenant_id == "ten_1" and event.client_id == "cli_9" and event.producer == "psa_ingest"
    assert before <= event.occurred_at <= datetime.now(UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.key == "ten_1:cli_9" == partition_key("ten_1", "cli_9")
    headers = dict(event.headers())
    assert [name for name, _ in event.headers()] == ["event-type", "event-id", "tenant-id", "traceparent"]
    assert headers["event-type"] == b"invoice.created"
    assert headers["event-id"] == str(event.id).encode()
    assert headers["tenant-id"] == b"ten_1"
    assert TRACEPARENT.match(headers["traceparent"].decode())
    assert headers["traceparent"].decode() == event.traceparent
    assert all(isinstance(value, bytes) for value in headers.values())


def test_tenant_wide_events_are_keyed_by_the_tenant_alone():
    event = new_event("tenant.updated", tenant_id="ten_1", producer="tenants",
                      data={"tenant_id": "ten_1", "name": "Acme", "timezone": "UTC", "currency": "USD"})
    assert event.client_id is None
    assert event.key == "ten_1"


def test_correlation_and_causation_follow_the_cause():
    first = new_event("invoice.created", tenant_id="ten_1", client_id="cli_1", data=invoice_data(),
                      producer="psa_ingest")
    assert first.correlation_id == str(first.id) and first.causation_id is None
    second = new_event("payment.settled", tenant_id="ten_1", client_id="cli_1", data=settled_data(),
                       producer="payments", causation=first)
    assert second.correlation_id == first.correlation_id
    assert second.causation_id == str(first.id)
    third = new_event("payment.settled", tenant_id="ten_1", client_id="cli_1", data=settled_data(),
                      producer="payments", causation="req_123", correlation_id="flow_9")
    assert (third.causation_id, third.correlation_id) == ("req_123", "flow_9")


def test_occurred_at_must_be_timezone_aware():
    with pytest.raises(ValidationError):
        new_event("invoice.created", tenant_id="ten_1", client_id="cli_1", data=invoice_data(),
                  producer="psa_ingest", occurred_at=datetime(2025, 3, 1, 12, 0))


def test_envelope_round_trips_through_bytes():
    event = new_event("invoice.created", tenant_id="ten_1", client_id="cli_1",
                      data=invoice_data(po_number="PO-é"), producer="psa_ingest",
                      occurred_at=datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC))
    raw = event.to_bytes()
    assert isinstance(raw, bytes)
    wire = json.loads(raw.decode("utf-8"))
    assert wire["id"] == str(event.id) and wire["data"]["po_number"] == "PO-é"
    again = Envelope.from_bytes(raw)
    assert again == event
    assert again.headers() == event.headers() and again.key == event.key
    assert again.to_bytes() == raw
    parsed = CATALOGUE.parse(again.type, again.version, again.data)
    assert parsed.due_on == date(2025, 3, 31) and parsed.total_minor == 12550


def test_envelope_rejects_garbage():
    with pytest.raises(ValidationError):
        Envelope.from_bytes(b"not json")
    event = new_event("invoice.created", tenant_id="ten_1", client_id="cli_1", data=invoice_data(),
                      producer="psa_ingest")
    wire = json.loads(event.to_bytes())
    for field in ("id", "type", "tenant_id", "data"):
        broken = {k: v for k, v in wire.items() if k != field}
        with pytest.raises(ValidationError):
            Envelope.from_bytes(json.dumps(broken).encode())


# --- ids ----------------------------------------------------------------------------------------

def test_ids_are_uuid7_with_the_current_time():
    now_ms = time.time_ns() // 1_000_000
    value = uuid7()
    assert isinstance(value, UUID)
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"
    assert abs((value.int >> 80) - now_ms) < 5_000
    event = new_event("invoice.created", tenant_id="ten_1", client_id="cli_1", data=invoice_data(),
                      producer="psa_ingest")
    assert event.id.version == 7


def test_ids_are_unique_and_time_ordered():
    many = [uuid7() for _ in range(5_000)]
    assert len(set(many)) == len(many)
    spaced = []
    for _ in range(20):
        spaced.append(uuid7())
        time.sleep(0.002)  # ordering is by millisecond timestamp; within one millisecond it is random
    assert spaced == sorted(spaced)
    assert [str(u) for u in spaced] == sorted(str(u) for u in spaced)  # text order too (logs, indexes)
    events = []
    for _ in range(5):
        events.append(new_event("tenant.updated", tenant_id="ten_1", producer="tenants",
                                data={"tenant_id": "ten_1", "name": "A", "timezone": "UTC",
                                      "currency": "USD"}))
        time.sleep(0.002)
    assert [e.id for e in events] == sorted(e.id for e in events)


# --- versions and upcasting ---------------------------------------------------------------------

class ThingV1(EventData):
    thing_id: str
    price: int


class ThingV2(EventData):
    thing_id: str
    price_minor: int
    currency: str


class ThingV3(EventData):
    thing_id: str
    amount: dict[str, Any]


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["price_minor"] = data.pop("price")
    data["currency"] = "USD"
    return data


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["amount"] = {"minor": data.pop("price_minor"), "currency": data.pop("currency")}
    return data


def _catalogue(*entries: CatalogueEntry) -> Catalogue:
    catalogue = Catalogue()
    for entry in entries:
        catalogue.add(entry)
    return catalogue


V1 = CatalogueEntry("thing.changed", 1, ThingV1, "tests", "A thing changed")
V2 = CatalogueEntry("thing.changed", 2, ThingV2, "tests", "A thing changed", upcast_from_previous=_v1_to_v2)
V3 = CatalogueEntry("thing.changed", 3, ThingV3, "tests", "A thing changed", upcast_from_previous=_v2_to_v3)


def test_old_versions_are_upcast_to_the_newest():
    catalogue = _catalogue(V1, V2)
    assert catalogue.versions("thing.changed") == [1, 2]
    assert catalogue.current("thing.changed") is V2
    parsed = catalogue.parse("thing.changed", 1, {"thing_id": "t1", "price": 500, "note": "kept"})
    assert isinstance(parsed, ThingV2)
    assert parsed.model_dump() == {"thing_id": "t1", "price_minor": 500, "currency": "USD", "note": "kept"}
    current = catalogue.parse("thing.changed", 2, {"thing_id": "t1", "price_minor": 7, "currency": "EUR"})
    assert isinstance(current, ThingV2) and current.price_minor == 7


def test_upcasters_chain_across_several_versions_in_any_registration_order():
    catalogue = _catalogue(V3, V1, V2)
    parsed = catalogue.parse("thing.changed", 1, {"thing_id": "t1", "price": 500})
    assert isinstance(parsed, ThingV3)
    assert parsed.amount == {"minor": 500, "currency": "USD"}


def test_old_payloads_are_validated_as_their_own_version_first():
    catalogue = _catalogue(V1, V2)
    with pytest.raises(ValidationError):
        catalogue.parse("thing.changed", 1, {"thing_id": "t1", "price_minor": 500, "currency": "USD"})


def test_a_version_without_upcaster_is_refused_when_registered():
    catalogue = _catalogue(V1)
    no_upcaster = CatalogueEntry("thing.changed", 2, ThingV2, "tests", "A thing changed")
    with pytest.raises(MissingUpcaster):
        catalogue.add(no_upcaster)
    assert catalogue.versions("thing.changed") == [1]  # the bad entry was not kept
    reversed_order = _catalogue(no_upcaster)
    with pytest.raises(MissingUpcaster):
        reversed_order.add(V1)


def test_a_missing_upcaster_is_caught_when_parsing():
    """Even when entries bypass `add`, parse fails loudly (not with an assert `python -O` would drop)."""
    no_upcaster = CatalogueEntry("thing.changed", 2, ThingV2, "tests", "A thing changed")
    catalogue = Catalogue(entries={("thing.changed", 1): V1, ("thing.changed", 2): no_upcaster})
    with pytest.raises(MissingUpcaster, match="thing.changed v2"):
        catalogue.parse("thing.changed", 1, {"thing_id": "t1", "price": 500})
    assert catalogue.parse("thing.changed", 2, {"thing_id": "t", "price_minor": 1, "currency": "USD"})


def test_unknown_types_and_versions():
    catalogue = _catalogue(V1, V2)
    with pytest.raises(UnknownEventType):
        catalogue.parse("thing.changed", 9, {})
    with pytest.raises(UnknownEventType):
        catalogue.current("nothing.happened")
    with pytest.raises(UnknownEventType):
        CATALOGUE.parse("invoice.created", 99, invoice_data())


def test_the_real_catalogue_is_consistent():
    for type in CATALOGUE.types():
        versions = CATALOGUE.versions(type)
        assert versions[0] >= 1
        for version in versions[1:]:
            assert CATALOGUE.get(type, version).upcast_from_previous is not None, f"{type} v{version}"
        producers = {CATALOGUE.get(type, v).producer for v in versions}
        assert len(producers) == 1, f"{type} changes producer between versions"
        for version in versions:
            entry = CATALOGUE.get(type, version)
            assert issubclass(entry.model, EventData) and entry.summary


def test_uuid7_is_strictly_increasing_within_a_millisecond():
    from payloop.ids import uuid7

    ids = [uuid7() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.version == 7 for i in ids[:10])


def test_payout_items_must_net_to_the_payout_amount():
    from pydantic import ValidationError

    from payloop.events.catalogue import PayoutPaidV1

    item = {"type": "charge", "payment_id": "p1", "gross_minor": 10_000, "fee_minor": 320, "net_minor": 9_680}
    ok = PayoutPaidV1.model_validate({"payout_id": "po_1", "arrival_date": "2026-11-24", "amount_minor": 9_680,
                                      "currency": "USD", "items": [item]})
    assert ok.amount_minor == 9_680
    with pytest.raises(ValidationError, match="net to 9680"):
        PayoutPaidV1.model_validate({"payout_id": "po_1", "arrival_date": "2026-11-24", "amount_minor": 10_000,
                                     "currency": "USD", "items": [item]})
