"""A local SMTP server (aiosmtpd) that keeps every message it receives, readable over HTTP.

`dev` and the tests point SMTP_HOST/SMTP_PORT at it, so verification and reset emails can be read at
``GET /smtp/messages`` on the sandbox port instead of leaving the machine.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from litestar import Router, get


class Mailbox:
    """Every message received, in order; safe to read from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []

    def add(self, envelope: Envelope) -> None:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(preferencelist=("plain", "html"))
        entry = {
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "subject": str(parsed["Subject"] or ""),
            "text": body.get_content() if body is not None else "",
            "received_at": datetime.now(UTC).isoformat(),
        }
        with self._lock:
            self._messages.append(entry)

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self._messages if to is None or to.lower() in (r.lower() for r in m["to"])]


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        self.mailbox.add(envelope)
        return "250 Message accepted for delivery"


MAILBOX = Mailbox()


class SmtpSandbox:
    """The SMTP listener, running in its own thread (aiosmtpd's controller)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1025, mailbox: Mailbox = MAILBOX) -> None:
        self.mailbox = mailbox
        self.controller = Controller(_Handler(mailbox), hostname=host, port=port)

    def start(self) -> None:
        # aiosmtpd logs five info lines per connection, its own start-up probe included ("Connection lost
        # during _handle_client()" reads like a failure to a newcomer): its warnings are enough.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@get("/messages", sync_to_thread=False)
def list_messages(to: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Messages the sandbox SMTP server received, oldest first, optionally only those to one address."""
    return {"messages": MAILBOX.messages(to)}


router = Router(path="/smtp", route_handlers=[list_messages])
