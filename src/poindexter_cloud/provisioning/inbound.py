"""What a stored Telnyx event does, in the ``process_telnyx_event`` job. An inbound SMS on one of our
numbers (``message.received``): a Signal code for a number awaiting one completes its registration; any
other SMS is stored for the identity (once, by Telnyx's message id) and counted as usage (``sms_received``).
A delivery report of an SMS an identity sent (``message.sent``, ``message.finalized``) moves its status on."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from poindexter_cloud.billing.usage_buffer import UsageBuffer, usage_record
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.service import ReceivedSms
from poindexter_cloud.provisioning import signal_registration
from poindexter_cloud.provisioning.lifecycle import Providers

log = logging.getLogger(__name__)

MESSAGE_RECEIVED: Final = "message.received"
DELIVERY_REPORTS: Final = frozenset({"message.sent", "message.finalized"})


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    telnyx_message_id: str
    from_number: str
    status: str


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Envelope:
    message: dict[str, Any]
    id: str
    sender: str  # phone number
    recipient: dict[str, Any]  # the first


def _envelope(payload: dict[str, Any], direction: str) -> _Envelope | None:
    """The message of a Telnyx event in ``direction`` with its id, sender and first recipient, or None."""
    data = payload.get("data") or {}
    message = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(message, dict) or message.get("direction") != direction:
        return None
    recipients = message.get("to") or []
    sender = message.get("from") or {}
    if not message.get("id") or not recipients or not isinstance(recipients[0], dict):
        return None
    if not isinstance(sender, dict) or not sender.get("phone_number"):
        return None
    return _Envelope(message, str(message["id"]), str(sender["phone_number"]), recipients[0])


def received_sms(payload: dict[str, Any]) -> ReceivedSms | None:
    """The SMS a ``message.received`` event's envelope describes, or None if it is not one."""
    envelope = _envelope(payload, "inbound")
    to = envelope.recipient.get("phone_number") if envelope is not None else None
    if envelope is None or not to:
        return None
    message = envelope.message
    media = [m.get("url") for m in message.get("media") or () if isinstance(m, dict) and m.get("url")]
    return ReceivedSms(
        telnyx_message_id=envelope.id,
        from_number=envelope.sender,
        to_number=str(to),
        text=str(message.get("text") or ""),
        media_urls=[str(url) for url in media],
        received_at=_time(message.get("received_at")),
    )


def delivery_report(payload: dict[str, Any]) -> DeliveryReport | None:
    """What a ``message.sent`` or ``message.finalized`` event says of an outbound message, or None."""
    envelope = _envelope(payload, "outbound")
    status = envelope.recipient.get("status") if envelope is not None else None
    if envelope is None or not status:
        return None
    return DeliveryReport(envelope.id, envelope.sender, str(status))


def redacted(payload: dict[str, Any]) -> dict[str, Any]:
    """The event as kept once processed: without the text and media (they live in incoming_sms, where
    erasure finds them, and a Signal code is nobody's business afterwards)."""
    kept = copy.deepcopy(payload)
    message = (kept.get("data") or {}).get("payload")
    if isinstance(message, dict):
        message["text"], message["media"] = None, []
    return kept


async def apply(
    uow: UnitOfWork, p: Providers, usage: UsageBuffer, event_type: str, payload: dict[str, Any]
) -> str:
    """Act on one stored Telnyx event; what it did: ignored, no identity, signal code, duplicate, stored,
    status, stale status, unknown message."""
    if event_type in DELIVERY_REPORTS:
        return await _apply_delivery_report(uow, payload)
    sms = received_sms(payload) if event_type == MESSAGE_RECEIVED else None
    if sms is None:
        return "ignored"
    identity = await identities.by_phone_number(uow.session, sms.to_number, for_update=True)
    if identity is None:
        log.info("sms to a number of no identity", extra={"message": sms.telnyx_message_id})
        return "no identity"
    code = signal_registration.code_in(sms.text) if identity.signal_state == "awaiting_code" else None
    if code is not None and await signal_registration.apply_code(uow, p, identity, code):
        return "signal code"
    if not await identities.store_incoming_sms(uow.session, identity, sms):
        return "duplicate"
    # Before the commit, with a key fixed by the message: a retry after a failed commit pushes the same
    # event again, which the drain stores once.
    at = sms.received_at.timestamp() if sms.received_at else time.time()
    await usage.push(
        usage_record(identity.user_id, "sms_received", f"sms:{sms.telnyx_message_id}", "telnyx", at)
    )
    return "stored"


async def _apply_delivery_report(uow: UnitOfWork, payload: dict[str, Any]) -> str:
    report = delivery_report(payload)
    if report is None:
        return "ignored"
    # A send holds this lock from before Telnyx has the message until it is stored (identity/sms.py), so
    # waiting for it here finds the SMS of a report that came first.
    identity = await identities.by_phone_number(uow.session, report.from_number, for_update=True)
    if identity is None:
        return "no identity"
    moved = await identities.record_sms_status(
        uow.session, identity.id, report.telnyx_message_id, report.status
    )
    return "unknown message" if moved is None else "status" if moved else "stale status"
