"""Messages: ``POST /v2/send`` (to accounts of this API, to Signal users outside the sandbox, or to a group),
``GET /v1/receive/{number}`` (normal mode: what arrived since the last receive, each envelope once), and the
attachments received (``/v1/attachments``)."""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
import uuid
from collections.abc import Sequence
from typing import Any, Final

from litestar import Request, Response, get, post

from . import envelopes
from .delivery import deliver, send_to_group
from .recipients import Recipients, classify, group_for, resolve
from .store import STATE, Account, Attachment, now_ms
from .wire import (
    INVALID_REQUEST,
    BadBody,
    Refused,
    answer,
    bool_field,
    decode_base64,
    error,
    not_registered,
    required_body,
    strings_field,
    text_field,
)

MAX_RECEIVE_WAIT: Final = 60.0  # seconds
RECEIVE_FLAGS: Final = (
    "ignore_attachments",
    "ignore_stories",
    "ignore_avatars",
    "ignore_stickers",
    "send_read_receipts",
)
EMPTY_MESSAGE: Final = (
    "Sending empty message is not allowed, either a message, attachment or sticker must be given.\n"
)
# The sandbox's accounts have no sticker packs installed.
NO_STICKER_PACK: Final = "Failed to send sticker: Sticker pack not found\n"
_SIGNATURES: Final = (
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"GIF87a", "image/gif", ".gif"),
    (b"GIF89a", "image/gif", ".gif"),
    (b"%PDF-", "application/pdf", ".pdf"),
    (b"OggS", "audio/ogg", ".ogg"),
)

state = STATE


# ---------------------------------------------------------------------------------------------- attachments


def _content_type(data: bytes, filename: str) -> tuple[str, str]:
    """The type signal-cli gives the file (from its name, else its bytes) and the extension the REST API
    names an unnamed file with. A ``data:<mime>`` prefix plays no part: the REST API drops it."""
    guessed = mimetypes.guess_type(filename)[0] if filename else None
    for magic, mime, extension in _SIGNATURES:
        if data.startswith(magic):
            return guessed or mime, extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return guessed or "image/webp", ".webp"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return guessed or "application/octet-stream", ".bin"
    return guessed or "text/plain", ".txt"


def parse_attachment(value: str) -> Attachment:
    """``<base64>``, ``data:<mime>;base64,<base64>`` or ``data:<mime>;filename=<name>;base64,<base64>``: the
    file as it will travel (stored under ``/v1/attachments`` once an account here receives it)."""
    filename = ""
    payload = value
    marker = value.rfind("base64,")
    if "data:" in value and marker != -1:
        payload = value[marker + len("base64,") :]
        for part in value[: max(marker - 1, 0)].split(";"):
            if part.startswith("filename="):
                filename = part.removeprefix("filename=")
    if not payload:
        raise Refused("The base64 data does not exist.")
    try:
        data = decode_base64(payload)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    content_type, extension = _content_type(data, filename)
    attachment_id = secrets.token_urlsafe(15).replace("-", "A").replace("_", "B") + extension
    return Attachment(attachment_id, content_type, filename or f"{uuid.uuid4()}{extension}", data, now_ms())


# ---------------------------------------------------------------------------------------------- send


def _partial_failure(unreachable: Sequence[str], timestamp: int) -> str:
    """signal-cli's plain-text report when some recipients failed; signal-cli-rest-api 0.99 cannot read a
    timestamp out of it, so it answers 400 with the report, newlines removed (the others got the message)."""
    lines = [
        "Failed to send (some) messages:",
        *(f'Unregistered user "{n}"' for n in unreachable),
        str(timestamp),
    ]
    return "".join(lines)


def _send(
    sender: Account, recipients: Recipients, message: str, attachments: list[Attachment], sticker: str
) -> Response[bytes]:
    """What signal-cli's ``send`` does once the REST API has checked the request, in signal-cli's order."""
    if not message and not attachments and not sticker:
        return error(EMPTY_MESSAGE)
    if sticker:
        return error(NO_STICKER_PACK)
    try:
        group = group_for(sender, recipients.group_ids[0], sending=True) if recipients.group_ids else None
        targets = [resolve(identifier) for identifier in [*recipients.numbers, *recipients.usernames]]
    except Refused as exc:
        return error(str(exc))
    timestamp = state.timestamp()
    if group is not None:
        unreachable = send_to_group(sender, group, timestamp, message or None, attachments)
        if unreachable:
            return error(_partial_failure(unreachable, timestamp))
    for target in targets:
        if target is not sender:  # a note to self only reaches the account's other devices: none here
            deliver(sender, target, timestamp, message or None, attachments)
    return answer({"timestamp": str(timestamp)}, 201)


@post("/v2/send", include_in_schema=False)
async def send(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``{"number", "recipients": [...], "message", "base64_attachments": [...]}`` -> 201 ``{"timestamp"}``
    (the message's Signal timestamp, in ms, as a string)."""
    try:
        body = await required_body(request)
        number = text_field(body, "number")
        recipients = strings_field(body, "recipients")
        single = text_field(body, "recipient")
        message = text_field(body, "message")
        raw_attachments = strings_field(body, "base64_attachments")
        sticker = text_field(body, "sticker")
        view_once = bool_field(body, "view_once")
    except BadBody:
        return error(INVALID_REQUEST)
    if single:
        recipients.append(single)
    if not recipients:
        return error("Couldn't process request - please provide at least one recipient")
    if not number:
        return error("Couldn't process request - please provide a valid number")
    if sticker and ":" not in sticker:
        return error("Couldn't process request - please provide valid sticker delimiter")
    if view_once and not raw_attachments:
        return error("'view_once' can only be set for image attachments!")
    try:
        sorted_out = classify(recipients)
        attachments = [parse_attachment(value) for value in raw_attachments]
    except Refused as exc:
        return error(str(exc))
    sender = state.registered(number)
    if sender is None:
        return error(not_registered(number))
    return _send(sender, sorted_out, message, attachments, sticker)


# ---------------------------------------------------------------------------------------------- receive


def _send_receipts(account: Account, taken: Sequence[dict[str, Any]], kinds: Sequence[str]) -> None:
    """Acknowledge what ``account`` just received, as signal-cli does: a receipt to each sender that is an
    account of this API (outside users' phones show theirs on their own)."""
    by_sender: dict[str, list[int]] = {}
    for item in taken:
        envelope = item["envelope"]
        if "dataMessage" in envelope:
            by_sender.setdefault(envelope["sourceNumber"], []).append(envelope["timestamp"])
    for number, timestamps in by_sender.items():
        sender = state.registered(number)
        if sender is None or sender is account:
            continue
        for kind in kinds:
            sender.enqueue(envelopes.receipt(sender, account, timestamps, kind))


@get("/v1/receive/{number:str}", include_in_schema=False)
async def receive(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    """Every envelope received since the last call, oldest first, then they are gone. Waits up to ``timeout``
    seconds (default 1) while nothing has arrived; ``max_messages`` caps how many are taken."""
    timeout_text = request.query_params.get("timeout", "1")
    max_text = request.query_params.get("max_messages", "0")
    if not re.fullmatch(r"[+-]?\d+", timeout_text):
        return error("Couldn't process request - timeout needs to be numeric!")
    if not re.fullmatch(r"[+-]?\d+", max_text):
        return error("Couldn't process request - max_messages needs to be numeric!")
    flags: dict[str, bool] = {}
    for name in RECEIVE_FLAGS:
        value = request.query_params.get(name, "false")
        if value not in ("true", "false"):
            return error(f"Couldn't process request - {name} parameter needs to be either 'true' or 'false'")
        flags[name] = value == "true"
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    # signal-cli takes a negative timeout as "wait for ever"; the sandbox caps every wait.
    wait = int(timeout_text)
    await account.wait_for_envelopes(MAX_RECEIVE_WAIT if wait < 0 else min(wait, MAX_RECEIVE_WAIT))
    limit = int(max_text)
    taken: list[dict[str, Any]] = []
    while account.inbox and (limit <= 0 or len(taken) < limit):
        taken.append(account.inbox.popleft())
    _send_receipts(account, taken, ["delivery", "read"] if flags["send_read_receipts"] else ["delivery"])
    return Response(
        content=json.dumps(taken).encode(), status_code=200, media_type="text/plain; charset=utf-8"
    )


@get("/v1/attachments", include_in_schema=False)
async def list_attachments() -> Response[bytes]:
    return answer(sorted(state.attachments))


@get("/v1/attachments/{attachment:str}", include_in_schema=False)
async def serve_attachment(attachment: str) -> Response[bytes]:
    item = state.attachments.get(attachment)
    if item is None:
        return error("No attachment with that name found", 404)
    return Response(content=item.data, status_code=200, media_type=item.content_type)


HANDLERS = [send, receive, list_attachments, serve_attachment]
