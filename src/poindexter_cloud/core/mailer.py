"""The service's own outgoing mail (verification and reset links) over SMTP, from settings."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage

from poindexter_cloud.core.settings import Settings

TIMEOUT_SECONDS = 15

log = logging.getLogger(__name__)


def build_message(settings: Settings, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    return message


def _send(settings: Settings, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.smtp_tls == "tls":
        smtp = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS)
    with smtp:
        if settings.smtp_tls == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(message)


async def send(settings: Settings, to: str, subject: str, text: str) -> None:
    """Send one plain-text message; raises on failure so the calling job retries. The log line names the
    subject, never the address or the body (which holds a link's secret)."""
    await asyncio.to_thread(_send, settings, build_message(settings, to, subject, text))
    log.info("mail sent", extra={"subject": subject})
