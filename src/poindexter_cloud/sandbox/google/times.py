"""RFC 3339 times and IANA time zones, as the Calendar API reads and writes them."""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UTC_NAMES: Final = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z"})


def zone(name: str) -> ZoneInfo | None:
    """The time zone named ``name`` (IANA), or None if there is none."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_datetime(text: str) -> datetime | None:
    """An RFC 3339 date-time (``Z`` or an offset, or none: then naive); None if it is not one."""
    if not isinstance(text, str) or "T" not in text.upper():
        return None
    try:
        return datetime.fromisoformat(
            text.upper().replace("Z", "+00:00") if text.upper().endswith("Z") else text
        )
    except ValueError:
        return None


def parse_date(text: str) -> date | None:
    if not isinstance(text, str) or len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def localize(naive: datetime, tz: tzinfo) -> datetime:
    """A wall-clock time in ``tz``. With ``fold=0`` a time skipped by a DST change is read with the offset
    before the change, i.e. it lands as far after the change as it was after the skipped hour's start (02:30
    on a spring-forward night is 03:30), and an ambiguous time takes its first (daylight) occurrence."""
    return naive.replace(tzinfo=tz, fold=0)


def start_of_day(day: date, tz: tzinfo) -> float:
    return localize(datetime(day.year, day.month, day.day), tz).timestamp()


def format_datetime(moment: float, tz: tzinfo, tz_name: str) -> str:
    """``2024-03-10T09:00:00-07:00`` in ``tz`` (``Z`` for UTC)."""
    text = datetime.fromtimestamp(moment, tz).isoformat(timespec="seconds")
    if tz_name in _UTC_NAMES and text.endswith("+00:00"):
        return text[:-6] + "Z"
    return text
