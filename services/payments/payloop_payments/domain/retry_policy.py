"""Decline-aware retry policy for merchant-initiated charges (auto-pay, installments).

Pure functions over the history of attempts, so the card networks' and Nacha's rules are enforced
in one place and unit-tested without a processor:
- ACH R01/R09 (insufficient or uncollected funds): re-presented at most twice within 180 days of
  the original entry.
- ACH R02/R03/R04 (closed, no account, invalid number): never retried, the method is unusable.
- ACH R07/R08/R10/R29 (authorization revoked, stop payment, unauthorized): never retried, the
  auto-pay authorization is revoked until the client gives a new one.
- Cards: stolen/lost/pickup/fraud-type and other hard declines are never retried; soft declines
  at most 15 retries per card in 30 days (Visa), and never more than 10 attempts in 24 hours on a
  Mastercard; do-not-honour is soft only for its first N occurrences.
- Attempts the client starts (checkout, a new card) are never retried by us and do not count
  against the dunning budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal

MethodType = Literal["card", "ach"]


class Outcome(str, Enum):
    RETRY = "retry"                      # soft decline: try again at next_attempt_at
    STOP = "stop"                        # no retry (budget or schedule exhausted, client-initiated)
    UPDATE_METHOD = "update_method"      # hard decline: the method is unusable, ask for a new one
    REVOKE_AUTHORIZATION = "revoke_authorization"  # ACH unauthorized: auto-pay off until re-authorized


# Nacha return codes, and the Stripe ACH failure codes that stand for them.
ACH_INSUFFICIENT = {"R01", "R09"}
ACH_UNUSABLE = {"R02", "R03", "R04"}
ACH_REVOKED = {"R07", "R08", "R10", "R29"}
STRIPE_ACH_CODES = {
    "insufficient_funds": "R01",
    "account_closed": "R02",
    "no_account": "R03",
    "invalid_account_number": "R04",
    "debit_not_authorized": "R10",
    "authorization_revoked": "R07",
    "payment_stopped": "R08",
}

# Card declines that must never be retried (networks fine retries of these).
CARD_NEVER_RETRY = {
    "stolen_card", "lost_card", "pickup_card", "fraudulent", "merchant_blacklist",
    "security_violation", "restricted_card", "revocation_of_authorization",
    "revocation_of_all_authorizations", "stop_payment_order", "do_not_try_again",
    "invalid_account", "incorrect_number", "invalid_number", "expired_card",
    "card_not_supported", "transaction_not_allowed", "new_account_information_available",
}
DO_NOT_HONOR = {"do_not_honor"}

ACH_REPRESENTMENT_LIMIT = 2
ACH_REPRESENTMENT_WINDOW = timedelta(days=180)
CARD_RETRY_LIMIT = 15
CARD_RETRY_WINDOW = timedelta(days=30)
MASTERCARD_ATTEMPT_LIMIT = 10
MASTERCARD_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class RetryPolicy:
    """Per tenant: `settings.payment_retry` of `tenant.updated` (`schedule_days`, `do_not_honor_max`)."""

    schedule_days: tuple[int, ...] = (1, 3, 5, 7)
    do_not_honor_max: int = 2

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "RetryPolicy":
        retry = settings.get("payment_retry") or {}
        days = retry.get("schedule_days")
        return cls(
            schedule_days=tuple(int(d) for d in days) if days else cls.schedule_days,
            do_not_honor_max=int(retry.get("do_not_honor_max", cls.do_not_honor_max)),
        )


@dataclass(frozen=True)
class PastAttempt:
    """One earlier attempt on the same method (any payment)."""

    at: datetime
    payment_id: str
    client_initiated: bool
    is_retry: bool  # a second or later presentment of the same payment
    decline_code: str | None = None


@dataclass(frozen=True)
class Failure:
    at: datetime
    payment_id: str
    method_type: MethodType
    decline_code: str | None
    client_initiated: bool = False
    card_brand: str | None = None
    first_attempt_at: datetime | None = None  # the payment's original presentment
    is_retry: bool = False  # this failed attempt was itself a re-presentment


@dataclass(frozen=True)
class RetryDecision:
    outcome: Outcome
    next_attempt_at: datetime | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def retryable(self) -> bool:
        return self.outcome is Outcome.RETRY


def ach_return_code(code: str | None) -> str | None:
    """The Nacha R code of an ACH failure given as an R code or a Stripe failure code."""
    if code is None:
        return None
    upper = code.upper()
    if len(upper) == 3 and upper.startswith("R") and upper[1:].isdigit():
        return upper
    return STRIPE_ACH_CODES.get(code)


def decide(failure: Failure, history: list[PastAttempt], policy: RetryPolicy = RetryPolicy()) -> RetryDecision:
    """What to do after `failure`, given earlier attempts on the same method (excluding this one)."""
    if failure.method_type == "ach":
        return _decide_ach(failure, history, policy)
    return _decide_card(failure, history, policy)


def _retries_done(failure: Failure, history: list[PastAttempt]) -> int:
    """Merchant re-presentments of this payment so far, the failing one included."""
    earlier = sum(1 for a in history if a.payment_id == failure.payment_id and a.is_retry and not a.client_initiated)
    return earlier + (1 if failure.is_retry and not failure.client_initiated else 0)


def _decide_ach(failure: Failure, history: list[PastAttempt], policy: RetryPolicy) -> RetryDecision:
    code = ach_return_code(failure.decline_code)
    if code in ACH_UNUSABLE:
        return RetryDecision(Outcome.UPDATE_METHOD, reason=f"ACH {code}: account unusable")
    if code in ACH_REVOKED:
        return RetryDecision(Outcome.REVOKE_AUTHORIZATION, reason=f"ACH {code}: authorization revoked")
    if failure.client_initiated:
        return RetryDecision(Outcome.STOP, reason="client-initiated payments are not retried")
    if code not in ACH_INSUFFICIENT:
        return RetryDecision(Outcome.STOP, reason=f"ACH {code or 'failure'} is not retryable")
    done = _retries_done(failure, history)
    if done >= ACH_REPRESENTMENT_LIMIT:
        return RetryDecision(Outcome.STOP, reason="Nacha: already re-presented twice")
    candidate = _scheduled(failure, done, policy)
    original = failure.first_attempt_at or failure.at
    if candidate is None or candidate > original + ACH_REPRESENTMENT_WINDOW:
        return RetryDecision(Outcome.STOP, reason="retry schedule or Nacha 180-day window exhausted")
    return RetryDecision(Outcome.RETRY, candidate, reason=f"ACH {code}: re-presentment {done + 1}")


def _decide_card(failure: Failure, history: list[PastAttempt], policy: RetryPolicy) -> RetryDecision:
    code = failure.decline_code
    if code in CARD_NEVER_RETRY:
        return RetryDecision(Outcome.UPDATE_METHOD, reason=f"hard decline {code}: never retried")
    if code in DO_NOT_HONOR:
        seen = sum(1 for a in history if a.payment_id == failure.payment_id and a.decline_code in DO_NOT_HONOR)
        if seen + 1 >= policy.do_not_honor_max:
            return RetryDecision(Outcome.UPDATE_METHOD,
                                 reason=f"do_not_honor {seen + 1} times: treated as a hard decline")
    if failure.client_initiated:
        return RetryDecision(Outcome.STOP, reason="client-initiated payments are not retried")
    done = _retries_done(failure, history)
    candidate = _scheduled(failure, done, policy)
    if candidate is None:
        return RetryDecision(Outcome.STOP, reason="retry schedule exhausted")
    candidate = _within_card_caps(candidate, failure, history)
    if candidate is None:
        return RetryDecision(Outcome.STOP, reason="card network retry cap reached")
    return RetryDecision(Outcome.RETRY, candidate, reason=f"soft decline {code}: retry {done + 1}")


def _scheduled(failure: Failure, retries_so_far: int, policy: RetryPolicy) -> datetime | None:
    if retries_so_far >= len(policy.schedule_days):
        return None
    original = failure.first_attempt_at or failure.at
    candidate = original + timedelta(days=policy.schedule_days[retries_so_far])
    return max(candidate, failure.at + timedelta(hours=1))  # never retry immediately


def _within_card_caps(candidate: datetime, failure: Failure, history: list[PastAttempt]) -> datetime | None:
    """The earliest time at or after `candidate` that respects the caps, or None if the budget is gone.

    Visa: 15 retries per card in 30 days. Mastercard: 10 attempts in 24 hours. Client-initiated
    attempts do not count. A retry pushed past 30 days after the original presentment is dropped.
    """
    merchant = sorted((a for a in history if not a.client_initiated), key=lambda a: a.at)
    retries = [a.at for a in merchant if a.is_retry]
    attempts = [a.at for a in merchant] + [failure.at]
    caps = [(retries, CARD_RETRY_LIMIT, CARD_RETRY_WINDOW)]
    if (failure.card_brand or "").lower() == "mastercard":
        caps.append((attempts, MASTERCARD_ATTEMPT_LIMIT, MASTERCARD_WINDOW))
    horizon = (failure.first_attempt_at or failure.at) + CARD_RETRY_WINDOW
    for _ in range(len(attempts) + 1):
        moved = False
        for times, limit, window in caps:
            inside = sorted(t for t in times if candidate - window < t <= candidate)
            if len(inside) >= limit:
                # Wait until enough of them leave the window to make room for one more.
                candidate = inside[len(inside) - limit] + window + timedelta(seconds=1)
                moved = True
        if not moved:
            break
    if candidate > horizon:
        return None
    return candidate
