"""The mailbox's primary calendar through the Calendar API: list events in a time range (single events,
by start time, shown in a time zone), create, change (the fields given) and delete them, inviting attendees.

Times go to Google as given: ``dateTime`` with its offset, or a wall-clock ``dateTime`` with ``timeZone``,
or an all-day ``date``; Google answers every time with its offset (and the zone it lives in), so an event
keeps its instant whatever zone it is shown or moved in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from poindexter_cloud.identity.access import Caller
from poindexter_cloud.identity.errors import (
    EventNotFound,
    InvalidCursor,
    InvalidEvent,
    InvalidId,
    InvalidTimeRange,
)
from poindexter_cloud.identity.schemas import (
    Attendee,
    AttendeeInput,
    Event,
    EventCreate,
    EventPage,
    EventTime,
    EventUpdate,
)
from poindexter_cloud.identity.validation import (
    Moment,
    email_address,
    event_range,
    event_time,
    header_text,
    instant,
    time_range,
    time_zone,
)
from poindexter_cloud.integrations.errors import ProviderObjectMissing
from poindexter_cloud.integrations.google import GoogleAdapter, GoogleBadRequest

SendUpdates = Literal["all", "external_only", "none"]
GOOGLE_SEND_UPDATES: Final[dict[str, str]] = {"all": "all", "external_only": "externalOnly", "none": "none"}
_ID_CHARACTERS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-@.")


def event_id(value: str) -> str:
    if not value or len(value) > 1024 or set(value) - _ID_CHARACTERS:
        raise InvalidId(f"{value!r} is not an event id.", details={"field": "event_id"})
    return value


def _moment(time: EventTime, field: str) -> Moment:
    return event_time(time.date_time, time.date, time.time_zone, field)


def _google_time(time: EventTime) -> dict[str, Any]:
    """The Calendar API's EventDateTime; the other form is nulled, so a patch replaces rather than merges."""
    if time.date is not None:
        return {"date": time.date, "dateTime": None}
    shown: dict[str, Any] = {"dateTime": time.date_time, "date": None}
    if time.time_zone is not None:
        shown["timeZone"] = time.time_zone
    return shown


def _attendees(attendees: list[AttendeeInput]) -> list[dict[str, Any]]:
    found = []
    for index, attendee in enumerate(attendees):
        mailbox = email_address(attendee.email, f"attendees[{index}].email")
        entry: dict[str, Any] = {"email": mailbox.address, "optional": attendee.optional}
        name = attendee.display_name or mailbox.name
        if name:
            entry["displayName"] = header_text(name, f"attendees[{index}].display_name")
        found.append(entry)
    return found


def _text_fields(summary: str | None, description: str | None, location: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if summary is not None:
        fields["summary"] = header_text(summary, "summary")
    if description is not None:
        fields["description"] = description
    if location is not None:
        fields["location"] = header_text(location, "location")
    return fields


def _rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None


def _time_view(value: Any) -> EventTime:
    data = value if isinstance(value, dict) else {}
    return EventTime(date_time=data.get("dateTime"), date=data.get("date"), time_zone=data.get("timeZone"))


def event_view(data: dict[str, Any]) -> Event:
    organizer = data.get("organizer") if isinstance(data.get("organizer"), dict) else {}
    return Event(
        id=str(data["id"]),
        status=str(data.get("status") or "confirmed"),
        summary=data.get("summary"),
        description=data.get("description"),
        location=data.get("location"),
        start=_time_view(data.get("start")),
        end=_time_view(data.get("end")),
        attendees=[
            Attendee(
                email=str(a.get("email") or ""),
                display_name=a.get("displayName"),
                response_status=str(a.get("responseStatus") or "needsAction"),
                optional=bool(a.get("optional")),
                organizer=bool(a.get("organizer")),
            )
            for a in data.get("attendees") or ()
            if isinstance(a, dict)
        ],
        organizer=(organizer or {}).get("email"),
        html_link=data.get("htmlLink"),
        created=_rfc3339(data.get("created")),
        updated=_rfc3339(data.get("updated")),
    )


def _refused(error: GoogleBadRequest) -> Exception:
    """Google's 400 about an event, as ours."""
    if error.reason == "timeRangeEmpty":
        return InvalidTimeRange("end must be after start.", details={"fields": ["start", "end"]})
    return InvalidEvent("Google Calendar refused the event as given.", details={"reason": error.reason})


async def list_events(
    google: GoogleAdapter,
    caller: Caller,
    *,
    start: str | None,
    end: str | None,
    zone: str | None,
    query: str | None,
    page_token: str | None,
    limit: int,
) -> EventPage:
    low = instant(start, "start") if start is not None else None
    high = instant(end, "end") if end is not None else None
    time_range(low, high, "start", "end")
    if zone is not None:
        time_zone(zone, "time_zone")
    await caller.admit()
    try:
        page = await google.list_events(
            caller.mailbox,
            time_min=low.isoformat() if low else None,
            time_max=high.isoformat() if high else None,
            time_zone=zone,
            query=query,
            page_token=page_token,
            limit=limit,
        )
    except GoogleBadRequest:
        if page_token is not None:
            raise InvalidCursor("page_token is not one this calendar handed out.") from None
        raise
    return EventPage([event_view(e) for e in page.events], page.next_page_token, page.time_zone)


async def create(
    google: GoogleAdapter, caller: Caller, request: EventCreate, send_updates: SendUpdates
) -> Event:
    event_range(_moment(request.start, "start"), _moment(request.end, "end"))
    body = {
        **_text_fields(request.summary, request.description, request.location),
        "start": _google_time(request.start),
        "end": _google_time(request.end),
        "attendees": _attendees(request.attendees),
    }
    await caller.admit()
    try:
        made = await google.insert_event(caller.mailbox, body, send_updates=GOOGLE_SEND_UPDATES[send_updates])
    except GoogleBadRequest as error:
        raise _refused(error) from None
    return event_view(made)


async def update(
    google: GoogleAdapter,
    caller: Caller,
    identifier: str,
    request: EventUpdate,
    send_updates: SendUpdates,
) -> Event:
    """Change the fields given; a new start or end is checked against the other when both are given, and by
    Google against the stored one otherwise."""
    start = _moment(request.start, "start") if request.start is not None else None
    end = _moment(request.end, "end") if request.end is not None else None
    if start is not None and end is not None:
        event_range(start, end)
    body = _text_fields(request.summary, request.description, request.location)
    if request.start is not None:
        body["start"] = _google_time(request.start)
    if request.end is not None:
        body["end"] = _google_time(request.end)
    if request.attendees is not None:
        body["attendees"] = _attendees(request.attendees)
    checked = event_id(identifier)
    await caller.admit()
    try:
        changed = await google.patch_event(
            caller.mailbox, checked, body, send_updates=GOOGLE_SEND_UPDATES[send_updates]
        )
    except ProviderObjectMissing:
        raise EventNotFound(f"The calendar has no event {identifier}.") from None
    except GoogleBadRequest as error:
        raise _refused(error) from None
    return event_view(changed)


async def delete(google: GoogleAdapter, caller: Caller, identifier: str, send_updates: SendUpdates) -> None:
    checked = event_id(identifier)
    await caller.admit()
    try:
        await google.delete_event(caller.mailbox, checked, send_updates=GOOGLE_SEND_UPDATES[send_updates])
    except (ProviderObjectMissing, GoogleBadRequest):
        raise EventNotFound(f"The calendar has no event {identifier} (or it was deleted already).") from None
