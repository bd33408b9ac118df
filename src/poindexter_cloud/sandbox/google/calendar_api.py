"""Google Calendar API v3 (``/calendar/v3/...``) for the delegated user (or a service account acting as
itself, on its own calendar): events (list, get, insert, update, patch, delete, move) and calendars (insert
and get, for secondary calendars).

``calendarId`` is ``primary``, the owner's address or a secondary calendar's id. A calendar of someone else
is 404 "Not Found" (the sandbox shares no calendars). Deleting marks an event ``cancelled``: events.get still
returns it, list shows it with ``showDeleted``, and a second delete is 410 "Resource has been deleted".
``timeMin`` / ``timeMax`` select events ending after / starting before them; times in answers are written in
the request's ``timeZone``, else the calendar's. Sync tokens (``nextSyncToken`` on a list's last page)
return what changed since, deletions included. Recurring events are not simulated (501).
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from typing import Any, Final

from litestar import Request, Response, delete, get, patch, post, put

from . import calendar_events as ev
from . import invitations, times
from .auth import (
    CALENDAR_GET,
    CALENDAR_MOVE,
    CALENDAR_READ,
    CALENDAR_WRITE,
    CALENDARS_WRITE,
    Principal,
    authorize,
    principal,
)
from .common import json_body, page_offset, page_token, query, query_bool, query_int
from .errors import answer
from .store import STATE, Calendar, Event, now, rfc3339_millis

SERVICE: Final = "calendar-json.googleapis.com"
BASE: Final = "/calendar/v3/calendars"
EVENT: Final = BASE + "/{calendar_id:str}/events/{event_id:str}"
SEND_UPDATES: Final = ("all", "externalOnly", "none")
_SYNC_EXCLUSIVE: Final = ("iCalUID", "orderBy", "q", "timeMin", "timeMax", "updatedMin")


def _caller(request: Request[Any, Any, Any], scopes: frozenset[str], method: str) -> Principal:
    return principal(authorize(request, scopes, SERVICE, f"calendar.v3.{method}"))


def _calendar(caller: Principal, calendar_id: str) -> Calendar:
    if calendar_id == "primary":
        return STATE.primary_calendar(caller.key, caller.email)
    calendar = STATE.calendars.get(calendar_id) or STATE.calendars.get(calendar_id.lower())
    if calendar is None:
        owner = STATE.user_by_key(calendar_id)  # an alias of a user names their primary calendar too
        calendar = STATE.calendars.get(owner.primary_email) if owner is not None else None
    if calendar is None or calendar.owner != caller.key:
        raise ev.not_found()
    return calendar


def _event(calendar: Calendar, event_id: str) -> Event:
    event = calendar.events.get(event_id)
    if event is None:
        raise ev.not_found()
    return event


def _zone(request: Request[Any, Any, Any], calendar: Calendar) -> str:
    name = query(request, "timeZone")
    if not name:
        return calendar.time_zone
    if times.zone(name) is None:
        raise ev.bad("Invalid time zone definition.")
    return name


def _send_updates(request: Request[Any, Any, Any]) -> str | None:
    value = query(request, "sendUpdates")
    if value is None:
        return "all" if query_bool(request, "sendNotifications") else None
    if value not in SEND_UPDATES:
        raise ev.calendar_error(
            400, f"Invalid value '{value}' for sendUpdates.", "invalidParameter", location="sendUpdates"
        )
    return value


def _max_attendees(request: Request[Any, Any, Any]) -> int | None:
    return query_int(request, "maxAttendees", 0, 1, None) or None


def _touch(calendar: Calendar, event: Event) -> None:
    calendar.changes += 1
    event.change = calendar.changes
    event.updated = now()


def _answer(
    request: Request[Any, Any, Any], event: Event, calendar: Calendar, caller: Principal
) -> Response[bytes]:
    return answer(ev.render(event, calendar, caller, _zone(request, calendar), _max_attendees(request)))


# ---------------------------------------------------------------------------------------------- events


@get(BASE + "/{calendar_id:str}/events", include_in_schema=False)
async def list_events(request: Request[Any, Any, Any], calendar_id: str) -> Response[bytes]:
    caller = _caller(request, CALENDAR_READ, "Events.List")
    calendar = _calendar(caller, calendar_id)
    zone = _zone(request, calendar)
    limit = min(query_int(request, "maxResults", 250, 1, None), 2500)
    sync = query(request, "syncToken")
    if sync and any(query(request, name) for name in _SYNC_EXCLUSIVE):
        raise ev.bad("Sync token cannot be used with other parameters.", "invalid")
    order = query(request, "orderBy")
    if order not in (None, "startTime", "updated"):
        raise ev.calendar_error(
            400, f"Invalid value '{order}' for orderBy.", "invalidParameter", location="orderBy"
        )
    if order == "startTime" and not query_bool(request, "singleEvents"):
        raise ev.bad("The requested ordering is not available for the particular query.", "badRequest")
    low, high = _instant(request, "timeMin"), _instant(request, "timeMax")
    if low is not None and high is not None and high <= low:
        raise ev.empty_range()
    updated_min = _instant(request, "updatedMin")
    since = _sync_change(calendar, sync) if sync else None
    show_deleted = query_bool(request, "showDeleted") or since is not None or updated_min is not None
    words = (query(request, "q") or "").lower().split()
    uid = query(request, "iCalUID")
    events = [
        e
        for e in calendar.events.values()
        if (show_deleted or e.status != "cancelled")
        and (low is None or e.end_at > low)
        and (high is None or e.start_at < high)
        and (updated_min is None or e.updated >= updated_min)
        and (since is None or e.change > since)
        and (uid is None or f"{e.id}@google.com" == uid)
        and all(word in _searchable(e) for word in words)
    ]
    if order == "startTime":
        events.sort(key=lambda e: (e.start_at, e.end_at, e.id))
    elif order == "updated":
        events.sort(key=lambda e: (e.updated, e.id))
    else:
        events.sort(key=lambda e: (e.created, e.id))
    offset = page_offset(query(request, "pageToken"))
    page = events[offset : offset + limit]
    body: dict[str, Any] = {
        "kind": "calendar#events",
        "etag": f'"{calendar.changes}"',
        "summary": calendar.summary,
        "description": calendar.description,
        "updated": rfc3339_millis(max((e.updated for e in calendar.events.values()), default=now())),
        "timeZone": calendar.time_zone,
        "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}] if calendar.primary else [],
    }
    if offset + limit < len(events):
        body["nextPageToken"] = page_token(offset + limit)
    else:
        body["nextSyncToken"] = _sync_token(calendar)
    attendees = _max_attendees(request)
    body["items"] = [ev.render(e, calendar, caller, zone, attendees) for e in page]
    return answer(body)


def _instant(request: Request[Any, Any, Any], name: str) -> float | None:
    """A time parameter: RFC 3339 with an offset (``Z`` or ``+hh:mm``), else 400."""
    value = query(request, name)
    if not value:
        return None
    moment = times.parse_datetime(value)
    if moment is None or moment.tzinfo is None:
        raise ev.calendar_error(400, "Bad Request", "badRequest")
    return moment.timestamp()


def _searchable(event: Event) -> str:
    fields = event.fields
    parts = [str(fields.get(key) or "") for key in ("summary", "description", "location")]
    for attendee in fields.get("attendees") or ():
        parts += [str(attendee.get("email", "")), str(attendee.get("displayName", ""))]
    return " ".join(parts).lower()


def _sync_token(calendar: Calendar) -> str:
    return base64.urlsafe_b64encode(f"{calendar.id}\n{calendar.changes}".encode()).decode().rstrip("=")


def _sync_change(calendar: Calendar, token: str) -> int:
    """The change counter a sync token stands for; one this calendar did not hand out (another calendar's,
    or one from before a reset) is Google's 410: the client must sync from scratch."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        calendar_id, _, number = text.rpartition("\n")
        change = int(number)
    except ValueError:
        change, calendar_id = -1, ""
    if calendar_id != calendar.id or not 0 <= change <= calendar.changes:
        raise ev.calendar_error(
            410,
            "Sync token is no longer valid, a full sync is required.",
            "fullSyncRequired",
            domain="calendar",
        )
    return change


@get(EVENT, include_in_schema=False)
async def get_event(request: Request[Any, Any, Any], calendar_id: str, event_id: str) -> Response[bytes]:
    caller = _caller(request, CALENDAR_READ, "Events.Get")
    calendar = _calendar(caller, calendar_id)
    return _answer(request, _event(calendar, event_id), calendar, caller)


@post(BASE + "/{calendar_id:str}/events", status_code=200, include_in_schema=False)
async def insert_event(request: Request[Any, Any, Any], calendar_id: str) -> Response[bytes]:
    caller = _caller(request, CALENDAR_WRITE, "Events.Insert")
    calendar = _calendar(caller, calendar_id)
    send_updates = _send_updates(request)
    body = await json_body(request)
    event_id = ev.check_event_id(body["id"]) if body.get("id") is not None else ev.new_event_id()
    if event_id in calendar.events:
        raise ev.calendar_error(409, "The requested identifier already exists.", "duplicate")
    moment = now()
    event = Event(
        id=event_id,
        fields={},
        start={},
        end={},
        start_at=0.0,
        end_at=0.0,
        created=moment,
        updated=moment,
        change=0,
        creator=caller.email,
    )
    ev.apply_fields(event, body, replace=True)
    ev.apply_times(event, body, calendar)
    calendar.events[event.id] = event
    _touch(calendar, event)
    event.created = event.updated
    invitations.notify("invite", event, calendar, caller.user, event.fields["attendees"], send_updates)
    return _answer(request, event, calendar, caller)


async def _change(
    request: Request[Any, Any, Any], calendar_id: str, event_id: str, method: str, *, replace: bool
) -> Response[bytes]:
    caller = _caller(request, CALENDAR_WRITE, method)
    calendar = _calendar(caller, calendar_id)
    event = _event(calendar, event_id)
    send_updates = _send_updates(request)
    body = await json_body(request)
    before = list(event.fields.get("attendees") or [])
    # The change is made on a copy, which replaces the event only once all of it is valid.
    event = dataclasses.replace(event, fields=dict(event.fields))
    ev.apply_fields(event, body, replace=replace)
    moved = False
    if replace:
        moved = ev.apply_times(event, body, calendar)
    elif "start" in body or "end" in body:
        moved = ev.apply_times(event, ev.patched_times(event, body), calendar)
    if moved or any(key in body for key in ("location", "summary")):
        event.sequence += 1
    calendar.events[event.id] = event
    _touch(calendar, event)
    after = event.fields.get("attendees") or []
    kind = "cancel" if event.status == "cancelled" else "update"
    invitations.notify(kind, event, calendar, caller.user, after, send_updates)
    kept = {str(a["email"]).lower() for a in after}
    dropped = [a for a in before if str(a["email"]).lower() not in kept]
    invitations.notify("cancel", event, calendar, caller.user, dropped, send_updates)
    return _answer(request, event, calendar, caller)


@put(EVENT, status_code=200, include_in_schema=False)
async def update_event(request: Request[Any, Any, Any], calendar_id: str, event_id: str) -> Response[bytes]:
    """events.update: the body replaces the event (start and end required)."""
    return await _change(request, calendar_id, event_id, "Events.Update", replace=True)


@patch(EVENT, status_code=200, include_in_schema=False)
async def patch_event(request: Request[Any, Any, Any], calendar_id: str, event_id: str) -> Response[bytes]:
    """events.patch: the fields present replace the event's (an array replaces the whole array)."""
    return await _change(request, calendar_id, event_id, "Events.Patch", replace=False)


@delete(EVENT, status_code=204, include_in_schema=False)
async def delete_event(request: Request[Any, Any, Any], calendar_id: str, event_id: str) -> None:
    caller = _caller(request, CALENDAR_WRITE, "Events.Delete")
    calendar = _calendar(caller, calendar_id)
    event = _event(calendar, event_id)
    send_updates = _send_updates(request)
    if event.status == "cancelled":
        raise ev.calendar_error(410, "Resource has been deleted", "deleted")
    event.status = "cancelled"
    event.sequence += 1
    _touch(calendar, event)
    attendees = event.fields.get("attendees") or []
    invitations.notify("cancel", event, calendar, caller.user, attendees, send_updates)


@post(EVENT + "/move", status_code=200, include_in_schema=False)
async def move_event(request: Request[Any, Any, Any], calendar_id: str, event_id: str) -> Response[bytes]:
    """events.move: the event leaves for ``destination`` (which becomes its organizer); the source keeps a
    cancelled copy, as its sync clients must learn it is gone."""
    caller = _caller(request, CALENDAR_MOVE, "Events.Move")
    source = _calendar(caller, calendar_id)
    event = _event(source, event_id)
    destination_id = query(request, "destination")
    if not destination_id:
        raise ev.calendar_error(400, "Required parameter: destination", "required", location="destination")
    destination = _calendar(caller, destination_id)
    if event.status == "cancelled":
        raise ev.calendar_error(410, "Resource has been deleted", "deleted")
    if destination is source:
        return _answer(request, event, source, caller)
    if event.id in destination.events:
        raise ev.calendar_error(409, "The requested identifier already exists.", "duplicate")
    tombstone = dataclasses.replace(event, fields=dict(event.fields), status="cancelled")
    source.events[event.id] = tombstone
    _touch(source, tombstone)
    destination.events[event.id] = event
    _touch(destination, event)
    return _answer(request, event, destination, caller)


# ---------------------------------------------------------------------------------------------- calendars


def _render_calendar(calendar: Calendar) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "calendar#calendar",
        "etag": f'"{calendar.changes}"',
        "id": calendar.id,
        "summary": calendar.summary,
    }
    if calendar.description:
        body["description"] = calendar.description
    body["timeZone"] = calendar.time_zone
    body["conferenceProperties"] = {"allowedConferenceSolutionTypes": ["hangoutsMeet"]}
    return body


@post(BASE, status_code=200, include_in_schema=False)
async def insert_calendar(request: Request[Any, Any, Any]) -> Response[bytes]:
    """calendars.insert: a secondary calendar owned by the caller."""
    caller = _caller(request, CALENDARS_WRITE, "Calendars.Insert")
    body = await json_body(request)
    summary = body.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise ev.bad("Missing title.", "required")
    zone_name = body.get("timeZone") or STATE.primary_calendar(caller.key, caller.email).time_zone
    if not isinstance(zone_name, str) or times.zone(zone_name) is None:
        raise ev.bad("Invalid time zone definition.")
    calendar_id = f"c_{secrets.token_hex(32)}@group.calendar.google.com"
    calendar = Calendar(
        calendar_id, caller.key, summary, zone_name, False, str(body.get("description") or "")
    )
    STATE.add_calendar(calendar)
    return answer(_render_calendar(calendar))


@get(BASE + "/{calendar_id:str}", include_in_schema=False)
async def get_calendar(request: Request[Any, Any, Any], calendar_id: str) -> Response[bytes]:
    caller = _caller(request, CALENDAR_GET, "Calendars.Get")
    return answer(_render_calendar(_calendar(caller, calendar_id)))


HANDLERS: Final = [
    list_events,
    get_event,
    insert_event,
    update_event,
    patch_event,
    delete_event,
    move_event,
    insert_calendar,
    get_calendar,
]
