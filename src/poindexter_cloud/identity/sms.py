"""SMS on the identity's number: send through Telnyx (recorded in ``outgoing_sms``), and list what was
received (``incoming_sms``, stored by the Telnyx webhook) and sent, past a cursor.

Both tables take their ``seq`` from one sequence and are written under the identity's row lock, and a list
reads under it too, so a cursor never skips a message stored later with a smaller number (the reasoning is
``signal_messaging``'s).
"""

from __future__ import annotations

import functools
from typing import Final
from urllib.parse import urlsplit

from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service, usage
from poindexter_cloud.identity.access import Caller
from poindexter_cloud.identity.errors import (
    EmptyMessage,
    InvalidAttachment,
    InvalidPhoneNumber,
    MessageTooLong,
    SmsRefused,
)
from poindexter_cloud.identity.models import IncomingSms, OutgoingSms
from poindexter_cloud.identity.schemas import Sms, SmsPage, SmsSend
from poindexter_cloud.identity.validation import phone_number, sms_text
from poindexter_cloud.integrations.telnyx import TelnyxAdapter, TelnyxRefused

# Telnyx's error codes for a recipient it cannot text, and for a text too long to deliver.
BAD_RECIPIENT_CODES: Final = frozenset({"40310", "40311", "40300", "10016"})
TOO_LONG_CODES: Final = frozenset({"40302"})


def _media_url(value: str, index: int) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidAttachment(
            f"media_urls[{index}] must be an http(s) URL Telnyx can fetch.",
            details={"field": f"media_urls[{index}]"},
        )
    return value


def view(row: IncomingSms | OutgoingSms) -> Sms:
    if isinstance(row, OutgoingSms):
        return Sms(
            id=row.id,
            cursor=row.seq,
            direction="outbound",
            from_number=row.from_number,
            to_number=row.to_number,
            text=row.body,
            media_urls=list(row.media_urls or ()),
            status=row.status,
            parts=row.parts,
            telnyx_message_id=row.telnyx_message_id,
            at=row.created_at,
        )
    return Sms(
        id=row.id,
        cursor=row.seq,
        direction="inbound",
        from_number=row.from_number,
        to_number=row.phone_number,
        text=row.body,
        media_urls=list(row.media_urls or ()),
        status=None,
        parts=None,
        telnyx_message_id=row.telnyx_message_id,
        at=row.received_at or row.created_at,
    )


async def send(
    telnyx: TelnyxAdapter,
    uow: UnitOfWork,
    resources: Resources,
    caller: Caller,
    request: SmsSend,
) -> Sms:
    to = phone_number(request.to, "to")
    text = sms_text(request.text) if request.text else None
    media = [_media_url(url, i) for i, url in enumerate(request.media_urls)]
    if text is None and not media:
        raise EmptyMessage("Give text or media_urls.")
    await caller.admit()
    identity = caller.identity
    # Locked from before Telnyx has the message until it is stored: its delivery reports, which lock the
    # identity too, find it stored.
    await service.get(uow.session, identity.user_id, for_update=True)
    try:
        sent = await telnyx.send_sms(caller.number, to, text, media)
    except TelnyxRefused as exc:
        if exc.telnyx_code in BAD_RECIPIENT_CODES:
            raise InvalidPhoneNumber(
                f"Telnyx cannot text {to}.", details={"field": "to", "value": to}
            ) from None
        if exc.telnyx_code in TOO_LONG_CODES:
            raise MessageTooLong(
                "Telnyx found the text too long to deliver.", details={"field": "text"}
            ) from None
        raise SmsRefused("Telnyx refused the SMS.", details={"telnyx_code": exc.telnyx_code}) from None
    row = await service.store_outgoing_sms(
        uow.session,
        identity.id,
        service.SentSmsRecord(sent.id, caller.number, to, text or "", media, sent.status, sent.parts),
    )
    record = usage.record(
        identity.user_id,
        caller.principal.api_key_id,
        usage.SMS_SENT,
        f"sms-out:{sent.id}",
        "telnyx",
        row.created_at.timestamp(),
    )
    uow.after_commit(functools.partial(usage.push, resources, [record]))
    return view(row)


async def messages(uow: UnitOfWork, caller: Caller, *, after: int, limit: int, direction: str) -> SmsPage:
    await caller.admit()
    await service.get(uow.session, caller.identity.user_id, for_update=True)
    rows = await service.sms_after(uow.session, caller.identity.id, after, limit + 1, direction)
    shown = [view(row) for row in rows[:limit]]
    return SmsPage(shown, shown[-1].cursor if shown else after, len(rows) > limit)
