"""RFC 822 messages as Gmail stores and shows them: header edits on the raw bytes, the ``payload`` tree of
``messages.get``, snippets, attachment ids, search facts, and messages built for the inbound control."""

from __future__ import annotations

import base64
import mimetypes
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, getaddresses, make_msgid
from html.parser import HTMLParser
from typing import Any, Final, cast

from .store import b64url

_LINE_ENDING: Final = re.compile(rb"\r?\n")
_MESSAGE_IDS: Final = re.compile(r"<[^<>\s]+>")
_SUBJECT_PREFIX: Final = re.compile(r"^\s*((re|fwd?|aw|wg|sv|antw)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_ATTACHMENT_PREFIX: Final = "ANGjdJ"
SNIPPET_LENGTH: Final = 200


def normalize(raw: bytes) -> bytes:
    """CRLF line endings throughout, as Gmail keeps messages."""
    return _LINE_ENDING.sub(b"\r\n", raw)


def parse(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=policy.default)


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its folded continuation lines) and everything after the blank line."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    if not separator and not re.match(rb"^[!-9;-~]+:", head):
        return [], raw
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields, body


def _field_name(field: bytes) -> str:
    return field.partition(b":")[0].strip().decode("ascii", "replace").lower()


def edit_headers(
    raw: bytes,
    *,
    remove: frozenset[str] = frozenset(),
    replace: dict[str, str] | None = None,
    prepend: list[tuple[str, str]] | None = None,
) -> bytes:
    """``raw`` with the headers named in ``remove`` dropped, those in ``replace`` rewritten in place (added at
    the end of the header when absent) and ``prepend`` added on top, the body untouched."""
    fields, body = _split(raw)
    replace = dict(replace or {})
    out: list[bytes] = [f"{name}: {value}".encode() for name, value in prepend or ()]
    for field in fields:
        name = _field_name(field)
        if name in remove:
            continue
        key = next((k for k in replace if k.lower() == name), None)
        if key is not None:
            out.append(f"{key}: {replace.pop(key)}".encode())
        else:
            out.append(field)
    out += [f"{name}: {value}".encode() for name, value in replace.items()]
    return b"\r\n".join(out) + b"\r\n\r\n" + body


def header(message: Message, name: str) -> str:
    value = message.get(name)
    return str(value) if value is not None else ""


def addresses(message: Message, *names: str) -> list[tuple[str, str]]:
    """(display name, lower-cased address) of every address in the named headers."""
    values = [str(v) for name in names for v in message.get_all(name, [])]
    return [(n, a.lower()) for n, a in getaddresses(values) if a and "@" in a]


def message_ids(value: str) -> list[str]:
    return _MESSAGE_IDS.findall(value)


def subject_key(subject: str) -> str:
    return " ".join(_SUBJECT_PREFIX.sub("", subject).lower().split())


def new_message_id() -> str:
    return make_msgid(domain="mail.gmail.com")


def rfc2822_now() -> str:
    return format_datetime(datetime.now(UTC))


# ---------------------------------------------------------------------------------------------- reading


def _is_attachment(part: Message) -> bool:
    return bool(part.get_filename()) or part.get_content_disposition() == "attachment"


def _content(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return cast(Message, inner[0]).as_bytes()
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _headers(part: Message) -> list[dict[str, str]]:
    headers: list[dict[str, str]] = []
    for name, value in part.raw_items():
        try:
            text = str(part.policy.header_fetch_parse(name, value))
        except Exception:
            text = str(value)
        headers.append({"name": name, "value": text})
    return headers


def attachment_id(message_id: str, part_id: str) -> str:
    token = base64.urlsafe_b64encode(f"{message_id}/{part_id}".encode()).decode().rstrip("=")
    return _ATTACHMENT_PREFIX + token


def attachment_part(attachment: str) -> tuple[str, str] | None:
    """(message id, part id) of an id from :func:`attachment_id`; None if it is not one."""
    if not attachment.startswith(_ATTACHMENT_PREFIX):
        return None
    token = attachment[len(_ATTACHMENT_PREFIX) :]
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        return None
    message_id, slash, part_id = text.partition("/")
    return (message_id, part_id) if slash else None


def _walk(part: Message, part_id: str) -> list[tuple[str, Message]]:
    found = [(part_id, part)]
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        for index, child in enumerate(cast(list[Message], part.get_payload())):
            found += _walk(child, f"{part_id}.{index}" if part_id else str(index))
    return found


def find_part(message: Message, part_id: str) -> Message | None:
    return next((part for pid, part in _walk(message, "") if pid == part_id), None)


def part_content(part: Message) -> bytes:
    return _content(part)


def payload(part: Message, message_id: str, part_id: str = "") -> dict[str, Any]:
    """A MessagePart: ``partId``, ``mimeType``, ``filename``, ``headers``, ``body`` (``data`` inline, or
    ``attachmentId`` for attachments) and ``parts`` for multiparts."""
    body: dict[str, Any]
    node: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": part.get_filename() or "",
        "headers": _headers(part),
    }
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        node["body"] = {"size": 0}
        children = cast(list[Message], part.get_payload())
        node["parts"] = [
            payload(child, message_id, f"{part_id}.{i}" if part_id else str(i))
            for i, child in enumerate(children)
        ]
        return node
    data = _content(part)
    if _is_attachment(part):
        body = {"attachmentId": attachment_id(message_id, part_id), "size": len(data)}
    elif data:
        body = {"size": len(data), "data": b64url(data)}
    else:
        body = {"size": 0}
    node["body"] = body
    return node


def metadata_payload(message: Message, wanted: list[str]) -> dict[str, Any]:
    headers = _headers(message)
    if wanted:
        names = {w.lower() for w in wanted}
        headers = [h for h in headers if h["name"].lower() in names]
    return {"mimeType": message.get_content_type(), "headers": headers}


class _TextOfHtml(HTMLParser):
    _SKIP: Final = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in ("br", "p", "div", "li", "tr"):
            self.pieces.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.pieces.append(data)


def html_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    return "".join(parser.pieces)


def _decoded(part: Message) -> str:
    data = _content(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def bodies(message: Message) -> tuple[str, str]:
    """The first plain-text and the first HTML body (not attachments), decoded."""
    text = html = None
    for _, part in _walk(message, ""):
        if part.is_multipart() or _is_attachment(part):
            continue
        if text is None and part.get_content_type() == "text/plain":
            text = _decoded(part)
        elif html is None and part.get_content_type() == "text/html":
            html = _decoded(part)
    return text or "", html or ""


def attachments(message: Message) -> list[tuple[str, str, int, str]]:
    """(part id, filename, size, mime type) of every attachment."""
    return [
        (pid, part.get_filename() or "", len(_content(part)), part.get_content_type())
        for pid, part in _walk(message, "")
        if not (part.is_multipart() and part.get_content_type() != "message/rfc822") and _is_attachment(part)
    ]


def snippet(message: Message) -> str:
    text, html = bodies(message)
    plain = " ".join((text or html_text(html)).split())[:SNIPPET_LENGTH]
    return (
        plain.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


@dataclass(frozen=True, slots=True)
class Facts:
    """What ``q`` searches, lower-cased."""

    sender: str
    to: str
    cc: str
    bcc: str
    delivered_to: str
    subject: str
    message_id: str
    text: str
    filenames: tuple[str, ...]
    size: int


def facts(message: Message, size: int) -> Facts:
    text, html = bodies(message)
    files = tuple(name.lower() for _, name, _, _ in attachments(message))

    def joined(name: str) -> str:
        return " ".join(str(v) for v in message.get_all(name, [])).lower()

    subject = header(message, "Subject").lower()
    sender, to, cc, bcc = joined("From"), joined("To"), joined("Cc"), joined("Bcc")
    body = " ".join((text + " " + html_text(html)).split()).lower()
    return Facts(
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        delivered_to=joined("Delivered-To"),
        subject=subject,
        message_id=header(message, "Message-ID").strip().lower(),
        text=" ".join((subject, sender, to, cc, body, *files)),
        filenames=files,
        size=size,
    )


# ---------------------------------------------------------------------------------------------- writing


def build(spec: dict[str, Any]) -> bytes:
    """A message from the inbound control's ``{"from", "to", "cc", "subject", "text", "html", "attachments":
    [{"filename", "mime_type", "content" | "content_base64"}], "message_id", "in_reply_to", "references",
    "headers"}``."""

    def listed(value: Any) -> str:
        return ", ".join(value) if isinstance(value, list) else str(value)

    message = EmailMessage()
    message["From"] = str(spec.get("from") or "Sandbox Sender <sender@external.example>")
    message["To"] = listed(spec["to"])
    if spec.get("cc"):
        message["Cc"] = listed(spec["cc"])
    message["Subject"] = str(spec.get("subject") or "")
    message["Date"] = str(spec.get("date") or rfc2822_now())
    message["Message-ID"] = str(spec.get("message_id") or make_msgid(domain="external.example"))
    if spec.get("in_reply_to"):
        message["In-Reply-To"] = str(spec["in_reply_to"])
    if spec.get("references"):
        message["References"] = listed(spec["references"]).replace(",", " ")
    for name, value in (spec.get("headers") or {}).items():
        message[str(name)] = str(value)
    text, html = spec.get("text"), spec.get("html")
    if text is not None or html is None:
        message.set_content(str(text or ""))
        if html is not None:
            message.add_alternative(str(html), subtype="html")
    else:
        message.set_content(str(html), subtype="html")
    for attachment in spec.get("attachments") or ():
        filename = str(attachment.get("filename") or "attachment.bin")
        mime_type = str(
            attachment.get("mime_type")
            or attachment.get("content_type")
            or mimetypes.guess_type(filename)[0]
            or "application/octet-stream"
        )
        if "content_base64" in attachment:
            data = base64.b64decode(str(attachment["content_base64"]))
        else:
            data = str(attachment.get("content") or "").encode()
        maintype, _, subtype = mime_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    return normalize(message.as_bytes(policy=policy.SMTP))
