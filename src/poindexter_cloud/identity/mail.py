"""Email as the identity's mailbox, through the Gmail API: compose and send a MIME message, list the inbox,
read a message (headers, bodies, attachment metadata) or an attachment, move a message to the trash.

Outgoing messages are built here with the standard library (``email.message.EmailMessage``): From is the
mailbox (Gmail would rewrite any other), To/Cc/Bcc as given (Gmail routes Bcc and strips it from every
copy), our own Message-ID and Date, ``text/plain`` and ``text/html`` as ``multipart/alternative``,
attachments as ``multipart/mixed``. A reply names the message it answers: it gets its thread, ``In-Reply-To``
and ``References``, and ``Re:`` its subject.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, getaddresses, make_msgid, parsedate_to_datetime
from typing import Any, Final

from sqlalchemy.dialects.postgresql import insert

from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import usage
from poindexter_cloud.identity.access import Caller
from poindexter_cloud.identity.errors import (
    AttachmentNotFound,
    EmptyMessage,
    InvalidCursor,
    InvalidId,
    InvalidQuery,
    InvalidTimeRange,
    MessageNotFound,
    NoRecipients,
)
from poindexter_cloud.identity.models import CountedEmail
from poindexter_cloud.identity.schemas import (
    AttachmentContent,
    AttachmentInfo,
    EmailAddress,
    EmailHeader,
    EmailMessage,
    EmailSend,
    EmailSent,
    EmailSummary,
    InboxPage,
)
from poindexter_cloud.identity.validation import (
    Attachment,
    Mailbox,
    attachments,
    email_addresses,
    header_text,
    instant,
)
from poindexter_cloud.integrations.errors import ProviderObjectMissing
from poindexter_cloud.integrations.google import GoogleAdapter, GoogleBadRequest

SUMMARY_HEADERS: Final = ["From", "To", "Subject", "Date"]
REPLY_HEADERS: Final = ["Message-ID", "References", "Subject"]
FOLDERS: Final = {"inbox": ["INBOX"], "sent": ["SENT"], "trash": ["TRASH"], "all": []}
FETCH_CONCURRENCY: Final = 8
MAX_QUERY_LENGTH: Final = 500
# Gmail's message and attachment ids (and our page tokens, which are Gmail's) are URL-safe tokens.
_ID_CHARACTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def provider_id(value: str, what: str, limit: int = 512) -> str:
    if not value or len(value) > limit or set(value) - _ID_CHARACTERS:
        raise InvalidId(f"{value!r} is not a {what} id of this mailbox.", details={"field": what})
    return value


# --- sending ------------------------------------------------------------------------------------------------


def _address(mailbox: Mailbox) -> Address:
    return Address(display_name=mailbox.name, addr_spec=mailbox.address)


def _header(message: dict[str, Any], name: str) -> str:
    wanted = name.lower()
    for entry in (message.get("payload") or {}).get("headers") or ():
        if str(entry.get("name", "")).lower() == wanted:
            return str(entry.get("value") or "")
    return ""


def compose(
    sender: str,
    request: EmailSend,
    recipients: dict[str, list[Mailbox]],
    files: Sequence[Attachment],
    original: dict[str, Any] | None,
) -> tuple[bytes, str]:
    """The RFC 822 message (CRLF) and its Message-ID."""
    message = MimeMessage(policy=policy.SMTP)
    message["From"] = Address(display_name=request.from_name or "", addr_spec=sender)
    for field in ("to", "cc", "bcc"):
        if recipients[field]:
            message[field.capitalize()] = [_address(m) for m in recipients[field]]
    subject = request.subject
    if original is not None:
        earlier = _header(original, "Subject")
        if subject is None:
            subject = earlier if earlier.lower().startswith("re:") else f"Re: {earlier}".strip()
        parent = _header(original, "Message-ID")
        if parent:
            message["In-Reply-To"] = parent
            message["References"] = " ".join(p for p in (_header(original, "References"), parent) if p)
    message["Subject"] = subject or ""
    message["Date"] = format_datetime(datetime.now(UTC))
    message_id = make_msgid(domain=sender.rpartition("@")[2])
    message["Message-ID"] = message_id
    if request.text is not None and request.html is not None:
        message.set_content(request.text)
        message.add_alternative(request.html, subtype="html")
    elif request.html is not None:
        message.set_content(request.html, subtype="html")
    elif request.text is not None:
        message.set_content(request.text)
    for file in files:
        maintype, _, subtype = file.content_type.partition("/")
        message.add_attachment(file.data, maintype=maintype, subtype=subtype, filename=file.filename)
    return message.as_bytes(), message_id


async def send(google: GoogleAdapter, resources: Resources, caller: Caller, request: EmailSend) -> EmailSent:
    """Check the request, take the call from the key's limit, then send."""
    recipients = email_addresses({"to": request.to, "cc": request.cc, "bcc": request.bcc})
    if not any(recipients.values()):
        raise NoRecipients("Give at least one recipient in to, cc or bcc.")
    if request.subject is not None:
        header_text(request.subject, "subject")
    if request.from_name is not None:
        header_text(request.from_name, "from_name")
    files = attachments(request.attachments, resources.settings.identity_max_attachment_bytes)
    if request.text is None and request.html is None and not files:
        raise EmptyMessage("Give text, html or attachments.")
    await caller.admit()
    original = None
    if request.reply_to_message_id is not None:
        reply_id = provider_id(request.reply_to_message_id, "reply_to_message_id")
        original = await _message(google, caller, reply_id, REPLY_HEADERS)
    raw, message_id = compose(caller.mailbox, request, recipients, files, original)
    thread = str(original["threadId"]) if original is not None and original.get("threadId") else None
    sent = await google.send_mail(caller.mailbox, raw, thread)
    record = usage.record(
        caller.identity.user_id,
        caller.principal.api_key_id,
        usage.EMAIL_SENT,
        f"email-out:{caller.identity.id}:{sent.id}",
        "google",
    )
    await usage.push(resources, [record])
    return EmailSent(sent.id, sent.thread_id, message_id)


# --- reading ------------------------------------------------------------------------------------------------


async def _message(
    google: GoogleAdapter, caller: Caller, message_id: str, headers: list[str] | None = None
) -> dict[str, Any]:
    try:
        return await google.get_mail(caller.mailbox, message_id, headers)
    except (ProviderObjectMissing, GoogleBadRequest):
        raise MessageNotFound(f"This mailbox has no message {message_id}.") from None


def _quoted(value: str, field: str) -> str:
    if '"' in value or len(value) > MAX_QUERY_LENGTH:
        raise InvalidQuery(
            f"{field} must be at most {MAX_QUERY_LENGTH} characters without double quotes.",
            details={"field": field},
        )
    return f'"{value}"'


def search_query(
    *,
    q: str | None,
    sender: str | None,
    to: str | None,
    subject: str | None,
    unread: bool | None,
    has_attachment: bool | None,
    after: str | None,
    before: str | None,
) -> str | None:
    """Gmail's search terms for the inbox filters (ANDed with ``q``, Gmail's own search syntax)."""
    start = instant(after, "after") if after is not None else None
    end = instant(before, "before") if before is not None else None
    if start is not None and end is not None and end <= start:
        raise InvalidTimeRange("before must be after after.", details={"fields": ["after", "before"]})
    terms = [q] if q else []
    terms += [f"from:{_quoted(sender, 'from')}"] if sender else []
    terms += [f"to:{_quoted(to, 'to')}"] if to else []
    terms += [f"subject:{_quoted(subject, 'subject')}"] if subject else []
    terms += ["is:unread"] if unread is True else ["is:read"] if unread is False else []
    terms += ["has:attachment"] if has_attachment else ["-has:attachment"] if has_attachment is False else []
    terms += [f"after:{int(start.timestamp())}"] if start is not None else []
    terms += [f"before:{int(end.timestamp())}"] if end is not None else []
    return " ".join(terms) or None


def _addresses(value: str) -> list[EmailAddress]:
    return [EmailAddress(address, name or None) for name, address in getaddresses([value]) if address]


def _date(message: dict[str, Any]) -> datetime | None:
    """The Date header's time, else when Gmail received the message."""
    try:
        return parsedate_to_datetime(_header(message, "Date"))
    except (ValueError, TypeError, IndexError):
        internal = str(message.get("internalDate") or "")
        return datetime.fromtimestamp(int(internal) / 1000, UTC) if internal.isdigit() else None


def _labels(message: dict[str, Any]) -> list[str]:
    return [str(label) for label in message.get("labelIds") or ()]


def summary(message: dict[str, Any]) -> EmailSummary:
    senders = _addresses(_header(message, "From"))
    return EmailSummary(
        id=str(message["id"]),
        thread_id=str(message.get("threadId") or message["id"]),
        sender=senders[0] if senders else None,
        to=_addresses(_header(message, "To")),
        subject=_header(message, "Subject"),
        date=_date(message),
        snippet=str(message.get("snippet") or ""),
        labels=_labels(message),
        unread="UNREAD" in _labels(message),
    )


def _parts(part: dict[str, Any]) -> list[dict[str, Any]]:
    found = [part]
    for child in part.get("parts") or ():
        found += _parts(child)
    return found


def _part_header(part: dict[str, Any], name: str) -> str:
    return next(
        (
            str(h.get("value") or "")
            for h in part.get("headers") or ()
            if str(h.get("name", "")).lower() == name
        ),
        "",
    )


def _text_of(part: dict[str, Any]) -> str:
    data = str((part.get("body") or {}).get("data") or "")
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    probe = MimeMessage()
    probe["Content-Type"] = _part_header(part, "content-type") or "text/plain"
    charset = probe.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        text = raw.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")  # mail's line ends, as Python's


def _is_attachment(part: dict[str, Any]) -> bool:
    return bool(part.get("filename")) or bool((part.get("body") or {}).get("attachmentId"))


def message_view(message: dict[str, Any]) -> EmailMessage:
    parts = _parts(message.get("payload") or {})
    bodies = [
        p for p in parts if not _is_attachment(p) and not str(p.get("mimeType", "")).startswith("multipart/")
    ]
    text = next((_text_of(p) for p in bodies if p.get("mimeType") == "text/plain"), None)
    html = next((_text_of(p) for p in bodies if p.get("mimeType") == "text/html"), None)
    files = [
        AttachmentInfo(
            attachment_id=str(p.get("partId") or ""),
            filename=str(p.get("filename") or ""),
            content_type=str(p.get("mimeType") or "application/octet-stream"),
            size=int((p.get("body") or {}).get("size") or 0),
        )
        for p in parts
        if _is_attachment(p)
    ]
    headers = [
        EmailHeader(str(h.get("name") or ""), str(h.get("value") or ""))
        for h in (message.get("payload") or {}).get("headers") or ()
    ]
    shown = summary(message)
    return EmailMessage(
        id=shown.id,
        thread_id=shown.thread_id,
        sender=shown.sender,
        to=shown.to,
        cc=_addresses(_header(message, "Cc")),
        reply_to=_addresses(_header(message, "Reply-To")),
        subject=shown.subject,
        date=shown.date,
        message_id=_header(message, "Message-ID") or None,
        in_reply_to=_header(message, "In-Reply-To") or None,
        snippet=shown.snippet,
        labels=shown.labels,
        unread=shown.unread,
        text=text,
        html=html,
        attachments=files,
        headers=headers,
        size=int(message.get("sizeEstimate") or 0),
    )


async def count_received(
    uow: UnitOfWork, resources: Resources, caller: Caller, messages: Sequence[dict[str, Any]]
) -> None:
    """Record each received message (not one the mailbox sent) not counted yet, and push its
    ``email_received`` event once the transaction commits (``usage``'s docstring)."""
    received = [str(m["id"]) for m in messages if "SENT" not in _labels(m)]
    if not received:
        return
    identity = caller.identity
    rows = await uow.session.execute(
        insert(CountedEmail)
        .values([{"identity_id": identity.id, "message_id": message_id} for message_id in received])
        .on_conflict_do_nothing(index_elements=["identity_id", "message_id"])
        .returning(CountedEmail.message_id, CountedEmail.counted_at)
    )
    records = [
        usage.record(
            identity.user_id,
            caller.principal.api_key_id,
            usage.EMAIL_RECEIVED,
            f"email-in:{identity.id}:{message_id}",
            "google",
            counted_at.timestamp(),
        )
        for message_id, counted_at in rows
    ]
    if records:
        uow.after_commit(lambda: usage.push(resources, records))


async def inbox(
    google: GoogleAdapter,
    uow: UnitOfWork,
    resources: Resources,
    caller: Caller,
    *,
    folder: str,
    query: str | None,
    page_token: str | None,
    limit: int,
) -> InboxPage:
    """A page of the folder, newest first, each message's summary (its headers and labels)."""
    if page_token is not None and (len(page_token) > 1024 or set(page_token) - _ID_CHARACTERS):
        raise InvalidCursor("page_token is not one this inbox handed out.", details={"field": "page_token"})
    await caller.admit()
    try:
        page = await google.list_mail(
            caller.mailbox, query=query, label_ids=FOLDERS[folder], page_token=page_token, limit=limit
        )
    except GoogleBadRequest:
        if page_token is not None:
            raise InvalidCursor("page_token is not one this inbox handed out.") from None
        raise InvalidQuery("Gmail refused the search query.", details={"field": "q"}) from None
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def fetch(message_id: str) -> dict[str, Any] | None:
        async with gate:
            try:
                return await google.get_mail(caller.mailbox, message_id, SUMMARY_HEADERS)
            except ProviderObjectMissing:  # deleted between the list and now
                return None

    found = [m for m in await asyncio.gather(*(fetch(i) for i in page.ids)) if m is not None]
    await count_received(uow, resources, caller, found)
    return InboxPage([summary(m) for m in found], page.next_page_token, page.size_estimate)


async def read(
    google: GoogleAdapter, uow: UnitOfWork, resources: Resources, caller: Caller, message_id: str
) -> EmailMessage:
    checked = provider_id(message_id, "message")
    await caller.admit()
    message = await _message(google, caller, checked)
    await count_received(uow, resources, caller, [message])
    return message_view(message)


async def trash(google: GoogleAdapter, caller: Caller, message_id: str) -> None:
    checked = provider_id(message_id, "message")
    await caller.admit()
    try:
        await google.trash_mail(caller.mailbox, checked)
    except (ProviderObjectMissing, GoogleBadRequest):
        raise MessageNotFound(f"This mailbox has no message {message_id}.") from None


async def attachment(
    google: GoogleAdapter, caller: Caller, message_id: str, part_id: str
) -> AttachmentContent:
    """An attachment's bytes, named by its MIME part (Gmail's own attachment ids change from one read of a
    message to the next, so ours is the part's id), with the name and type the message gives it."""
    checked = provider_id(message_id, "message")
    await caller.admit()
    message = await _message(google, caller, checked)
    part = next((p for p in _parts(message.get("payload") or {}) if p.get("partId") == part_id), None)
    gmail_id = str(((part or {}).get("body") or {}).get("attachmentId") or "")
    if part is None or not _is_attachment(part) or not gmail_id:
        raise AttachmentNotFound(f"Message {message_id} has no attachment {part_id}.")
    try:
        data = await google.mail_attachment(caller.mailbox, message_id, gmail_id)
    except (ProviderObjectMissing, GoogleBadRequest):
        raise AttachmentNotFound(f"Message {message_id} has no attachment {part_id}.") from None
    return AttachmentContent(
        str(part.get("filename") or "") or None,
        str(part.get("mimeType") or "") or None,
        len(data),
        base64.b64encode(data).decode(),
    )
