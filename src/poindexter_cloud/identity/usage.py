"""Usage events of the identity API (``email_sent``, ``email_received``, ``signal_sent``, ``signal_received``,
``sms_sent``; ``sms_received`` is counted when the webhook stores the SMS), pushed to billing's usage buffer
and rolled into usage_monthly by ``sync_usage``.

Every event's ``request_id`` is fixed by the message it counts, so an event pushed twice is stored once: a
sent message by the provider's id for it, a received email by the mailbox's id for it (``email-in:...``),
a received Signal message by its row (``signal:<id>``, counted by ``service.store_signal_envelopes`` for
whichever stores the row, the poll or the keep-alive: once).

**When an email counts as received**: the first time Dex lists it (``GET /v1/email/inbox``) or fetches it
(``GET /v1/email/messages/{id}``), and only if the mailbox did not send it itself (no ``SENT`` label). The
``counted_emails`` row is written in the request's transaction and the event is pushed once that has
committed, with the row's time, so a repeated push lands on the same event; a push lost to a Redis failure
right after the commit is logged, not retried.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Final

import msgspec

from poindexter_cloud.billing.usage_buffer import UsageBuffer, UsageRecord, stream_for, usage_record
from poindexter_cloud.core.resources import Resources

log = logging.getLogger(__name__)

EMAIL_SENT: Final = "email_sent"
EMAIL_RECEIVED: Final = "email_received"
SIGNAL_SENT: Final = "signal_sent"
SIGNAL_RECEIVED: Final = "signal_received"
SMS_SENT: Final = "sms_sent"


def record(
    user_id: uuid.UUID,
    api_key_id: uuid.UUID | None,
    event_type: str,
    key: str,
    provider: str,
    at: float | None = None,
) -> UsageRecord:
    """One counted message of the identity API, attributed to the key that made the call."""
    made = usage_record(user_id, event_type, key, provider, time.time() if at is None else at)
    return msgspec.structs.replace(made, api_key_id=api_key_id)


async def push(resources: Resources, records: Sequence[UsageRecord]) -> None:
    """Hand the events to the usage buffer. A failure is logged, not raised: the message was sent (or
    shown) already, and answering an error would make Dex send it again."""
    buffer = UsageBuffer(resources.redis, stream_for(resources.settings.queue_name))
    for item in records:
        try:
            await buffer.push(item)
        except Exception as exc:  # Redis unreachable: the one event is lost, the call still succeeded
            log.error(
                "usage event not recorded",
                extra={"event_type": item.event_type, "key": item.request_id, "error": type(exc).__name__},
            )
