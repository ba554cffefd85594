"""Outgoing email: SMTP with aiosmtplib, and the delivery loop that sends, records and retries.

A message row is locked (`FOR UPDATE SKIP LOCKED`) while it is handed to the SMTP server, so two
workers never send the same email; `reminder.sent` is written in the transaction that marks it sent.
Each recipient gets its own copy (with its own one-click unsubscribe link); a permanent refusal
(5xx) is a bounce, recorded and not retried; anything else is retried with growing delays for the
recipients still waiting. The Message-ID is derived from our message id, so a resend after a crash
is recognisable downstream.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

import aiosmtplib
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop.metrics import EXTERNAL_API_ERRORS

from payloop_collections import cases, repository, unsubscribe
from payloop_collections import models as m
from payloop_collections.metrics import EMAILS
from payloop_collections.settings import CollectionsSettings

log = structlog.get_logger(__name__)

RETRY_BASE = timedelta(minutes=5)


@dataclass
class SmtpMailer:
    settings: CollectionsSettings

    def build(self, message: m.Message, to: str, sender_name: str, now: datetime,
              reply_to: str | None = None) -> EmailMessage:
        unsubscribe_url = unsubscribe.url(self.settings, message.tenant_id, to)
        email = EmailMessage()
        email["From"] = formataddr((sender_name, self.settings.mail_from))
        email["To"] = to
        email["Subject"] = message.subject
        email["Date"] = format_datetime(now)
        recipient = hashlib.sha256(to.lower().encode()).hexdigest()[:12]
        email["Message-ID"] = f"<{message.id}.{recipient}@payloop.collections>"
        email["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if reply_to:
            email["Reply-To"] = reply_to
        email["X-Payloop-Tenant"] = message.tenant_id
        email["X-Payloop-Client"] = message.client_id
        email.set_content(message.text.replace(unsubscribe.PLACEHOLDER, unsubscribe_url))
        email.add_alternative(message.html.replace(unsubscribe.PLACEHOLDER, unsubscribe_url), subtype="html")
        return email

    async def send(self, email: EmailMessage) -> None:
        s = self.settings
        await aiosmtplib.send(email, hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username,
                              password=s.smtp_password, start_tls=s.smtp_starttls, timeout=s.smtp_timeout_s)


async def deliver_due(session_factory: async_sessionmaker[AsyncSession], mailer: SmtpMailer, now: datetime,
                      max_attempts: int) -> int:
    """Send every pending email whose time has come; returns how many were attempted."""
    attempted = 0
    while True:
        async with session_factory() as session, session.begin():
            message = await repository.claim_due_message(session, now)
            if message is None:
                return attempted
            attempted += 1
            await _deliver(session, mailer, message, now, max_attempts)


def _permanent(exc: Exception) -> str | None:
    """The SMTP reply if the server refused the recipient for good (5xx), else None."""
    refused = exc.recipients if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) else [exc]
    codes = [getattr(r, "code", 0) for r in refused]
    if codes and all(500 <= code < 600 for code in codes):
        return "; ".join(f"{r.code} {r.message}" for r in refused)
    return None


async def _deliver(session: AsyncSession, mailer: SmtpMailer, message: m.Message, now: datetime,
                   max_attempts: int) -> None:
    opted_out = await repository.opted_out(session, message.tenant_id)
    waiting = [r for r in message.recipients
               if r.lower() not in opted_out and r not in message.delivered_to and r not in message.bounced]
    profile = await repository.tenant_profile(session, message.tenant_id)
    branding = profile.branding if profile else {}
    sender = branding.get("sender_name") or branding.get("display_name") or (profile.name if profile else "Billing")
    message.attempts += 1
    delivered, bounced, errors = [], {}, []
    for to in waiting:
        try:
            await mailer.send(mailer.build(message, to, sender, now, branding.get("support_email")))
            delivered.append(to)
        except (aiosmtplib.SMTPException, OSError) as exc:
            if (reply := _permanent(exc)) is not None:
                bounced[to] = reply
            else:
                errors.append(f"{to}: {exc}")
    EMAILS.labels("delivered").inc(len(delivered))
    EMAILS.labels("bounced").inc(len(bounced))
    EMAILS.labels("deferred").inc(len(errors))
    if errors:
        EXTERNAL_API_ERRORS.labels("collections", "smtp", "send").inc(len(errors))
    # JSONB columns are replaced, not mutated, so the ORM sees the change.
    message.delivered_to = [*message.delivered_to, *delivered]
    message.bounced = {**message.bounced, **bounced}
    if bounced:
        await repository.add_timeline(session, message.tenant_id, message.client_id, "bounced", now,
                                      message_id=str(message.id), recipients=bounced)
    if delivered:
        await repository.add_timeline(session, message.tenant_id, message.client_id, "sent", now,
                                      message_id=str(message.id), to=delivered, level=message.level,
                                      invoice_ids=message.invoice_ids, subject=message.subject)
        await cases.publish(session, "reminder.sent", message.tenant_id, message.client_id, {
            "invoice_ids": message.invoice_ids, "step": message.step, "level": message.level,
            "channel": "email", "to": delivered, "template": message.template}, now)
    if errors:
        message.last_error = "; ".join(errors)[:2000]
        give_up = message.attempts >= max_attempts
        message.next_attempt_at = now + RETRY_BASE * 2 ** (message.attempts - 1)
        message.status = "failed" if give_up else "pending"
        log.warning("collections.email.send_failed", message_id=str(message.id), attempts=message.attempts,
                    error=message.last_error, giving_up=give_up)
        await repository.add_timeline(session, message.tenant_id, message.client_id, "send_failed", now,
                                      message_id=str(message.id), error=message.last_error,
                                      attempts=message.attempts,
                                      next_attempt_at=None if give_up else message.next_attempt_at.isoformat())
        return
    if message.delivered_to:
        message.status, message.sent_at = "sent", message.sent_at or now
    else:
        message.status = "bounced" if message.bounced else "cancelled"
        if not message.bounced:
            await repository.add_timeline(session, message.tenant_id, message.client_id, "skipped", now,
                                          reason="opted_out", message_id=str(message.id))
