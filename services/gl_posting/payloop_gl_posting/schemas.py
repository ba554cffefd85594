"""API models of the gl_posting service. Money is integer minor units; secrets never leave."""
from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field


class ConnectionCreate(BaseModel):
    """The result of the vendor's OAuth consent: the code and the company it was granted for."""

    system: Literal["quickbooks", "xero"] = "quickbooks"
    company_id: str = Field(min_length=1, description="QuickBooks realmId from the consent redirect, or the "
                            "Xero tenant id (an organisation listed by Xero's /connections for the grant)")
    authorization_code: str = Field(min_length=1)
    redirect_uri: str = Field(min_length=1, description="The redirect URI used for the consent")


class ConsentRequest(BaseModel):
    system: Literal["quickbooks", "xero"]
    company_id: str | None = Field(None, min_length=1, description="Xero only: the organisation to connect, when "
                                   "the MSP's login reaches several (QuickBooks names the company in its callback)")


class ConsentView(BaseModel):
    authorize_url: str = Field(description="Send the MSP's browser here; the vendor sends it back to redirect_uri")
    state: str = Field(description="Sealed, bound to this tenant, single-use, expires at expires_at")
    redirect_uri: str
    expires_at: datetime


class ConnectionView(BaseModel):
    status: Literal["not_connected", "authorizing", "connected", "revoked", "failed"]
    system: str | None = None
    company_id: str | None = None
    access_token: str | None = Field(None, description="Masked")
    access_expires_at: datetime | None = None
    connected_at: datetime | None = None
    last_error: str | None = None


class AccountMappingIn(BaseModel):
    clearing_account_id: str = Field(min_length=1, description="Undeposited Funds or a clearing account")
    bank_account_id: str = Field(min_length=1, description="Where payouts arrive")
    fee_account_id: str = Field(min_length=1, description="Processing fee expense")
    refunds_account_id: str = Field(min_length=1, description="Where refunds and chargebacks are booked")
    receivable_account_id: str | None = None
    refund_item_id: str | None = Field(None, description="QuickBooks item used on refund receipts (unused for Xero)")
    convenience_fee_account_id: str | None = Field(
        None, description="Income account of card convenience fees (surcharges); a surcharged payment's fee "
        "waits as an `account_not_mapped` exception until one is set")
    customer_rule: Literal["invoice_customer"] = "invoice_customer"


class AccountMappingView(AccountMappingIn):
    validated_at: datetime | None = None


class AccountMappingState(BaseModel):
    configured: bool
    mapping: AccountMappingView | None = None


class LineView(BaseModel):
    account: str
    amount_minor: int = Field(description="Positive debit, negative credit")
    memo: str


class EntryView(BaseModel):
    id: uuid.UUID
    purpose: str
    subject_id: str
    source_event_id: uuid.UUID
    currency: str
    occurred_on: date
    reference: str
    state: str
    system: str | None
    external_id: str | None
    attempts: int
    last_error: str | None
    lines: list[LineView]


class EntryPage(BaseModel):
    items: list[EntryView]
    next_cursor: str | None


class ExceptionView(BaseModel):
    id: uuid.UUID
    entry_id: uuid.UUID
    purpose: str
    subject_id: str
    reason: str
    detail: str
    retryable: bool
    status: str
    occurrences: int
    created_at: datetime
    resolved_at: datetime | None


class ExceptionPage(BaseModel):
    items: list[ExceptionView]
    next_cursor: str | None


class RetryRequest(BaseModel):
    entry_ids: list[uuid.UUID] = Field(default_factory=list, description="Empty: every open exception")


class RetryResult(BaseModel):
    requeued: int


class PurposeTotals(BaseModel):
    count: int
    amount_minor: int
    posted_count: int
    posted_amount_minor: int


class LedgerAccountBalance(BaseModel):
    role: Literal["clearing", "bank"]
    account_id: str
    ours_minor: int = Field(description="What our posted journal entries put in the account")
    theirs_minor: int | None = Field(description="The accounting system's balance (debit positive); null if not found")


class LedgerInvoiceBalance(BaseModel):
    invoice_id: str
    number: str
    ours_minor: int = Field(description="The invoice total less every posted payment applied to it")
    theirs_minor: int | None = Field(description="What the accounting system shows due; null if it has no such invoice")


class LedgerReadBack(BaseModel):
    """The accounting system's own numbers, read back for the report."""

    system: Literal["quickbooks", "xero"]
    as_of: date | None = Field(description="Balances at the end of this day (Xero's Bank Summary); null: the "
                               "current balances over all dates (QuickBooks' Account CurrentBalance)")
    accounts: list[LedgerAccountBalance]
    invoices: list[LedgerInvoiceBalance] = Field(description="The invoices the period's payments paid")


class ReconciliationReport(BaseModel):
    tenant_id: str
    period_start: date
    period_end: date
    currencies: list[str]
    payments: PurposeTotals
    deposits: PurposeTotals
    refunds: PurposeTotals
    disputes: PurposeTotals
    disputes_won: PurposeTotals = Field(description="Disputes won: their funds returned to clearing")
    convenience_fees: PurposeTotals = Field(description="Card convenience fees charged on top of payments: "
                                            "into clearing with them, the MSP's income")
    fees_minor: int
    clearing_balance_minor: int
    clearing_posted_balance_minor: int
    ledger: LedgerReadBack | None = Field(description="Null when the tenant has no connected, mapped accounting "
                                          "system, or it could not be read (a `ledger_unreadable` mismatch)")
    balanced: bool
    mismatches: list[dict]
