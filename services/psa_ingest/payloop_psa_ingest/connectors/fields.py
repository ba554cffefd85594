"""Strict readers of vendor JSON fields: a value of the wrong shape raises ValueError, so the record is
skipped and recorded instead of landing half-mapped."""
from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from typing import Any


def int_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer id, got {value!r}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected text, got {value!r}")
    return value


def dec(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ValueError(f"expected a number, got {value!r}")
    return Decimal(value)


def day(value: Any) -> date:
    if not isinstance(value, str):
        raise ValueError(f"expected a date, got {value!r}")
    return date.fromisoformat(value[:10])


def dumps_exact(body: dict) -> bytes:
    """JSON with Decimal amounts written as exact numbers (json cannot, and float would round)."""
    marked = json.dumps(body, default=lambda v: f"\x00{v}\x00" if isinstance(v, Decimal) else str(v))
    return re.sub(r'"\\u0000(-?[0-9.]+)\\u0000"', r"\1", marked).encode()
