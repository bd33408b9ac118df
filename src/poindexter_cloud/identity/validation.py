"""What the identity API checks before a provider sees a request: addresses, phone numbers, header text,
attachments and their sizes, SMS length, times, time zones and ranges. Each failure is one of our errors
naming the field (``details.field``), so Dex can tell exactly what to fix."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import getaddresses
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from poindexter_cloud.identity.errors import (
    AttachmentsTooLarge,
    InvalidAttachment,
    InvalidEmailAddress,
    InvalidHeader,
    InvalidPhoneNumber,
    InvalidText,
    InvalidTime,
    InvalidTimeRange,
    InvalidTimeZone,
    MessageTooLong,
    TooManyRecipients,
)
from poindexter_cloud.identity.schemas import AttachmentUpload

E164: Final = re.compile(r"^\+[1-9]\d{6,14}$")
# An addr-spec in dot-atom form (RFC 5322 3.4.1) with a domain of DNS labels and a dot somewhere.
_LOCAL: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN: Final = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}"
_ADDRESS: Final = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_CONTENT_TYPE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
MAX_EMAIL_RECIPIENTS: Final = 100
MAX_SMS_SEGMENTS: Final = 10  # carriers refuse longer concatenated SMS (Telnyx: error 40302)
MAX_TIME_RANGE_DAYS: Final = 366
# GSM 03.38: texts of these characters go as GSM-7 (the extension table's count twice), others as UCS-2.
_GSM7: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION: Final = frozenset("^{}\\[~]|€\f")


# --- people -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str  # display name, "" if none
    address: str


def email_address(value: str, field: str) -> Mailbox:
    """``ada@example.com`` or ``Ada Lovelace <ada@example.com>``; anything else (two addresses, a bare
    name, a line break) is ``invalid_email_address``."""
    parsed = getaddresses([value]) if not _CONTROL.search(value) else []
    if len(parsed) != 1 or not _ADDRESS.match(parsed[0][1]) or len(parsed[0][1]) > 254:
        raise InvalidEmailAddress(
            f"{field}: {value!r} is not an email address.", details={"field": field, "value": value}
        )
    return Mailbox(parsed[0][0].strip(), parsed[0][1])


def email_addresses(groups: dict[str, Sequence[str]]) -> dict[str, list[Mailbox]]:
    """Every address of every field checked, at most ``MAX_EMAIL_RECIPIENTS`` in all."""
    total = sum(len(values) for values in groups.values())
    if total > MAX_EMAIL_RECIPIENTS:
        raise TooManyRecipients(
            f"An email goes to at most {MAX_EMAIL_RECIPIENTS} recipients ({total} given).",
            details={"limit": MAX_EMAIL_RECIPIENTS, "given": total},
        )
    return {
        field: [email_address(value, f"{field}[{i}]") for i, value in enumerate(values)]
        for field, values in groups.items()
    }


def phone_number(value: str, field: str) -> str:
    """An E.164 number: ``+``, the country code, the number, no spaces (``+14155550123``)."""
    if not E164.match(value):
        raise InvalidPhoneNumber(
            f"{field}: {value!r} is not an E.164 phone number (such as +14155550123).",
            details={"field": field, "value": value},
        )
    return value


def header_text(value: str, field: str) -> str:
    """A subject or a display name: one line, no control characters."""
    if _CONTROL.search(value):
        raise InvalidHeader(f"{field} must be one line without control characters.", details={"field": field})
    return value


# --- content ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


def attachments(items: Sequence[AttachmentUpload], limit: int) -> list[Attachment]:
    """Decoded files, each named and typed (guessed from its name when not given), at most ``limit`` bytes
    in all."""
    decoded: list[Attachment] = []
    for index, item in enumerate(items):
        field = f"attachments[{index}]"
        name = item.filename.strip()
        if not name or _CONTROL.search(name) or "/" in name or "\\" in name:
            raise InvalidAttachment(
                f"{field}.filename must be a file name (no path, no control characters).",
                details={"field": f"{field}.filename"},
            )
        content_type = item.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not _CONTENT_TYPE.match(content_type):
            raise InvalidAttachment(
                f"{field}.content_type must be a MIME type such as application/pdf.",
                details={"field": f"{field}.content_type"},
            )
        try:
            data = base64.b64decode(item.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidAttachment(
                f"{field}.content_base64 is not standard base64.",
                details={"field": f"{field}.content_base64"},
            ) from None
        decoded.append(Attachment(name, content_type.lower(), data))
    total = sum(len(item.data) for item in decoded)
    if total > limit:
        raise AttachmentsTooLarge(
            f"The attachments come to {total} bytes; at most {limit} may be sent at once.",
            details={"limit_bytes": limit, "size_bytes": total},
        )
    return decoded


def sms_segments(text: str) -> int:
    """How many SMS parts ``text`` takes: 160 GSM-7 characters (153 each when split) or 70 UCS-2 code units
    (67 each)."""
    if all(c in _GSM7 or c in _GSM7_EXTENSION for c in text):
        size = sum(2 if c in _GSM7_EXTENSION else 1 for c in text)
        return 1 if size <= 160 else -(-size // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def sms_text(text: str) -> str:
    if "\x00" in text:  # no carrier character, and PostgreSQL's text (where a sent SMS is kept) refuses it
        raise InvalidText("text must not contain NUL characters.", details={"field": "text"})
    segments = sms_segments(text)
    if segments > MAX_SMS_SEGMENTS:
        raise MessageTooLong(
            f"The text takes {segments} SMS parts; at most {MAX_SMS_SEGMENTS} are delivered (about 1,530 "
            "plain characters, or 670 with emoji or non-Latin letters).",
            details={"field": "text", "segments": segments, "limit": MAX_SMS_SEGMENTS},
        )
    return text


# --- time ---------------------------------------------------------------------------------------------------


def time_zone(name: str, field: str) -> str:
    """An IANA time zone name (``Europe/Berlin``)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTimeZone(
            f"{field}: {name!r} is not an IANA time zone (such as Europe/Berlin).",
            details={"field": field, "value": name},
        ) from None
    return name


def _datetime(value: str) -> datetime | None:
    if "T" not in value.upper():
        return None
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "zZ" else value)
    except ValueError:
        return None


def instant(value: str, field: str) -> datetime:
    """An RFC 3339 date-time with its offset (``2026-03-08T09:00:00-05:00`` or ``...Z``)."""
    moment = _datetime(value)
    if moment is None or moment.tzinfo is None:
        raise InvalidTime(
            f"{field}: {value!r} is not an RFC 3339 date-time with an offset (such as 2026-03-08T09:00:00Z).",
            details={"field": field, "value": value},
        )
    return moment


def time_range(start: datetime | None, end: datetime | None, start_field: str, end_field: str) -> None:
    """``end`` after ``start`` (when both are given), and at most ``MAX_TIME_RANGE_DAYS`` apart."""
    if start is None or end is None:
        return
    if end <= start:
        raise InvalidTimeRange(
            f"{end_field} must be after {start_field}.", details={"fields": [start_field, end_field]}
        )
    if (end - start).days > MAX_TIME_RANGE_DAYS:
        raise InvalidTimeRange(
            f"{start_field} and {end_field} may be at most {MAX_TIME_RANGE_DAYS} days apart.",
            details={"fields": [start_field, end_field], "limit_days": MAX_TIME_RANGE_DAYS},
        )


@dataclass(frozen=True, slots=True)
class Moment:
    """An event's start or end, checked: when it is (None for an all-day date), and its day (all-day)."""

    at: datetime | None
    day: date | None


def event_time(date_time: str | None, day: str | None, zone: str | None, field: str) -> Moment:
    """One of ``date_time`` (with an offset, or wall-clock time with ``time_zone``) or ``date``."""
    if zone is not None:
        time_zone(zone, f"{field}.time_zone")
    if (date_time is None) == (day is None):
        raise InvalidTime(f"{field} needs exactly one of date_time and date.", details={"field": field})
    if day is not None:
        try:
            parsed = date.fromisoformat(day) if len(day) == 10 else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise InvalidTime(
                f"{field}.date: {day!r} is not a date (YYYY-MM-DD).",
                details={"field": f"{field}.date", "value": day},
            )
        return Moment(None, parsed)
    assert date_time is not None
    moment = _datetime(date_time)
    if moment is None:
        raise InvalidTime(
            f"{field}.date_time: {date_time!r} is not an RFC 3339 date-time.",
            details={"field": f"{field}.date_time", "value": date_time},
        )
    if moment.tzinfo is None:
        if zone is None:
            raise InvalidTime(
                f"{field}.date_time has no offset: give one, or a time_zone saying where it is.",
                details={"field": f"{field}.date_time", "value": date_time},
            )
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return Moment(moment, None)


def event_range(start: Moment, end: Moment) -> None:
    """Both all-day or both timed, the end after the start."""
    if (start.day is None) != (end.day is None):
        raise InvalidTimeRange(
            "start and end must both be dates (all day) or both date-times.",
            details={"fields": ["start", "end"]},
        )
    if start.day is not None and end.day is not None:
        if end.day <= start.day:
            raise InvalidTimeRange(
                "end.date must be after start.date (the end date of an all-day event is exclusive).",
                details={"fields": ["start", "end"]},
            )
        return
    assert start.at is not None and end.at is not None
    if end.at <= start.at:
        raise InvalidTimeRange("end must be after start.", details={"fields": ["start", "end"]})
