"""The HaloPSA simulator's records use the field names of Halo's own example objects (specs/halopsa)."""
import json
from pathlib import Path

from payloop.simulators.halopsa import PRIVATE, HaloSimulator

SPECS = Path(__file__).resolve().parents[3] / "specs" / "halopsa"


def template(name: str) -> dict:
    return json.loads((SPECS / f"{name}.json").read_text())[0]


def test_simulator_records_follow_halos_objects():
    state = HaloSimulator().state
    invoice, contract, client = template("Invoice"), template("Contract"), template("Client")
    line_fields = set(invoice["lines"][0])
    for name, fields in (("Client", set(client)), ("ClientContract", set(contract)), ("Invoice", set(invoice)),
                         ("RecurringInvoice", set(invoice))):
        records = list(state[name].values())
        assert records, name
        for record in records:
            assert set(record) - PRIVATE <= fields, (name, set(record) - PRIVATE - fields)
            for line in record.get("lines", []):
                assert set(line) <= line_fields, (name, set(line) - line_fields)
