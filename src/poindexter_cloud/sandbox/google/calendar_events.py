"""Calendar events as the Calendar API reads and writes them: the Event resource's writable fields, start and
end times (RFC 3339 with an offset, or a wall-clock time with an IANA ``timeZone``, or an all-day ``date``),
and the resource the API answers, its times shown in the zone the caller asks for."""

from __future__ import annotations

import base64
import secrets
from typing import Any, Final
from zoneinfo import ZoneInfo

from . import times
from .auth import Principal
from .errors import GoogleError
from .store import Calendar, Event, rfc3339_millis

ID_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuv"  # base32hex, the alphabet of event ids
RESPONSES: Final = frozenset({"needsAction", "declined", "tentative", "accepted"})
STATUSES: Final = frozenset({"confirmed", "tentative", "cancelled"})
# The writable fields the sandbox keeps as given and returns (start, end, status, attendees: handled apart).
STORED: Final = frozenset(
    {
        "summary",
        "description",
        "location",
        "colorId",
        "transparency",
        "visibility",
        "reminders",
        "extendedProperties",
        "guestsCanModify",
        "guestsCanInviteOthers",
        "guestsCanSeeOtherGuests",
        "anyoneCanAddSelf",
        "conferenceData",
        "source",
        "attachments",
        "eventType",
    }
)


def calendar_error(code: int, message: str, reason: str, **extra: Any) -> GoogleError:
    """The Calendar API's own errors have no ``status`` (its documented bodies show none)."""
    return GoogleError(code, message, reason=reason, status=False, **extra)


def not_found() -> GoogleError:
    return calendar_error(404, "Not Found", "notFound")


def bad(message: str, reason: str = "invalid") -> GoogleError:
    return calendar_error(400, message, reason)


def empty_range() -> GoogleError:
    """An end not after the start (of an event, or of a list's timeMin/timeMax): the documented 400."""
    return calendar_error(
        400, "The specified time range is empty.", "timeRangeEmpty", domain="calendar", location="timeMax"
    )


def new_event_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(26))


def check_event_id(value: Any) -> str:
    """A client-chosen id: 5 to 1024 characters of base32hex."""
    if not isinstance(value, str) or not 5 <= len(value) <= 1024 or set(value) - set(ID_ALPHABET):
        raise bad("Invalid resource id value.")
    return value


def _moment(value: Any, which: str, calendar: Calendar) -> tuple[dict[str, Any], float, bool]:
    """(the time as stored, epoch seconds, all-day) of ``start`` or ``end``."""
    if not isinstance(value, dict) or not ({"date", "dateTime"} & set(value)):
        raise bad(f"Missing {which} time.", "required")
    zone_name = value.get("timeZone")
    zone = times.zone(zone_name) if isinstance(zone_name, str) else None
    if zone_name is not None and zone is None:
        raise bad(f"Invalid time zone definition for {which} time.")
    if value.get("dateTime") is not None:
        moment = times.parse_datetime(value["dateTime"])
        if moment is None:
            raise bad(f"Invalid {which} time.")
        if moment.tzinfo is None:
            if zone is None:
                raise bad(f"Missing time zone definition for {which} time.", "required")
            moment = times.localize(moment, zone)
        stored: dict[str, Any] = {"dateTime": value["dateTime"]}
        if zone_name is not None:
            stored["timeZone"] = zone_name
        return stored, moment.timestamp(), False
    day = times.parse_date(value["date"])
    if day is None:
        raise bad(f"Invalid {which} time.")
    return {"date": value["date"]}, times.start_of_day(day, ZoneInfo(calendar.time_zone)), True


def apply_times(event: Event, body: dict[str, Any], calendar: Calendar) -> bool:
    """Set the event's start and end from ``body`` (both required); True when they changed."""
    start, start_at, start_all_day = _moment(body.get("start"), "start", calendar)
    end, end_at, end_all_day = _moment(body.get("end"), "end", calendar)
    if start_all_day != end_all_day:
        raise bad("Start and end times must either both be date or both be dateTime.")
    if end_at <= start_at:
        raise empty_range()
    changed = (start_at, end_at) != (event.start_at, event.end_at)
    event.start, event.end, event.start_at, event.end_at = start, end, start_at, end_at
    return changed


def patched_times(event: Event, body: dict[str, Any]) -> dict[str, Any]:
    """The start and end an events.patch body makes: a time given replaces the stored one, except that a new
    ``dateTime`` without ``timeZone`` keeps the zone the event had (patch semantics on the sub-object)."""
    result: dict[str, Any] = {}
    for which, stored in (("start", event.start), ("end", event.end)):
        given = body.get(which, stored)
        if (
            isinstance(given, dict)
            and "dateTime" in given
            and "timeZone" not in given
            and "timeZone" in stored
        ):
            given = {**given, "timeZone": stored["timeZone"]}
        result[which] = given
    return result


def _attendees(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise bad("Invalid attendees.")
    attendees: list[dict[str, Any]] = []
    for item in value:
        email = item.get("email") if isinstance(item, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise bad("Invalid attendee email.")
        response = item.get("responseStatus", "needsAction")
        if response not in RESPONSES:
            raise bad("Invalid attendee response status.")
        kept = {
            k: v for k, v in item.items() if k in ("displayName", "optional", "comment", "additionalGuests")
        }
        attendees.append({"email": email, **kept, "responseStatus": response})
    return attendees


def apply_fields(event: Event, body: dict[str, Any], *, replace: bool) -> None:
    """Write the writable fields of ``body`` onto ``event``: all of them (``replace``, events.update) or those
    present (events.patch). Output-only fields in the body (kind, etag, creator, ...) are ignored, as Google
    does when a client sends back what it read."""
    if body.get("recurrence"):
        raise GoogleError(
            501, "sandbox: recurring events are not simulated", reason="notImplemented", status=False
        )
    if "status" in body and not (isinstance(body["status"], str) and body["status"] in STATUSES):
        raise bad("Invalid event status.")
    if replace:
        event.fields = {}
    for key in STORED:
        if key in body:
            if body[key] is None:
                event.fields.pop(key, None)
            else:
                event.fields[key] = body[key]
    if "attendees" in body or replace:
        attendees = _attendees(body.get("attendees") or [])
        event.fields["attendees"] = attendees
    if "status" in body:
        event.status = body["status"]


def _etag(event: Event) -> str:
    return f'"{int(event.updated * 1_000_000) + event.sequence}"'


def html_link(event: Event, calendar: Calendar) -> str:
    eid = base64.urlsafe_b64encode(f"{event.id} {calendar.id}".encode()).decode().rstrip("=")
    return f"https://www.google.com/calendar/event?eid={eid}"


def _time(stored: dict[str, Any], moment: float, zone_name: str) -> dict[str, Any]:
    if "date" in stored:
        return {"date": stored["date"]}
    shown: dict[str, Any] = {"dateTime": times.format_datetime(moment, ZoneInfo(zone_name), zone_name)}
    if "timeZone" in stored:
        shown["timeZone"] = stored["timeZone"]
    return shown


def render(
    event: Event, calendar: Calendar, viewer: Principal, zone_name: str, max_attendees: int | None = None
) -> dict[str, Any]:
    """The Event resource, times in ``zone_name`` (the request's ``timeZone`` or the calendar's)."""
    body: dict[str, Any] = {
        "kind": "calendar#event",
        "etag": _etag(event),
        "id": event.id,
        "status": event.status,
        "htmlLink": html_link(event, calendar),
        "created": rfc3339_millis(event.created),
        "updated": rfc3339_millis(event.updated),
    }
    for key in ("summary", "description", "location", "colorId", "transparency", "visibility"):
        if key in event.fields:
            body[key] = event.fields[key]
    body["creator"] = {"email": event.creator, **({"self": True} if event.creator == viewer.email else {})}
    organizer: dict[str, Any] = {"email": calendar.id}
    if not calendar.primary:
        organizer["displayName"] = calendar.summary
    if calendar.owner == viewer.key:
        organizer["self"] = True
    body["organizer"] = organizer
    body["start"] = _time(event.start, event.start_at, zone_name)
    body["end"] = _time(event.end, event.end_at, zone_name)
    body["iCalUID"] = f"{event.id}@google.com"
    body["sequence"] = event.sequence
    attendees = [_attendee(a, calendar, viewer) for a in event.fields.get("attendees") or ()]
    if attendees:
        if max_attendees is not None and len(attendees) > max_attendees:
            attendees = attendees[:max_attendees]
            body["attendeesOmitted"] = True
        body["attendees"] = attendees
    for key in sorted(STORED - set(body) - {"summary", "description", "location"}):
        if key in event.fields:
            body[key] = event.fields[key]
    body.setdefault("reminders", {"useDefault": True})
    body.setdefault("eventType", "default")
    return body


def _attendee(attendee: dict[str, Any], calendar: Calendar, viewer: Principal) -> dict[str, Any]:
    email = str(attendee["email"]).lower()
    shown = {"email": attendee["email"]}
    if email == calendar.id.lower():
        shown["organizer"] = True
    if email == viewer.email:
        shown["self"] = True
    return shown | {k: v for k, v in attendee.items() if k != "email"}
