"""What an inbound SMS on one of our numbers does (a stored ``message.received`` Telnyx event, in the
``process_telnyx_event`` job): a Signal code for a number awaiting one completes its registration; any other
SMS is stored for the identity (once, by Telnyx's message id) and counted as usage (``sms_received``)."""

from __future__ import annotations

import copy
import logging
import time
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


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def received_sms(payload: dict[str, Any]) -> ReceivedSms | None:
    """The SMS a ``message.received`` event's envelope describes, or None if it is not one."""
    data = payload.get("data") or {}
    message = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(message, dict) or message.get("direction") != "inbound":
        return None
    recipients = message.get("to") or []
    sender = message.get("from") or {}
    to = recipients[0].get("phone_number") if recipients and isinstance(recipients[0], dict) else None
    if not message.get("id") or not to or not isinstance(sender, dict) or not sender.get("phone_number"):
        return None
    media = [m.get("url") for m in message.get("media") or () if isinstance(m, dict) and m.get("url")]
    return ReceivedSms(
        telnyx_message_id=str(message["id"]),
        from_number=str(sender["phone_number"]),
        to_number=str(to),
        text=str(message.get("text") or ""),
        media_urls=[str(url) for url in media],
        received_at=_time(message.get("received_at")),
    )


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
    """Act on one stored Telnyx event; what it did: ignored, no identity, signal code, duplicate, stored."""
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
