"""How a message travels once signal-cli has sent it: into the inbox of one of this API's accounts (until
its next ``GET /v1/receive``), or onto the phone of a Signal user outside the sandbox, which acknowledges it
at once with a delivery receipt, as Signal apps do."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from . import envelopes
from .recipients import rest_group_id
from .store import STATE, Account, Attachment, Group, OutsideUser, Party


def _phone_view(
    sender: Party, timestamp: int, message: str | None, attachments: Sequence[Attachment], group: Group | None
) -> dict[str, Any]:
    return {
        "from": sender.number,
        "from_uuid": sender.uuid,
        "from_name": sender.profile_name,
        "timestamp": timestamp,
        "message": message,
        "attachments": [
            {
                "filename": item.filename,
                "content_type": item.content_type,
                "size": len(item.data),
                "base64": base64.b64encode(item.data).decode(),
            }
            for item in attachments
        ],
        "group": None if group is None else {"id": rest_group_id(group), "name": group.name},
    }


def deliver(
    sender: Party,
    recipient: Account | OutsideUser,
    timestamp: int,
    message: str | None,
    attachments: Sequence[Attachment] = (),
    group: Group | None = None,
) -> None:
    """One copy of a message reaches one recipient. The disappearing-message timer is the conversation's: the
    group's, or the one the sending account set for this contact."""
    if isinstance(sender, Account):
        sender.known.setdefault(recipient.number, recipient.uuid)
    if group is not None:
        expires = group.expiration_seconds
    else:
        contact = sender.contacts.get(recipient.number) if isinstance(sender, Account) else None
        expires = contact.expiration_seconds if contact is not None else 0
    if isinstance(recipient, Account):
        recipient.known.setdefault(sender.number, sender.uuid)
        STATE.attachments.update((item.id, item) for item in attachments)  # signal-cli downloads them
        info = envelopes.group_info(group) if group is not None else None
        recipient.enqueue(
            envelopes.data_message(recipient, sender, timestamp, message, attachments, expires, info)
        )
        return
    recipient.received.append(_phone_view(sender, timestamp, message, attachments, group))
    if isinstance(sender, Account):
        sender.enqueue(envelopes.receipt(sender, recipient, [timestamp], "delivery"))


def announce_group(group: Group, creator: Account, timestamp: int) -> None:
    """The group update every other member's signal-cli receives when a group is created."""
    for number in group.members:
        member = STATE.registered(number)
        if member is not None and member is not creator:
            member.known.setdefault(creator.number, creator.uuid)
            member.enqueue(
                envelopes.data_message(
                    member,
                    creator,
                    timestamp,
                    None,
                    (),
                    group.expiration_seconds,
                    envelopes.group_info(group, "UPDATE"),
                )
            )


def send_to_group(
    sender: Party, group: Group, timestamp: int, message: str | None, attachments: Sequence[Attachment] = ()
) -> list[str]:
    """Deliver to every member but the sender; the members without a working Signal account, which signal-cli
    reports as ``Unregistered user``."""
    unreachable = []
    for number in group.members:
        if number == sender.number:
            continue
        member = STATE.party(number)
        if member is None:
            unreachable.append(number)
        else:
            deliver(sender, member, timestamp, message, attachments, group)
    return unreachable
