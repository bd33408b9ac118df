"""Signal on the identity's number through signal-cli-rest-api: send to numbers or a group, read what was
received, list contacts and groups, fetch a received attachment.

**Received messages are never lost between polls.** signal-cli hands each envelope out once, so whoever
receives stores the batch before anything else: the keep-alive cron every minute, and each poll of
``GET /v1/signal/messages`` (``receive=true``) first. Rows are read past a cursor, ``signal_messages.id``,
which only grows; to make "every row below the cursor is visible" true, a poll takes the identity's row
lock (``FOR UPDATE``) before it stores or reads: that lock conflicts with the ``FOR KEY SHARE`` every insert's
foreign key takes, so it waits for any transaction that stored rows to commit, and an insert after it waits
for the poll to commit. Each stored ``message`` counts once as ``signal_received`` (``signal:<row id>``).
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Final

from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service, usage
from poindexter_cloud.identity.access import Caller
from poindexter_cloud.identity.errors import (
    AttachmentNotFound,
    EmptyMessage,
    IdentityPending,
    InvalidId,
    NoRecipients,
    SignalGroupUnknown,
    SignalPartlySent,
    SignalRecipientUnknown,
)
from poindexter_cloud.identity.models import SignalMessage
from poindexter_cloud.identity.schemas import (
    AttachmentContent,
    SignalAttachment,
    SignalContact,
    SignalContacts,
    SignalGroup,
    SignalMessagesPage,
    SignalMessageView,
    SignalSend,
    SignalSent,
)
from poindexter_cloud.identity.validation import attachments, phone_number
from poindexter_cloud.integrations import signal as signal_adapter
from poindexter_cloud.integrations.errors import ProviderError, SignalNotRegistered
from poindexter_cloud.integrations.signal import SignalAdapter

log = logging.getLogger(__name__)

GROUP_PREFIX: Final = "group."
KINDS: Final = ("message", "receipt", "typing", "sync", "call", "other")
_ID_CHARACTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_.")


def group_id(internal_id: str | None) -> str | None:
    """The id a send takes for a group signal-cli names ``internal_id`` (as signal-cli-rest-api forms it:
    ``group.`` + base64 of the internal id)."""
    if not internal_id:
        return None
    return GROUP_PREFIX + base64.b64encode(internal_id.encode()).decode()


def _data_uri(content_type: str, filename: str, data: bytes) -> str:
    """signal-cli-rest-api's attachment form; ``;`` and ``,`` would end the name early, so they go."""
    name = filename.replace(";", "_").replace(",", "_")
    return f"data:{content_type};filename={name};base64,{base64.b64encode(data).decode()}"


async def send(
    signal: SignalAdapter, resources: Resources, caller: Caller, request: SignalSend
) -> SignalSent:
    numbers = [phone_number(value, f"recipients[{i}]") for i, value in enumerate(request.recipients)]
    group = request.group_id
    if group is not None and (not group.startswith(GROUP_PREFIX) or set(group) - _ID_CHARACTERS):
        raise InvalidId(
            "group_id must be a group id as GET /v1/signal/contacts lists it.", details={"field": "group_id"}
        )
    if bool(numbers) == (group is not None):
        raise NoRecipients("Give recipients (Signal numbers) or one group_id, not both.")
    files = attachments(request.attachments, resources.settings.identity_max_attachment_bytes)
    if not request.message and not files:
        raise EmptyMessage("Give a message or attachments.")
    await caller.admit()
    try:
        timestamp = await signal.send(
            caller.number,
            numbers or [group or ""],
            request.message,
            [_data_uri(f.content_type, f.filename, f.data) for f in files],
        )
    except signal_adapter.SignalRecipientUnknown:
        raise SignalRecipientUnknown(
            "A recipient has no Signal account.", details={"recipients": numbers}
        ) from None
    except signal_adapter.SignalGroupUnknown as exc:
        raise SignalGroupUnknown(exc.message, details={"group_id": group}) from None
    except signal_adapter.SignalPartlySent:
        raise SignalPartlySent(
            "Signal reached only some of the group's members; sending again reaches the others twice."
        ) from None
    except SignalNotRegistered:
        raise IdentityPending(
            "The Signal account is being registered again; try again shortly.", details={"part": "signal"}
        ) from None
    record = usage.record(
        caller.identity.user_id,
        caller.principal.api_key_id,
        usage.SIGNAL_SENT,
        f"signal-out:{caller.identity.id}:{timestamp}",
        "signal",
    )
    await usage.push(resources, [record])
    return SignalSent(timestamp, numbers, group)


def _attachment_view(item: Any) -> SignalAttachment:
    data = item if isinstance(item, dict) else {}
    size = data.get("size")
    return SignalAttachment(
        id=str(data.get("id") or ""),
        content_type=data.get("contentType"),
        filename=data.get("filename"),
        size=size if isinstance(size, int) else None,
    )


def message_view(row: SignalMessage) -> SignalMessageView:
    return SignalMessageView(
        id=row.id,
        kind=row.kind,
        source=row.source,
        source_uuid=row.source_uuid,
        source_name=row.source_name,
        timestamp=row.signal_timestamp,
        group_id=group_id(row.group_id),
        body=row.body,
        attachments=[_attachment_view(item) for item in row.attachments or ()],
        received_at=row.received_at,
    )


async def _receive(uow: UnitOfWork, resources: Resources, signal: SignalAdapter, caller: Caller) -> None:
    """Take what signal-cli holds for the account and store it (in the poll's transaction, under the row
    lock). A failure only means nothing new this time: the keep-alive receives too."""
    await uow.session.connection()  # a database outage leaves the envelopes with signal-cli
    try:
        batch = await signal.receive(caller.number)
    except ProviderError as exc:
        log.info(
            "signal receive on poll failed", extra={"identity": str(caller.identity.id), "error": exc.code}
        )
        batch = []
    identity = caller.identity
    await service.get(uow.session, identity.user_id, for_update=True)
    await service.store_signal_envelopes(uow, resources, identity.id, identity.user_id, batch)


async def messages(
    uow: UnitOfWork,
    resources: Resources,
    signal: SignalAdapter,
    caller: Caller,
    *,
    after: int,
    limit: int,
    kind: str,
    receive: bool,
) -> SignalMessagesPage:
    """Stored messages past ``after`` (receiving first, with ``receive``). The caller checked the account is
    registered."""
    await caller.admit()
    if receive:
        await _receive(uow, resources, signal, caller)
    else:
        await service.get(uow.session, caller.identity.user_id, for_update=True)
    kinds = None if kind == "all" else [kind]
    rows = await service.signal_messages_after(uow.session, caller.identity.id, after, limit + 1, kinds)
    shown = [message_view(row) for row in rows[:limit]]
    return SignalMessagesPage(shown, shown[-1].id if shown else after, len(rows) > limit)


async def contacts(signal: SignalAdapter, caller: Caller) -> SignalContacts:
    await caller.admit()
    people = await signal.contacts(caller.number)
    groups = await signal.groups(caller.number)

    def contact(entry: dict[str, Any]) -> SignalContact:
        profile = entry.get("profile") if isinstance(entry.get("profile"), dict) else {}
        profile_name = str((profile or {}).get("given_name") or "") or None
        return SignalContact(
            number=entry.get("number") or None,
            uuid=entry.get("uuid") or None,
            name=str(entry.get("name") or "") or profile_name,
            profile_name=profile_name,
        )

    return SignalContacts(
        contacts=[contact(entry) for entry in people],
        groups=[
            SignalGroup(
                id=str(entry.get("id") or ""),
                name=str(entry.get("name") or ""),
                description=entry.get("description") or None,
                members=[str(m) for m in entry.get("members") or () if isinstance(m, str)],
            )
            for entry in groups
            if entry.get("id")
        ],
    )


async def attachment(
    uow: UnitOfWork, signal: SignalAdapter, caller: Caller, attachment_id: str
) -> AttachmentContent:
    """An attachment of a message this identity received (never another account's: signal-cli keeps
    everyone's in one place, so the stored messages decide)."""
    if not attachment_id or len(attachment_id) > 200 or set(attachment_id) - _ID_CHARACTERS:
        raise InvalidId(
            f"{attachment_id!r} is not a Signal attachment id.", details={"field": "attachment_id"}
        )
    await caller.admit()
    found = await service.signal_attachment(uow.session, caller.identity.id, attachment_id)
    if found is None:
        raise AttachmentNotFound(f"No Signal message of this identity has the attachment {attachment_id}.")
    try:
        data, content_type = await signal.attachment(attachment_id)
    except signal_adapter.SignalAttachmentMissing:
        raise AttachmentNotFound(f"signal-cli no longer holds the attachment {attachment_id}.") from None
    return AttachmentContent(
        found.get("filename"),
        found.get("contentType") or content_type,
        len(data),
        base64.b64encode(data).decode(),
    )
