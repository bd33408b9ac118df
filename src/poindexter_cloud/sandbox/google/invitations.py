"""The mail Google Calendar sends attendees when ``sendUpdates`` (or the older ``sendNotifications``) asks
for it: one message per attendee from the organizer, "Invitation: ...", "Updated invitation: ..." or
"Canceled event: ...", with the event attached as ``invite.ics`` (iCalendar, METHOD:REQUEST or CANCEL). It
goes the way mail sent with Gmail goes: into the mailboxes of the sandbox domain, to the outbound log for
everyone else. ``externalOnly`` writes only to attendees outside the domain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from . import gmail, mime
from .store import STATE, Calendar, Event, User, now

SUBJECTS: Final = {"invite": "Invitation", "update": "Updated invitation", "cancel": "Canceled event"}


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\n")
        .replace("\n", "\\n")
    )


def _fold(line: str) -> str:
    """RFC 5545 lines of at most 75 octets, continued with a leading space."""
    out: list[str] = []
    while len(line.encode()) > 75:
        cut = 75
        while len(line[:cut].encode()) > 75:
            cut -= 1
        out.append(line[:cut])
        line = " " + line[cut:]
    out.append(line)
    return "\r\n".join(out)


def _ics_time(name: str, stored: dict[str, Any], moment: float) -> str:
    if "date" in stored:
        return f"{name};VALUE=DATE:{stored['date'].replace('-', '')}"
    return f"{name}:{datetime.fromtimestamp(moment, UTC):%Y%m%dT%H%M%SZ}"


def ics(event: Event, calendar: Calendar, organizer: User, method: str) -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "PRODID:-//Google Inc//Google Calendar 70.9054//EN",
        "VERSION:2.0",
        "CALSCALE:GREGORIAN",
        f"METHOD:{method}",
        "BEGIN:VEVENT",
        _ics_time("DTSTART", event.start, event.start_at),
        _ics_time("DTEND", event.end, event.end_at),
        f"DTSTAMP:{datetime.fromtimestamp(now(), UTC):%Y%m%dT%H%M%SZ}",
        f"ORGANIZER;CN={_escape(organizer.full_name or calendar.id)}:mailto:{calendar.id}",
        f"UID:{event.id}@google.com",
    ]
    for attendee in event.fields.get("attendees") or ():
        status = {"needsAction": "NEEDS-ACTION", "declined": "DECLINED", "tentative": "TENTATIVE"}.get(
            attendee["responseStatus"], "ACCEPTED"
        )
        name = _escape(str(attendee.get("displayName") or attendee["email"]))
        lines.append(f"ATTENDEE;CN={name};PARTSTAT={status};RSVP=TRUE:mailto:{attendee['email']}")
    for key, field in (("summary", "SUMMARY"), ("description", "DESCRIPTION"), ("location", "LOCATION")):
        if event.fields.get(key):
            lines.append(f"{field}:{_escape(str(event.fields[key]))}")
    lines += [
        f"SEQUENCE:{event.sequence}",
        f"STATUS:{'CANCELLED' if method == 'CANCEL' else 'CONFIRMED'}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"


def _when(event: Event, calendar: Calendar) -> str:
    zone = ZoneInfo(calendar.time_zone)
    start = datetime.fromtimestamp(event.start_at, zone)
    if "date" in event.start:
        return f"{start:%a %b %d, %Y}"
    end = datetime.fromtimestamp(event.end_at, zone)
    return f"{start:%a %b %d, %Y %H:%M} - {end:%H:%M} ({calendar.time_zone})"


def _recipients(attendees: list[dict[str, Any]], calendar: Calendar, send_updates: str | None) -> list[str]:
    """The attendees ``send_updates`` writes to (never the organizer)."""
    if send_updates not in ("all", "externalOnly"):
        return []
    addresses = [str(a["email"]).lower() for a in attendees]
    chosen = [a for a in dict.fromkeys(addresses) if a != calendar.id.lower()]
    return [a for a in chosen if not STATE.in_domain(a)] if send_updates == "externalOnly" else chosen


def notify(
    kind: str,
    event: Event,
    calendar: Calendar,
    organizer: User | None,
    attendees: list[dict[str, Any]],
    send_updates: str | None,
) -> None:
    """Mail the ``attendees`` that ``send_updates`` names about ``event`` (``kind``: invite, update or
    cancel), from ``organizer``; nothing is sent for a service account's own calendar."""
    addresses = _recipients(attendees, calendar, send_updates)
    if organizer is None or not addresses:
        return
    summary = str(event.fields.get("summary") or "(No title)")
    method = "CANCEL" if kind == "cancel" else "REQUEST"
    invite = ics(event, calendar, organizer, method)
    text = [summary, _when(event, calendar)]
    if event.fields.get("location"):
        text.append(f"Location: {event.fields['location']}")
    if event.fields.get("description"):
        text += ["", str(event.fields["description"])]
    text += ["", "Invitation from Google Calendar"]
    for address in addresses:
        raw = mime.build(
            {
                "from": f"{organizer.full_name} <{organizer.primary_email}>",
                "to": address,
                "subject": f"{SUBJECTS[kind]}: {summary} @ {_when(event, calendar)} ({address})",
                "text": "\n".join(text) + "\n",
                "message_id": mime.new_message_id(),
                "attachments": [
                    {"filename": "invite.ics", "mime_type": "application/ics", "content": invite}
                ],
            }
        )
        gmail.route(organizer, raw, [address])
