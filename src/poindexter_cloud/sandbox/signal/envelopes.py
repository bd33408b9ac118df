"""What ``GET /v1/receive`` returns: signal-cli's JSON output (``JsonMessageEnvelope`` and friends in
signal-cli's ``json`` package), one ``{"envelope": {...}, "account": ...}`` per received message. The envelope
always has ``source`` (the number, else the ACI), ``sourceNumber``, ``sourceUuid``, ``sourceName`` (the
receiving account's contact name for the sender, else the sender's profile name), ``sourceDevice``, the three
timestamps, and one of ``dataMessage`` / ``receiptMessage``; optional parts are left out, not null."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .store import Account, Attachment, Group, Party, now_ms


def _envelope(account: Account, sender: Party, timestamp: int, **body: Any) -> dict[str, Any]:
    server = now_ms()
    return {
        "envelope": {
            "source": sender.number,
            "sourceNumber": sender.number,
            "sourceUuid": sender.uuid,
            "sourceName": account.shown_name(sender),
            "sourceDevice": 1,
            "timestamp": timestamp,
            "serverReceivedTimestamp": server,
            "serverDeliveredTimestamp": server,
            **body,
        },
        "account": account.number,
    }


def attachment(item: Attachment) -> dict[str, Any]:
    return {
        "contentType": item.content_type,
        "filename": item.filename,
        "id": item.id,
        "size": len(item.data),
        "width": None,
        "height": None,
        "caption": None,
        "uploadTimestamp": item.uploaded_at,
    }


def group_info(group: Group, kind: str = "DELIVER") -> dict[str, Any]:
    """``kind``: ``DELIVER`` for a message in the group, ``UPDATE`` for a change to it (creation included)."""
    return {"groupId": group.id, "groupName": group.name, "revision": group.revision, "type": kind}


def data_message(
    account: Account,
    sender: Party,
    timestamp: int,
    message: str | None,
    attachments: Sequence[Attachment] = (),
    expires_in_seconds: int = 0,
    group: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "timestamp": timestamp,
        "message": message,
        "expiresInSeconds": expires_in_seconds,
        "isExpirationUpdate": False,
        "viewOnce": False,
    }
    if attachments:
        data["attachments"] = [attachment(item) for item in attachments]
    if group is not None:
        data["groupInfo"] = group
    return _envelope(account, sender, timestamp, dataMessage=data)


def receipt(account: Account, sender: Party, timestamps: list[int], kind: str) -> dict[str, Any]:
    """A delivery (``kind="delivery"``) or read receipt from ``sender`` for messages ``account`` sent."""
    when = now_ms()
    body = {
        "when": when,
        "isDelivery": kind == "delivery",
        "isRead": kind == "read",
        "isViewed": False,
        "timestamps": timestamps,
    }
    return _envelope(account, sender, when, receiptMessage=body)
