"""HTTP to a PSA with the manners every vendor asks for: honour 429 Retry-After, back off with
jitter on 5xx and network errors, stop at once on auth errors, and never blindly resend a write."""
from __future__ import annotations

import asyncio
import json
import random
from decimal import Decimal
from email.utils import parsedate_to_datetime
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from payloop_psa_ingest.connectors.base import PsaAuthError, PsaError, PsaRequestError, PsaRetryableError

log = structlog.get_logger(__name__)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def decode_json(response: httpx.Response) -> Any:
    """JSON with numbers as Decimal: vendor amounts never pass through float."""
    return json.loads(response.content or b"null", parse_float=Decimal)


class VendorHttp:
    def __init__(self, source: str, client: httpx.AsyncClient, *, max_attempts: int = 5,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0, retry_after_cap_s: float = 120.0):
        self.source = source
        self.client = client
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_cap_s = retry_after_cap_s

    async def request(self, method: str, url: str, *, idempotent: bool = False, **kwargs: Any) -> httpx.Response:
        """The response to a successful call, or a classified PsaError after the retries allowed.

        Writes are resent only after a 429 (the PSA refused them before applying); after a timeout
        or a 5xx a write may have landed, so the caller must look before it tries again. `idempotent`
        marks a POST that only reads (a query) or a write that sets absolute values, safe to resend.
        """
        safe = method.upper() in SAFE_METHODS or idempotent
        for attempt in range(1, self.max_attempts + 1):
            delay: float | None = None
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TimeoutException:
                error: PsaError = PsaRetryableError(f"{self.source}: {method} {_path(url)} timed out")
                if not safe:
                    raise error from None
            except httpx.TransportError as exc:
                error = PsaRetryableError(f"{self.source}: {method} {_path(url)} failed: {exc!r}")
                if not safe:
                    raise error from None
            else:
                if response.status_code < 400:
                    return response
                error = classify(self.source, method, url, response)
                if not error.retryable or (not safe and response.status_code != 429):
                    raise error
                if response.status_code in (429, 503):
                    delay = retry_after_seconds(response)
            if attempt == self.max_attempts:
                raise error
            await self.sleep_before_retry(attempt, delay, error, method=method, url=url)
        raise AssertionError("unreachable")

    async def sleep_before_retry(self, attempt: int, retry_after: float | None, error: PsaError, *, method: str,
                                 url: str) -> None:
        """Wait before attempt `attempt + 1`: what the vendor asked for, else jittered exponential backoff."""
        wait = self._backoff(attempt, retry_after)
        log.info("psa.http.retry", source=self.source, method=method, path=_path(url), attempt=attempt,
                 error=str(error), wait_s=round(wait, 2))
        await asyncio.sleep(wait)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # The vendor said when; a little jitter keeps many workers from returning at one instant.
            return min(retry_after, self.retry_after_cap_s) + random.uniform(0, 0.1 * max(retry_after, 1))
        return random.uniform(0, min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1)))


def classify(source: str, method: str, url: str, response: httpx.Response) -> PsaError:
    status = response.status_code
    detail = _vendor_message(response)
    where = f"{source}: {method} {_path(url)} answered {status}"
    if status in (401, 403):
        return PsaAuthError(f"{where}: credentials refused ({detail}); fix the connection's credentials",
                            status=status)
    if status in (408, 429) or status >= 500:
        return PsaRetryableError(f"{where}: {detail}", status=status)
    return PsaRequestError(f"{where}: {detail}", status=status)


def _vendor_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error_description") or body.get("error") or body)[:300]
    return str(body)[:300]


def _path(url: str) -> str:
    return httpx.URL(url).path if "://" in url else url.split("?")[0]
