"""Gmail API (``/gmail/v1/users/{userId}/...``) for the delegated user: ``userId`` is ``me`` or their own
address (another user's is 403 "Delegation denied"; a token without a delegated user is 400 "Precondition
check failed.", as Gmail answers a service account acting as itself).

``messages.send`` takes the message base64url in JSON (``raw``), or as a media upload on
``/upload/gmail/v1/users/{userId}/messages/send`` (``uploadType=media``: the message alone, ``multipart``:
``multipart/related`` with the JSON metadata first; ``message/*`` only, up to 35 MB). Sending delivers at
once: every To/Cc/Bcc address of the sandbox domain that has a mailbox gets a copy in
its INBOX (without the Bcc header); an address of the domain without one gets the sender a bounce; other
addresses are recorded in the outbound log (``GET /google/_control/outbound``). The sender keeps a SENT
copy. As Gmail does, a From that is not the user's own address (or alias) is rewritten to it, and missing
Date and Message-ID headers are added. A message joins a thread when ``threadId`` names it (or In-Reply-To /
References name one of its messages) and the subjects match once Re:/Fwd: prefixes are stripped.
"""

from __future__ import annotations

import base64
import binascii
import re
from email.utils import formataddr
from typing import Any, Final

from litestar import Request, Response, delete, get, post

from . import mime
from .auth import (
    GMAIL_ATTACHMENT,
    GMAIL_DELETE,
    GMAIL_GET,
    GMAIL_LABELS,
    GMAIL_LIST,
    GMAIL_METADATA_ONLY,
    GMAIL_MODIFY,
    GMAIL_PROFILE,
    GMAIL_SEND,
    authorize,
)
from .common import json_body, json_object, query, query_all, query_bool, query_int
from .errors import GoogleError, answer, invalid
from .search import Candidate, compile_query
from .store import STATE, Grant, Mailbox, Message, User, b64url, b64url_decode, now

SERVICE: Final = "gmail.googleapis.com"
UPLOAD_MAX_BYTES: Final = 36_700_160  # users.messages.send's mediaUpload maxSize (35 MB)
BASE: Final = "/gmail/v1/users/{user_id:str}"
_PREFIX: Final = "caribou.api.proto.MailboxService."
SYSTEM_LABELS: Final = (
    "CHAT",
    "SENT",
    "INBOX",
    "IMPORTANT",
    "TRASH",
    "DRAFT",
    "SPAM",
    "CATEGORY_FORUMS",
    "CATEGORY_UPDATES",
    "CATEGORY_PERSONAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_SOCIAL",
    "STARRED",
    "UNREAD",
)
_MODIFIABLE: Final = frozenset(SYSTEM_LABELS) - {"SENT", "DRAFT", "CHAT"}
RECEIVED_LABELS: Final = ("UNREAD", "CATEGORY_PERSONAL", "INBOX")
_ID: Final = re.compile(r"^[0-9a-f]{1,24}$")


def _not_found() -> GoogleError:
    return GoogleError(404, "Requested entity was not found.", reason="notFound")


# ---------------------------------------------------------------------------------------------- state


def parsed(message: Message) -> Any:
    if message.parsed is None:
        message.parsed = mime.parse(message.raw)
    return message.parsed


def _candidate(message: Message) -> Candidate:
    if message.facts is None:
        message.facts = mime.facts(parsed(message), len(message.raw))
    return Candidate(message.facts, frozenset(message.labels), message.internal_date)


def _touch(box: Mailbox, message: Message) -> None:
    box.history_id += 1
    message.history_id = box.history_id


def find_thread(box: Mailbox, raw_message: Any, explicit: str | None) -> str | None:
    """The thread a new message joins in ``box``: the explicit one or one its references name, provided the
    subjects match (without Re:/Fwd: prefixes)."""
    subject = mime.subject_key(mime.header(raw_message, "Subject"))

    def same_subject(thread_id: str) -> bool:
        return any(
            mime.subject_key(mime.header(parsed(m), "Subject")) == subject
            for m in box.messages.values()
            if m.thread_id == thread_id
        )

    if explicit:
        if not any(m.thread_id == explicit for m in box.messages.values()):
            raise _not_found()
        return explicit if same_subject(explicit) else None
    references = mime.message_ids(mime.header(raw_message, "References"))
    references += mime.message_ids(mime.header(raw_message, "In-Reply-To"))
    for reference in reversed(references):
        found = box.messages.get(box.by_message_id.get(reference.lower(), ""))
        if found is not None and same_subject(found.thread_id):
            return found.thread_id
    return None


def store(
    box: Mailbox,
    raw: bytes,
    labels: list[str],
    *,
    thread_id: str | None = None,
    internal_date: int | None = None,
) -> Message:
    """Put ``raw`` (CRLF) in ``box`` as a new message."""
    message_id = STATE.message_id()
    message = Message(
        id=message_id,
        thread_id=thread_id or message_id,
        labels=list(dict.fromkeys(labels)),
        internal_date=internal_date if internal_date is not None else int(now() * 1000),
        raw=raw,
        history_id=0,
    )
    _touch(box, message)
    box.messages[message_id] = message
    header_id = mime.header(parsed(message), "Message-ID").strip().lower()
    if header_id:
        box.by_message_id.setdefault(header_id, message_id)
    return message


def deliver(
    user: User, raw: bytes, *, labels: tuple[str, ...] = RECEIVED_LABELS, internal_date: int | None = None
) -> Message:
    """Deliver a received message to ``user``'s mailbox (adds ``Delivered-To``, threads by references)."""
    box = STATE.mailboxes[user.id]
    copy = mime.edit_headers(raw, remove=frozenset({"bcc"}), prepend=[("Delivered-To", user.primary_email)])
    thread = find_thread(box, mime.parse(copy), None)
    return store(box, copy, list(labels), thread_id=thread, internal_date=internal_date)


def route(sender: User, raw: bytes, addresses: list[str]) -> list[str]:
    """Hand ``raw`` from ``sender`` to each of ``addresses``: a copy for each mailbox of the sandbox domain,
    an entry in the outbound log for each outside address. Returns the domain's addresses that have no
    mailbox (Gmail bounces those)."""
    raw = mime.edit_headers(raw, remove=frozenset({"bcc"}))
    email = mime.parse(raw)
    missing: list[str] = []
    delivered: set[str] = set()
    for address in addresses:
        if not STATE.in_domain(address):
            STATE.outbound.append(
                {
                    "from": sender.primary_email,
                    "to": address,
                    "subject": mime.header(email, "Subject"),
                    "message_id": mime.header(email, "Message-ID"),
                    "sent_at": now(),
                    "raw": base64.b64encode(raw).decode(),
                }
            )
            continue
        recipient = STATE.user_by_key(address)
        if recipient is None:
            missing.append(address)
        elif recipient.id not in delivered:
            delivered.add(recipient.id)
            deliver(recipient, raw)
    return missing


def _bounce(sender: User, original: Message, missing: list[str]) -> None:
    notice = mime.build(
        {
            "from": "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            "to": sender.primary_email,
            "subject": "Delivery Status Notification (Failure)",
            "text": "Address not found\n\nYour message wasn't delivered to "
            + ", ".join(missing)
            + " because the address couldn't be found, or is unable to receive mail.\n",
            "in_reply_to": mime.header(parsed(original), "Message-ID"),
            "references": mime.header(parsed(original), "Message-ID"),
        }
    )
    box = STATE.mailboxes[sender.id]
    store(box, notice, list(RECEIVED_LABELS), thread_id=original.thread_id)


def _acting(grant: Grant, user_id: str) -> tuple[User, Mailbox]:
    if grant.subject is None:
        raise GoogleError(
            400, "Precondition check failed.", reason="failedPrecondition", status="FAILED_PRECONDITION"
        )
    me = STATE.user_by_key(grant.subject)
    assert me is not None  # authorize() answered 401 otherwise
    if user_id != "me" and STATE.user_by_key(user_id) is not me:
        raise GoogleError(403, f"Delegation denied for {me.primary_email}", reason="forbidden")
    return me, STATE.mailboxes[me.id]


def _call(
    request: Request[Any, Any, Any], user_id: str, scopes: frozenset[str], method: str
) -> tuple[Grant, User, Mailbox]:
    grant = authorize(request, scopes, SERVICE, _PREFIX + method)
    user, box = _acting(grant, user_id)
    return grant, user, box


def _message(box: Mailbox, message_id: str) -> Message:
    if not _ID.match(message_id):
        raise GoogleError(400, "Invalid id value", reason="invalidArgument")
    message = box.messages.get(message_id)
    if message is None:
        raise _not_found()
    return message


def _metadata_only(grant: Grant, scopes: frozenset[str]) -> bool:
    return bool(grant.scopes & scopes) and grant.scopes & scopes <= GMAIL_METADATA_ONLY


def render(message: Message, fmt: str = "full", metadata_headers: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.labels)}
    email = parsed(message)
    body["snippet"] = mime.snippet(email)
    if fmt == "full":
        body["payload"] = mime.payload(email, message.id)
    elif fmt == "metadata":
        body["payload"] = mime.metadata_payload(email, metadata_headers or [])
    body["sizeEstimate"] = len(message.raw)
    if fmt == "raw":
        body["raw"] = b64url(message.raw)
    body["historyId"] = str(message.history_id)
    body["internalDate"] = str(message.internal_date)
    return body


def _short(message: Message) -> dict[str, Any]:
    return {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.labels)}


# ---------------------------------------------------------------------------------------------- handlers


def _decode_raw(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise invalid(
            "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
            reason="invalidArgument",
        )
    try:
        return mime.normalize(b64url_decode(value))
    except (ValueError, binascii.Error):
        raise invalid("Invalid value for ByteString: raw", reason="invalidArgument") from None


@post(BASE + "/messages/send", status_code=200, include_in_schema=False)
async def send_message(request: Request[Any, Any, Any], user_id: str) -> Response[bytes]:
    """``users.messages.send``: ``{"raw": base64url RFC 822, "threadId"?: ...}``."""
    _, user, box = _call(request, user_id, GMAIL_SEND, "SendMessage")
    body = await json_body(request)
    return _send(user, box, _decode_raw(body.get("raw")), body.get("threadId"))


@post(
    "/upload" + BASE + "/messages/send",
    status_code=200,
    include_in_schema=False,
    request_max_body_size=UPLOAD_MAX_BYTES + 64 * 1024,  # the metadata and the multipart framing
)
async def upload_and_send(request: Request[Any, Any, Any], user_id: str) -> Response[bytes]:
    """``users.messages.send`` on the upload URL: the message as media, ``uploadType=media`` (the body is
    the RFC 822 message) or ``multipart`` (``multipart/related``: the JSON metadata, then the message)."""
    _, user, box = _call(request, user_id, GMAIL_SEND, "SendMessage")
    kind = query(request, "uploadType")
    content = await request.body()
    metadata: dict[str, Any] = {}
    if kind == "media":
        media_type, media = request.headers.get("content-type", ""), content
    elif kind == "multipart":
        metadata, media_type, media = _related_parts(request.headers.get("content-type", ""), content)
    else:
        raise invalid(f"Invalid upload type: {kind}" if kind else "Upload type required", reason="invalid")
    if not media_type.split(";")[0].strip().lower().startswith("message/"):
        raise invalid(
            f"Media type '{media_type}' is not supported. Valid media types: [message/*]",
            reason="badContent",
        )
    if len(media) > UPLOAD_MAX_BYTES:
        raise GoogleError(413, "Request Too Large", reason="uploadTooLarge")
    if not media.strip():
        raise invalid("Recipient address required", reason="invalidArgument")
    return _send(user, box, mime.normalize(media), metadata.get("threadId"))


def _related_parts(content_type: str, content: bytes) -> tuple[dict[str, Any], str, bytes]:
    """A ``multipart/related`` upload's metadata (JSON), and its media part's type and bytes."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/related") or boundary is None:
        raise invalid("Bad multipart upload: expected multipart/related with a boundary", reason="badContent")
    delimiter = b"--" + boundary.group(1).encode()
    sections = content.split(delimiter)[1:]  # before the first delimiter: the preamble
    parts: list[tuple[str, bytes]] = []
    for section in sections:
        if section.startswith(b"--"):  # the closing delimiter
            break
        head, separator, payload = section.lstrip(b"\r\n").partition(b"\n\n")
        if not separator:
            head, separator, payload = section.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        elif payload.endswith(b"\n"):
            payload = payload[:-1]
        found = re.search(rb"(?im)^content-type:\s*([^\r\n]+)", head)
        parts.append((found.group(1).decode("latin-1").strip() if found else "", payload))
    if len(parts) != 2:
        raise invalid("Bad multipart upload: expected the metadata and the media", reason="badContent")
    return json_object(parts[0][1], required=False), parts[1][0], parts[1][1]


def _send(user: User, box: Mailbox, raw: bytes, explicit: Any) -> Response[bytes]:
    """Deliver ``raw`` from the user (a copy in SENT, the recipients' INBOXes or the outbound log)."""
    email = mime.parse(raw)
    recipients = mime.addresses(email, "To", "Cc", "Bcc")
    if not recipients:
        raise invalid("Recipient address required", reason="invalidArgument")
    replace: dict[str, str] = {}
    own = {user.primary_email.lower(), *(a.lower() for a in user.aliases)}
    senders = mime.addresses(email, "From")
    if not senders or senders[0][1] not in own:
        replace["From"] = formataddr((senders[0][0] if senders else "", user.primary_email))
    if not mime.header(email, "Message-ID"):
        replace["Message-ID"] = mime.new_message_id()
    if not mime.header(email, "Date"):
        replace["Date"] = mime.rfc2822_now()
    if replace:
        raw = mime.edit_headers(raw, replace=replace)
        email = mime.parse(raw)
    thread = find_thread(box, email, str(explicit) if explicit else None)
    addresses = list(dict.fromkeys(address for _, address in recipients))
    to_self = bool(own & set(addresses))
    labels = ["SENT", *(["INBOX", "UNREAD"] if to_self else [])]
    sent = store(box, raw, labels, thread_id=thread)
    missing = route(user, raw, [a for a in addresses if a not in own])
    if missing:
        _bounce(user, sent, missing)
    return answer(_short(sent))


@get(BASE + "/messages", include_in_schema=False)
async def list_messages(request: Request[Any, Any, Any], user_id: str) -> Response[bytes]:
    grant, user, box = _call(request, user_id, GMAIL_LIST, "ListMessages")
    q = query(request, "q")
    if q and _metadata_only(grant, GMAIL_LIST):
        raise GoogleError(403, "Metadata scope does not support 'q' parameter", reason="forbidden")
    wanted = query_all(request, "labelIds")
    limit = min(query_int(request, "maxResults", 100, 0, None) or 100, 500)
    search = compile_query(q, user.primary_email, int(now() * 1000))
    bins = (
        search.spam_and_trash
        or query_bool(request, "includeSpamTrash")
        or bool({"TRASH", "SPAM"} & set(wanted))
    )
    matches = []
    for message in sorted(box.messages.values(), key=lambda m: (m.internal_date, m.id), reverse=True):
        labels = set(message.labels)
        if not bins and labels & {"TRASH", "SPAM"}:
            continue
        if not all(label in labels for label in wanted):
            continue
        if search.test(_candidate(message)):
            matches.append(message)
    start = 0
    token = query(request, "pageToken")
    if token:
        cursor = _cursor(token)
        start = next((i for i, m in enumerate(matches) if (m.internal_date, m.id) < cursor), len(matches))
    page = matches[start : start + limit]
    result: dict[str, Any] = {}
    if page:
        result["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
    if start + limit < len(matches):
        last = page[-1]
        result["nextPageToken"] = base64.urlsafe_b64encode(
            f"{last.internal_date}:{last.id}".encode()
        ).decode()
    result["resultSizeEstimate"] = len(matches)
    return answer(result)


def _cursor(token: str) -> tuple[int, str]:
    try:
        date, _, message_id = (
            base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition(":")
        )
        return int(date), message_id
    except ValueError:
        raise GoogleError(400, "Invalid pageToken", reason="invalidArgument") from None


@get(BASE + "/messages/{message_id:str}", include_in_schema=False)
async def get_message(request: Request[Any, Any, Any], user_id: str, message_id: str) -> Response[bytes]:
    grant, _, box = _call(request, user_id, GMAIL_GET, "GetMessage")
    fmt = (query(request, "format") or "full").lower()
    if fmt not in ("full", "metadata", "minimal", "raw"):
        raise invalid(f"Invalid value at 'format', \"{fmt}\"", reason="invalidArgument")
    if fmt in ("full", "raw") and _metadata_only(grant, GMAIL_GET):
        raise GoogleError(403, f"Metadata scope doesn't allow format {fmt.upper()}", reason="forbidden")
    message = _message(box, message_id)
    return answer(render(message, fmt, query_all(request, "metadataHeaders")))


@delete(BASE + "/messages/{message_id:str}", status_code=204, include_in_schema=False)
async def delete_message(request: Request[Any, Any, Any], user_id: str, message_id: str) -> None:
    _, _, box = _call(request, user_id, GMAIL_DELETE, "DeleteMessage")
    message = _message(box, message_id)
    del box.messages[message.id]
    box.history_id += 1


@post(BASE + "/messages/{message_id:str}/trash", status_code=200, include_in_schema=False)
async def trash_message(request: Request[Any, Any, Any], user_id: str, message_id: str) -> Response[bytes]:
    """Adds TRASH and takes INBOX and SPAM away (``untrash`` gives them back)."""
    _, _, box = _call(request, user_id, GMAIL_MODIFY, "TrashMessage")
    message = _message(box, message_id)
    if "TRASH" not in message.labels:
        message.before_trash = [label for label in message.labels if label in ("INBOX", "SPAM")]
        message.labels = [label for label in message.labels if label not in ("INBOX", "SPAM")] + ["TRASH"]
        _touch(box, message)
    return answer(_short(message))


@post(BASE + "/messages/{message_id:str}/untrash", status_code=200, include_in_schema=False)
async def untrash_message(request: Request[Any, Any, Any], user_id: str, message_id: str) -> Response[bytes]:
    _, _, box = _call(request, user_id, GMAIL_MODIFY, "UntrashMessage")
    message = _message(box, message_id)
    if "TRASH" in message.labels:
        message.labels = [label for label in message.labels if label != "TRASH"] + message.before_trash
        message.before_trash = []
        _touch(box, message)
    return answer(_short(message))


def _labels(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(f"Invalid value at '{name}'", reason="invalidArgument")
    for label in value:
        if label not in _MODIFIABLE:
            raise invalid(f"Invalid label: {label}", reason="invalidArgument")
    return value


@post(BASE + "/messages/{message_id:str}/modify", status_code=200, include_in_schema=False)
async def modify_message(request: Request[Any, Any, Any], user_id: str, message_id: str) -> Response[bytes]:
    """``{"addLabelIds": [...], "removeLabelIds": [...]}``, system labels (UNREAD, STARRED, INBOX, ...)."""
    _, _, box = _call(request, user_id, GMAIL_MODIFY, "ModifyMessage")
    message = _message(box, message_id)
    body = await json_body(request, required=False)
    add, remove = (
        _labels(body.get("addLabelIds"), "addLabelIds"),
        _labels(body.get("removeLabelIds"), "removeLabelIds"),
    )
    message.labels = [label for label in message.labels if label not in remove]
    message.labels += [label for label in add if label not in message.labels]
    _touch(box, message)
    return answer(_short(message))


@get(BASE + "/messages/{message_id:str}/attachments/{attachment_id:str}", include_in_schema=False)
async def get_attachment(
    request: Request[Any, Any, Any], user_id: str, message_id: str, attachment_id: str
) -> Response[bytes]:
    _, _, box = _call(request, user_id, GMAIL_ATTACHMENT, "GetAttachment")
    message = _message(box, message_id)
    located = mime.attachment_part(attachment_id)
    if located is None or located[0] != message.id:
        raise invalid("Invalid attachment token", reason="invalidArgument")
    part = mime.find_part(parsed(message), located[1])
    if part is None:
        raise _not_found()
    data = mime.part_content(part)
    return answer({"attachmentId": attachment_id, "size": len(data), "data": b64url(data)})


@get(BASE + "/profile", include_in_schema=False)
async def get_profile(request: Request[Any, Any, Any], user_id: str) -> Response[bytes]:
    _, user, box = _call(request, user_id, GMAIL_PROFILE, "GetProfile")
    return answer(
        {
            "emailAddress": user.primary_email,
            "messagesTotal": len(box.messages),
            "threadsTotal": len({m.thread_id for m in box.messages.values()}),
            "historyId": str(box.history_id),
        }
    )


@get(BASE + "/labels", include_in_schema=False)
async def list_labels(request: Request[Any, Any, Any], user_id: str) -> Response[bytes]:
    _call(request, user_id, GMAIL_LABELS, "ListLabels")
    return answer({"labels": [{"id": label, "name": label, "type": "system"} for label in SYSTEM_LABELS]})


HANDLERS: Final = [
    send_message,
    upload_and_send,
    list_messages,
    get_message,
    delete_message,
    trash_message,
    untrash_message,
    modify_message,
    get_attachment,
    get_profile,
    list_labels,
]
