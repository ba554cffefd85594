"""A tenant's account mapping, checked against the accounting system's chart of accounts.

Each role must name an active account of a fitting type, so a payment never lands in, say, an
income account because someone pasted the wrong id.
"""
from __future__ import annotations

from payloop_gl_posting.connectors.base import AccountNotMapped, LedgerAccount, LedgerItem
from payloop_gl_posting.journal import JournalEntry
from payloop_gl_posting.models import AccountMapping

# The vendor's account types each role may use (QuickBooks AccountType, Xero Account Type).
ALLOWED_TYPES = {
    "quickbooks": {
        "clearing_account_id": {"Other Current Asset", "Bank"},
        "bank_account_id": {"Bank"},
        "fee_account_id": {"Expense", "Other Expense", "Cost of Goods Sold"},
        "refunds_account_id": {"Income", "Other Income", "Expense", "Other Expense"},
        "receivable_account_id": {"Accounts Receivable"},
        "convenience_fee_account_id": {"Income", "Other Income"},
    },
    "xero": {
        # Xero takes payments into, and transfers between, BANK accounts only: clearing is one.
        "clearing_account_id": {"BANK"},
        "bank_account_id": {"BANK"},
        "fee_account_id": {"EXPENSE", "OVERHEADS", "DIRECTCOSTS"},
        "refunds_account_id": {"REVENUE", "SALES", "OTHERINCOME", "EXPENSE", "OVERHEADS", "DIRECTCOSTS"},
        "receivable_account_id": {"CURRENT"},
        "convenience_fee_account_id": {"REVENUE", "OTHERINCOME", "SALES"},
    },
}


# Journal roles whose account a mapping may leave out (a tenant that charges no convenience fee needs
# none), with the mapping field that names it.
OPTIONAL_ROLES = {"convenience_fee": "convenience_fee_account_id"}


def require_mapped(entry: JournalEntry, mapping: AccountMapping) -> None:
    """Refuse, before any vendor call, an entry with a line on an optional role the mapping leaves out:
    it is parked (`account_not_mapped`) until the mapping names the account, which re-queues it."""
    for role, field_name in OPTIONAL_ROLES.items():
        if any(line.account == role for line in entry.lines) and not getattr(mapping, field_name):
            raise AccountNotMapped(f"the account mapping names no account for {role.replace('_', ' ')} "
                                   f"lines ({field_name})")


def problems(mapping: dict[str, str | None], accounts: list[LedgerAccount], items: list[LedgerItem],
             system: str = "quickbooks") -> list[dict]:
    """What is wrong with the mapping, one problem per field (empty when it is valid)."""
    by_id = {account.id: account for account in accounts}
    found: list[dict] = []
    for field_name, allowed in ALLOWED_TYPES[system].items():
        account_id = mapping.get(field_name)
        if account_id is None:
            continue
        account = by_id.get(account_id)
        if account is None:
            found.append({"loc": [field_name], "msg": f"no account {account_id} in the chart of accounts",
                          "type": "account_not_found"})
        elif account.type not in allowed:
            found.append({"loc": [field_name], "msg": f"account {account.name!r} is of type {account.type}; "
                          f"expected one of {sorted(allowed)}", "type": "wrong_account_type"})
    if mapping.get("clearing_account_id") and mapping.get("clearing_account_id") == mapping.get("bank_account_id"):
        found.append({"loc": ["clearing_account_id"], "msg": "clearing and bank must be different accounts",
                      "type": "same_account"})
    item_id = mapping.get("refund_item_id")
    if system == "quickbooks" and item_id is not None and item_id not in {item.id for item in items}:
        found.append({"loc": ["refund_item_id"], "msg": f"no item {item_id}", "type": "item_not_found"})
    return found
