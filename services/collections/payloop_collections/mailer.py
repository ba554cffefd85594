"""Outgoing email: SMTP with aiosmtplib, and the delivery loop that sends, records and retries.

A message row is locked (`FOR UPDATE SKIP LOCKED`) while it is handed to the SMTP server, so two
workers never send the same email; `reminder.sent` is written in the transaction that marks it sent.
The Message-ID is derived from our message id, so a resend after a crash is recognisable downstream.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

import aiosmtplib
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop_collections import cases, repository
from payloop_collections import models as m
from payloop_collections.settings import CollectionsSettings

log = structlog.get_logger(__name__)

RETRY_BASE = timedelta(minutes=5)


@dataclass
class SmtpMailer:
    settings: CollectionsSettings

    def build(self, message: m.Message, to: list[str], sender_name: str, now: datetime) -> EmailMessage:
        email = EmailMessage()
        email["From"] = formataddr((sender_name, self.settings.mail_from))
        email["To"] = ", ".join(to)
        email["Subject"] = message.subject
        email["Date"] = format_datetime(now)
        email["Message-ID"] = f"<{message.id}@payloop.collections>"
        email["List-Unsubscribe"] = f"<mailto:{self.settings.mail_from}?subject=unsubscribe>"
        email["X-Payloop-Tenant"] = message.tenant_id
        email["X-Payloop-Client"] = message.client_id
        email.set_content(message.text)
        email.add_alternative(message.html, subtype="html")
        return email

    async def send(self, email: EmailMessage) -> dict[str, tuple[int, str]]:
        """Send; returns the recipients the server refused (the others were accepted)."""
        s = self.settings
        refused, _ = await aiosmtplib.send(
            email, hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username, password=s.smtp_password,
            start_tls=s.smtp_starttls, timeout=s.smtp_timeout_s)
        return {address: (code, text) for address, (code, text) in refused.items()}


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


async def _deliver(session: AsyncSession, mailer: SmtpMailer, message: m.Message, now: datetime,
                   max_attempts: int) -> None:
    opted_out = await repository.opted_out(session, message.tenant_id)
    to = [r for r in message.recipients if r.lower() not in opted_out]
    if not to:
        message.status = "cancelled"
        await repository.add_timeline(session, message.tenant_id, message.client_id, "skipped", now,
                                      reason="opted_out", message_id=str(message.id))
        return
    profile = await repository.tenant_profile(session, message.tenant_id)
    branding = profile.branding if profile else {}
    sender = branding.get("sender_name") or branding.get("display_name") or (profile.name if profile else "Billing")
    message.attempts += 1
    try:
        refused = await mailer.send(mailer.build(message, to, sender, now))
    except (aiosmtplib.SMTPException, OSError) as exc:
        message.last_error = str(exc)[:2000]
        give_up = message.attempts >= max_attempts
        message.status = "failed" if give_up else "pending"
        message.next_attempt_at = now + RETRY_BASE * 2 ** (message.attempts - 1)
        log.warning("collections.email.send_failed", message_id=str(message.id), attempts=message.attempts,
                    error=message.last_error, giving_up=give_up)
        await repository.add_timeline(session, message.tenant_id, message.client_id, "send_failed", now,
                                      message_id=str(message.id), error=message.last_error,
                                      attempts=message.attempts,
                                      next_attempt_at=None if give_up else message.next_attempt_at.isoformat())
        return
    delivered = [r for r in to if r not in refused]
    message.status, message.sent_at = "sent", now
    if refused:
        await repository.add_timeline(session, message.tenant_id, message.client_id, "bounced", now,
                                      message_id=str(message.id),
                                      recipients={k: f"{c} {t}" for k, (c, t) in refused.items()})
    await repository.add_timeline(session, message.tenant_id, message.client_id, "sent", now,
                                  message_id=str(message.id), to=delivered, level=message.level,
                                  invoice_ids=message.invoice_ids, subject=message.subject)
    await cases.publish(session, "reminder.sent", message.tenant_id, message.client_id, {
        "invoice_ids": message.invoice_ids, "step": message.step, "level": message.level, "channel": "email",
        "to": delivered, "template": message.template}, now)
