"""The consolidated email of one client for one day: Jinja2 HTML and plain text in the tenant's branding."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from payloop_collections import unsubscribe

# ISO 4217 currencies without minor units; everything else we bill in has two.
_ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"}

SUBJECTS = {
    "courtesy": "Upcoming automatic payment for {what}",
    "friendly": "Reminder: {what}",
    "firm": "Overdue: {what}",
    "final": "Final notice: {what}",
    "retry_notice": "We could not process your payment for {what}",
}


def money(amount_minor: int, currency: str) -> str:
    """`123456, USD` -> `1,234.56 USD`, by integer arithmetic (never through float)."""
    sign = "-" if amount_minor < 0 else ""
    amount = abs(amount_minor)
    if currency in _ZERO_DECIMAL:
        return f"{sign}{amount:,} {currency}"
    return f"{sign}{amount // 100:,}.{amount % 100:02d} {currency}"


@dataclass
class EmailItem:
    invoice_id: str
    number: str
    due_on: date
    balance_minor: int
    total_minor: int
    currency: str
    kind: str  # reminder | courtesy | retry_notice
    level: str
    days_overdue: int
    agreement: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    retry_at: datetime | None = None


@dataclass
class RenderedEmail:
    subject: str
    html: str
    text: str


_env = Environment(loader=PackageLoader("payloop_collections", "templates"),
                   autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True)
_env.filters["money"] = money


def subject_for(level: str, items: list[EmailItem]) -> str:
    kinds = {i.kind for i in items}
    key = "retry_notice" if kinds == {"retry_notice"} else ("courtesy" if kinds == {"courtesy"} else level)
    what = f"invoice {items[0].number}" if len(items) == 1 else f"{len(items)} invoices"
    return SUBJECTS.get(key, SUBJECTS["friendly"]).format(what=what)


def render(*, tenant_name: str, branding: dict[str, Any], client_name: str, level: str,
           items: list[EmailItem], checkout_url: str, tenant_timezone: str) -> RenderedEmail:
    by_currency: dict[str, int] = {}
    for item in items:
        by_currency[item.currency] = by_currency.get(item.currency, 0) + item.balance_minor
    context = {
        "tenant_name": branding.get("display_name") or tenant_name,
        "brand_color": branding.get("primary_color", "#1f4e79"),
        "logo_url": branding.get("logo_url"),
        "signature": branding.get("signature") or f"The billing team at {tenant_name}",
        "support_email": branding.get("support_email"),
        "client_name": client_name or "there",
        "level": level,
        "items": items,
        "totals": [money(v, c) for c, v in sorted(by_currency.items())],
        "checkout_url": checkout_url,
        "timezone": tenant_timezone,
        "unsubscribe_url": unsubscribe.PLACEHOLDER,
    }
    return RenderedEmail(subject=subject_for(level, items),
                         html=_env.get_template("reminder.html.j2").render(context),
                         text=_env.get_template("reminder.txt.j2").render(context))
