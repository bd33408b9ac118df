"""The identity API Dex calls, end to end: our routes over HTTP with a real API key, against the sandbox's
Google Workspace, Telnyx and signal-cli-rest-api, with what happened there read back through the official
SDKs (google-api-python-client as the recipient's mailbox, telnyx) and the simulators' controls.

One subscriber ("dex") is provisioned for the module, as a comp plan does it; a web role of this module's own
serves the routes, with ``PROXY_BASE_URL`` set to the session's proxy so the typed client's AI clients reach
it. Usage events are read in PostgreSQL once the session's worker has drained them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email import policy
from typing import Any

import httpx
import pytest
import telnyx
from google.oauth2 import service_account
from googleapiclient.discovery import build
from sqlalchemy import func, select, update

from conftest import Billing, RunningServer, eventually, google_call
from poindexter_cloud.billing import usage_sync
from poindexter_cloud.billing.models import Subscription, UsageEvent, UsageMonthly
from poindexter_cloud.client import DexClient, PoindexterError, upload
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role
from poindexter_cloud.identity.schemas import EventCreate, EventTime, EventUpdate
from poindexter_cloud.provisioning import jobs
from poindexter_cloud.sandbox.telnyx.signing import sign
from poindexter_cloud.webhooks.models import WebhookEvent
from test_accounts import bearer
from test_provisioning import World, comp_user, ctx, point_profile_at, ready

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TELNYX_KEY = "KEYsandbox"
OUTSIDER = "+16465550142"  # a phone outside the sandbox's Telnyx account
MAILBOX_SCOPES = ["https://mail.google.com/", "https://www.googleapis.com/auth/calendar"]


@dataclasses.dataclass
class Dex:
    """A provisioned subscriber and an HTTP client that calls our web role with its API key."""

    user: dict[str, Any]
    key: str
    email: str
    number: str
    identity_id: uuid.UUID
    api: httpx.AsyncClient


@dataclasses.dataclass
class Env:
    w: World
    web_url: str
    sandbox_url: str
    domain: str
    service_account: dict[str, Any]

    @property
    def sandbox(self) -> httpx.AsyncClient:
        return self.w.sandbox

    def gmail(self, mailbox: str) -> Any:
        """The Gmail API as ``mailbox`` (the official SDK, the sandbox's service account)."""
        return build(
            "gmail",
            "v1",
            credentials=self._as(mailbox),
            static_discovery=True,
            client_options={"api_endpoint": f"{self.sandbox_url}/google/"},
        )

    def calendar(self, mailbox: str) -> Any:
        return build(
            "calendar",
            "v3",
            credentials=self._as(mailbox),
            static_discovery=True,
            client_options={"api_endpoint": f"{self.sandbox_url}/google/calendar/v3/"},
        )

    def _as(self, mailbox: str) -> Any:
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            self.service_account, scopes=MAILBOX_SCOPES
        )
        return credentials.with_subject(mailbox)

    async def new_mailbox(self) -> str:
        """A Workspace user of the sandbox domain (someone else at the company), made through the SDK."""
        address = f"friend-{uuid.uuid4().hex[:10]}@{self.domain}"
        body = {
            "primaryEmail": address,
            "name": {"givenName": "Ada", "familyName": "Friend"},
            "password": "x" * 12,
        }
        await google_call(self.w.directory.users().insert(body=body))
        return address


@pytest.fixture(scope="module")
async def env(
    billing: Billing, sandbox_server: RunningServer, proxy_server: RunningServer
) -> AsyncIterator[Env]:
    """A web role of this module's (the billing fixture's settings, the session's proxy as PROXY_BASE_URL)
    receiving the sandbox Telnyx's webhooks, and the SDK clients the assertions use."""
    settings = dataclasses.replace(billing.settings, proxy_base_url=proxy_server.url)
    resources = await Resources.open(settings)
    server = RunningServer(create_app(Role.WEB, settings, resources))
    info = (await billing.sandbox.get("/google/_control/service-account")).json()
    directory_credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info, scopes=["https://www.googleapis.com/auth/admin.directory.user"]
    ).with_subject(settings.google_admin)
    directory = build(
        "admin",
        "directory_v1",
        credentials=directory_credentials,
        static_discovery=True,
        client_options={"api_endpoint": f"{sandbox_server.url}/google/"},
    )
    try:
        async with (
            server,
            telnyx.AsyncTelnyx(api_key=TELNYX_KEY, base_url=f"{sandbox_server.url}/telnyx/v2") as client,
            httpx.AsyncClient(base_url=server.url, timeout=20) as web,
        ):
            profile_id = await point_profile_at(client, f"{server.url}/webhooks/telnyx")
            ours = dataclasses.replace(billing, web=web)
            w = World(ours, billing.resources, client, directory, billing.sandbox, server.url, profile_id)
            yield Env(w, server.url, sandbox_server.url, settings.google_workspace_domain, info)
    finally:
        await resources.close()


async def subscriber(env: Env) -> Dex:
    """A comp-plan subscriber, provisioned to the end, with an API key."""
    user = await comp_user(env.w)
    identity = await ready(env.w, user["id"])
    assert identity.workspace_email and identity.phone_number
    made = await env.w.b.web.post("/v1/api-keys/", json={"name": "dex"}, headers=bearer(user))
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    api = httpx.AsyncClient(base_url=env.web_url, timeout=20, headers={"Authorization": f"Bearer {key}"})
    return Dex(user, key, identity.workspace_email, identity.phone_number, identity.id, api)


@pytest.fixture(scope="module")
async def dex(env: Env) -> AsyncIterator[Dex]:
    found = await subscriber(env)
    async with found.api:
        yield found


async def usage_count(env: Env, user_id: uuid.UUID, event_type: str) -> int:
    async with env.w.resources.db.sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(UsageEvent)
            .where(UsageEvent.user_id == user_id, UsageEvent.event_type == event_type)
        )
    return int(found or 0)


async def counted(env: Env, user_id: uuid.UUID, event_type: str, wanted: int) -> None:
    """Exactly ``wanted`` events of that type reach usage_events (and no more arrive shortly after)."""

    async def enough() -> bool:
        return await usage_count(env, user_id, event_type) >= wanted

    await eventually(enough)
    await asyncio.sleep(0.3)
    assert await usage_count(env, user_id, event_type) == wanted


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape, with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# --- the identity -------------------------------------------------------------------------------------------


async def test_the_identity_gives_dex_its_whole_configuration(
    env: Env, dex: Dex, proxy_server: RunningServer
) -> None:
    shown = await dex.api.get("/v1/identity")
    assert shown.status_code == 200, shown.text
    config = shown.json()
    assert (config["status"], config["ready"], config["pending"]) == ("active", True, [])
    assert (config["email"], config["phone_number"], config["signal"]) == (
        dex.email,
        dex.number,
        "registered",
    )
    assert config["parts"]["email"] == {
        "status": "active",
        "state": "ready",
        "address": dex.email,
        "pending": [],
    }
    assert config["parts"]["phone"]["number"] == dex.number and config["parts"]["signal"]["state"] == "ready"
    assert config["proxy"] == {
        "base_url": proxy_server.url,
        "anthropic_base_url": proxy_server.url,
        "openai_base_url": f"{proxy_server.url}/v1",
    }
    assert config["plan"] == {"name": "basic", "state": "active"}
    assert config["limits"]["operations"]["sms_send"] == {"per_minute": 10, "per_day": 200}
    assert config["limits"]["ai_requests_per_minute"] == 60
    for part, wanted in (("email", dex.email), ("phone", dex.number), ("signal", dex.number)):
        shown = (await dex.api.get(f"/v1/identity/{part}")).json()
        assert shown["state"] == "ready" and wanted in (shown.get("address"), shown.get("number"))


async def test_an_identity_being_provisioned_says_what_is_pending_instead_of_failing(env: Env) -> None:
    user = await comp_user(env.w, start=False)  # subscribed; provisioning has not run yet
    made = await env.w.b.web.post("/v1/api-keys/", json={"name": "dex"}, headers=bearer(user))
    headers = {"x-api-key": made.json()["key"]}
    async with httpx.AsyncClient(base_url=env.web_url, headers=headers) as api:
        config = (await api.get("/v1/identity")).json()
        assert (config["status"], config["ready"]) == ("provisioning", False)
        assert set(config["pending"]) == {"mailbox", "number", "messaging", "signal"}
        assert config["parts"]["email"]["state"] == "pending" and config["email"] is None
        shown = (await api.get("/v1/identity/phone")).json()
        assert (shown["state"], shown["pending"]) == ("pending", ["number", "messaging"])
        refused = await api.post("/v1/email/send", json={"to": ["a@example.com"], "text": "hi"})
        error = error_of(refused, 409, "identity_pending")
        assert error["details"] == {"part": "email", "pending": ["mailbox"], "status": "provisioning"}
        error_of(await api.get("/v1/sms/messages"), 409, "identity_pending")
        error_of(await api.get("/v1/signal/messages"), 409, "identity_pending")
    nobody = await env.w.b.web.post(
        "/v1/auth/register",
        json={"email": f"n-{uuid.uuid4().hex}@example.com", "password": "correct horse battery"},
    )
    error_of(await env.w.b.web.get("/v1/identity", headers=bearer(nobody.json())), 404, "no_identity")


# --- email --------------------------------------------------------------------------------------------------


def mime(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


async def test_an_email_sent_arrives_in_the_recipients_mailbox_as_a_proper_mime_message(
    env: Env, dex: Dex
) -> None:
    friend, hidden = await env.new_mailbox(), await env.new_mailbox()
    tag = uuid.uuid4().hex[:8]
    pdf = b"%PDF-1.4 a small report\n" * 40
    sent = await dex.api.post(
        "/v1/email/send",
        json={
            "to": [f"Ada Friend <{friend}>"],
            "cc": ["outside@example.org"],
            "bcc": [hidden],
            "subject": f"Quarterly report {tag} \u2013 draft",
            "text": "Hello Ada,\nthe report is attached.",
            "html": "<p>Hello Ada,</p><p>the report is <b>attached</b>.</p>",
            "from_name": "Dex Assistant",
            "attachments": [{"filename": "report.pdf", "content_base64": base64.b64encode(pdf).decode()}],
        },
    )
    assert sent.status_code == 201, sent.text
    body = sent.json()
    gmail = env.gmail(friend)
    # (By subject: the sandbox's search does not read ``rfc822msgid:``, whose name has digits.)
    found = await google_call(gmail.users().messages().list(userId="me", q=f"subject:{tag}"))
    [item] = found["messages"]
    raw = await google_call(gmail.users().messages().get(userId="me", id=item["id"], format="raw"))
    message = mime(base64.urlsafe_b64decode(raw["raw"] + "=" * (-len(raw["raw"]) % 4)))
    assert message["From"] == f"Dex Assistant <{dex.email}>"
    assert message["To"] == f"Ada Friend <{friend}>" and message["Cc"] == "outside@example.org"
    assert message["Bcc"] is None and message["Subject"] == f"Quarterly report {tag} \u2013 draft"
    assert message["Message-ID"] == body["message_id"] and message["Date"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().replace("\r\n", "\n").strip() == "Hello Ada,\nthe report is attached."
    assert "<b>attached</b>" in html.get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "report.pdf" and attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf
    # The Bcc recipient got it too, without seeing the Bcc; the outside address left through Google.
    hidden_copy = await google_call(
        env.gmail(hidden).users().messages().list(userId="me", q=f"subject:{tag}")
    )
    assert len(hidden_copy["messages"]) == 1
    outbound = (
        await env.sandbox.get("/google/_control/outbound", params={"to": "outside@example.org"})
    ).json()
    assert body["message_id"] in [m["message_id"] for m in outbound["messages"]]
    # The sender's own copy, in its Sent folder.
    sent_folder = (await dex.api.get("/v1/email/inbox", params={"folder": "sent", "subject": tag})).json()
    assert [m["id"] for m in sent_folder["messages"]] == [body["id"]]
    await counted(env, dex.user["id"], "email_sent", 1)


async def test_an_email_with_a_nine_megabyte_attachment_arrives_whole(env: Env, dex: Dex) -> None:
    # Sent as a media upload, as Gmail takes messages up to 35 MB (its attachments up to 25 MB).
    settings = dataclasses.replace(env.w.b.settings, identity_max_attachment_bytes=12 * 1024 * 1024)
    resources = await Resources.open(settings)
    friend, tag = await env.new_mailbox(), uuid.uuid4().hex[:8]
    scan = bytes(range(256)) * (9 * 1024 * 1024 // 256)  # 9 MiB
    encoded = base64.b64encode(scan).decode()
    try:
        async with (
            RunningServer(create_app(Role.WEB, settings, resources)) as server,
            httpx.AsyncClient(base_url=server.url, timeout=60, headers=dex.api.headers) as api,
        ):
            sent = await api.post(
                "/v1/email/send",
                json={
                    "to": [friend],
                    "subject": f"Scans {tag}",
                    "text": "The scan, at full size.",
                    "attachments": [{"filename": "scan.bin", "content_base64": encoded}],
                },
            )
    finally:
        await resources.close()
    assert sent.status_code == 201, sent.text
    gmail = env.gmail(friend)
    [item] = (await google_call(gmail.users().messages().list(userId="me", q=f"subject:{tag}")))["messages"]
    raw = await google_call(gmail.users().messages().get(userId="me", id=item["id"], format="raw"))
    message = mime(base64.urlsafe_b64decode(raw["raw"] + "=" * (-len(raw["raw"]) % 4)))
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "scan.bin" and attachment.get_content() == scan


async def inject(env: Env, to: str, **mail: Any) -> dict[str, Any]:
    delivered = await env.sandbox.post("/google/_control/inbound", json={"to": to, **mail})
    assert delivered.status_code == 200, delivered.text
    [copy] = delivered.json()["delivered"]
    return dict(copy)


async def test_received_mail_is_paged_filtered_read_replied_to_and_trashed(env: Env, dex: Dex) -> None:
    tag = uuid.uuid4().hex[:8]
    first = await inject(
        env, dex.email, **{"from": "Bob <bob@example.net>", "subject": f"Lunch {tag}", "text": "Noon?"}
    )
    second = await inject(
        env,
        dex.email,
        **{
            "from": "Carol <carol@example.net>",
            "subject": f"Invoice {tag}",
            "text": "Attached.",
            "html": "<p>Attached.</p>",
            "attachments": [{"filename": "invoice.txt", "content": "total: 42"}],
        },
    )
    third = await inject(
        env, dex.email, **{"from": "bob@example.net", "subject": f"Dinner {tag}", "text": "7pm?"}
    )

    page = (await dex.api.get("/v1/email/inbox", params={"q": tag, "limit": 2})).json()
    assert [m["id"] for m in page["messages"]] == [third["id"], second["id"]]  # newest first
    assert page["next_page_token"]
    rest = (
        await dex.api.get(
            "/v1/email/inbox", params={"q": tag, "limit": 2, "page_token": page["next_page_token"]}
        )
    ).json()
    assert [m["id"] for m in rest["messages"]] == [first["id"]] and rest["next_page_token"] is None
    summary = rest["messages"][0]
    assert summary["sender"] == {"address": "bob@example.net", "name": "Bob"}
    assert summary["subject"] == f"Lunch {tag}" and summary["unread"] is True and "INBOX" in summary["labels"]

    from_bob = (await dex.api.get("/v1/email/inbox", params={"q": tag, "from": "bob@example.net"})).json()
    assert {m["id"] for m in from_bob["messages"]} == {first["id"], third["id"]}
    with_files = (await dex.api.get("/v1/email/inbox", params={"q": tag, "has_attachment": "true"})).json()
    assert [m["id"] for m in with_files["messages"]] == [second["id"]]

    shown = (await dex.api.get(f"/v1/email/messages/{second['id']}")).json()
    assert (shown["text"].strip(), shown["html"].strip()) == ("Attached.", "<p>Attached.</p>")
    [info] = shown["attachments"]
    assert (info["filename"], info["content_type"], info["size"]) == ("invoice.txt", "text/plain", 9)
    fetched = (
        await dex.api.get(f"/v1/email/messages/{second['id']}/attachments/{info['attachment_id']}")
    ).json()
    assert base64.b64decode(fetched["content_base64"]) == b"total: 42"

    reply = await dex.api.post(
        "/v1/email/send",
        json={"to": ["carol@example.net"], "text": "Paid.", "reply_to_message_id": second["id"]},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["thread_id"] == second["threadId"]
    outbound = (await env.sandbox.get("/google/_control/outbound", params={"to": "carol@example.net"})).json()
    answer = mime(base64.b64decode(outbound["messages"][-1]["raw"]))
    assert answer["Subject"] == f"Re: Invoice {tag}" and answer["In-Reply-To"] == shown["message_id"]
    assert shown["message_id"] in answer["References"]

    assert (await dex.api.delete(f"/v1/email/messages/{first['id']}")).status_code == 204
    trashed = (await dex.api.get(f"/v1/email/messages/{first['id']}")).json()
    assert "TRASH" in trashed["labels"] and "INBOX" not in trashed["labels"]
    left = (await dex.api.get("/v1/email/inbox", params={"q": tag})).json()
    assert [m["id"] for m in left["messages"]] == [third["id"], second["id"]]
    in_trash = (await dex.api.get("/v1/email/inbox", params={"q": tag, "folder": "trash"})).json()
    assert [m["id"] for m in in_trash["messages"]] == [first["id"]]

    # Each received message counted once, however often it was listed or read; the reply is a send.
    await counted(env, dex.user["id"], "email_received", 3)


# --- calendar -----------------------------------------------------------------------------------------------


def instant_of(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


async def test_an_event_is_created_moved_and_deleted_across_time_zones(env: Env, dex: Dex) -> None:
    friend = await env.new_mailbox()
    calendar = env.calendar(dex.email)
    # Saturday 23:30 in New York is Sunday 04:30 UTC and 13:30 in Tokyo: a day later, wherever it is read.
    made = await dex.api.post(
        "/v1/calendar/events",
        json={
            "summary": "Call with Ada",
            "start": {"date_time": "2026-03-07T23:30:00", "time_zone": "America/New_York"},
            "end": {"date_time": "2026-03-08T00:30:00", "time_zone": "America/New_York"},
            "attendees": [{"email": friend, "display_name": "Ada"}],
            "location": "Zoom",
        },
    )
    assert made.status_code == 201, made.text
    event = made.json()
    stored = await google_call(calendar.events().get(calendarId="primary", eventId=event["id"]))
    assert instant_of(stored["start"]["dateTime"]) == datetime(2026, 3, 8, 4, 30, tzinfo=UTC)
    assert stored["start"]["timeZone"] == "America/New_York"
    assert [(a["email"], a["responseStatus"]) for a in stored["attendees"]] == [(friend, "needsAction")]
    invited = await google_call(env.gmail(friend).users().messages().list(userId="me", q="Call with Ada"))
    assert invited.get("messages"), "the attendee got no invitation"

    tokyo = (
        await dex.api.get(
            "/v1/calendar/events",
            params={
                "start": "2026-03-08T00:00:00Z",
                "end": "2026-03-09T00:00:00Z",
                "time_zone": "Asia/Tokyo",
            },
        )
    ).json()
    [shown] = [e for e in tokyo["events"] if e["id"] == event["id"]]
    assert shown["start"]["date_time"] == "2026-03-08T13:30:00+09:00"
    assert shown["attendees"][0]["display_name"] == "Ada" and shown["location"] == "Zoom"
    earlier = (
        await dex.api.get(
            "/v1/calendar/events", params={"start": "2026-03-07T00:00:00Z", "end": "2026-03-08T04:00:00Z"}
        )
    ).json()
    assert event["id"] not in [e["id"] for e in earlier["events"]]

    # Moved past New York's switch to summer time, given in Berlin's wall-clock time.
    moved = await dex.api.put(
        f"/v1/calendar/events/{event['id']}",
        json={
            "start": {"date_time": "2026-03-08T15:00:00", "time_zone": "Europe/Berlin"},
            "end": {"date_time": "2026-03-08T16:00:00+01:00"},
        },
    )
    assert moved.status_code == 200, moved.text
    stored = await google_call(
        calendar.events().get(calendarId="primary", eventId=event["id"], timeZone="America/New_York")
    )
    assert instant_of(stored["start"]["dateTime"]) == datetime(2026, 3, 8, 14, 0, tzinfo=UTC)
    assert stored["start"]["dateTime"] == "2026-03-08T10:00:00-04:00"  # after the change: EDT
    assert stored["summary"] == "Call with Ada" and stored["location"] == "Zoom"  # untouched fields stay

    backwards = await dex.api.put(
        f"/v1/calendar/events/{event['id']}", json={"end": {"date_time": "2026-03-08T12:00:00Z"}}
    )
    error_of(backwards, 400, "invalid_time_range")  # Google finds the range empty; we say so in our words

    assert (await dex.api.delete(f"/v1/calendar/events/{event['id']}")).status_code == 204
    gone = await google_call(calendar.events().get(calendarId="primary", eventId=event["id"]))
    assert gone["status"] == "cancelled"
    after = (await dex.api.get("/v1/calendar/events", params={"start": "2026-03-08T00:00:00Z"})).json()
    assert event["id"] not in [e["id"] for e in after["events"]]
    error_of(await dex.api.delete(f"/v1/calendar/events/{event['id']}"), 404, "event_not_found")


async def test_events_are_paged_in_start_order(env: Env, dex: Dex) -> None:
    ids = []
    for day in (12, 10, 11):
        made = await dex.api.post(
            "/v1/calendar/events",
            json={
                "summary": f"Standup {day}",
                "start": {"date": f"2026-05-{day}"},
                "end": {"date": f"2026-05-{day + 1}"},
            },
            params={"send_updates": "none"},
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    window: dict[str, str | int] = {
        "start": "2026-05-01T00:00:00Z",
        "end": "2026-06-01T00:00:00Z",
        "limit": 2,
    }
    first = (await dex.api.get("/v1/calendar/events", params=window)).json()
    assert [e["start"]["date"] for e in first["events"]] == ["2026-05-10", "2026-05-11"]
    assert first["next_page_token"]
    rest = (
        await dex.api.get("/v1/calendar/events", params={**window, "page_token": first["next_page_token"]})
    ).json()
    assert [e["id"] for e in rest["events"]] == [ids[0]] and rest["next_page_token"] is None


# --- Signal -------------------------------------------------------------------------------------------------


async def outside_user(env: Env, name: str) -> str:
    number = f"+1628555{uuid.uuid4().int % 10_000:04d}"
    made = await env.sandbox.post("/signal/_control/outside_users", json={"number": number, "name": name})
    assert made.status_code == 201, made.text
    return number


async def phone_of(env: Env, number: str) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = (
        await env.sandbox.get(f"/signal/_control/outside_users/{number}")
    ).json()["received"]
    return received


async def test_a_signal_message_reaches_an_outside_user_whose_reply_dex_receives_once(
    env: Env, dex: Dex
) -> None:
    alice = await outside_user(env, "Alice")
    photo = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    sent = await dex.api.post(
        "/v1/signal/send",
        json={
            "recipients": [alice],
            "message": "Your parcel arrives at 3pm.",
            "attachments": [{"filename": "map.png", "content_base64": base64.b64encode(photo).decode()}],
        },
    )
    assert sent.status_code == 201, sent.text
    [got] = await phone_of(env, alice)
    assert (got["from"], got["message"], got["timestamp"]) == (
        dex.number,
        "Your parcel arrives at 3pm.",
        sent.json()["timestamp"],
    )
    assert [(a["filename"], base64.b64decode(a["base64"])) for a in got["attachments"]] == [
        ("map.png", photo)
    ]

    start = (await dex.api.get("/v1/signal/messages", params={"receive": "false", "limit": 200})).json()
    cursor = start["next_cursor"]
    note = base64.b64encode(b"see you then").decode()
    reply = await env.sandbox.post(
        f"/signal/_control/outside_users/{alice}/messages",
        json={"recipient": dex.number, "message": "Thanks!", "base64_attachments": [note]},
    )
    assert reply.status_code == 201, reply.text
    page = (await dex.api.get("/v1/signal/messages", params={"after": cursor})).json()  # this poll receives
    [message] = page["messages"]
    assert (message["source"], message["source_name"], message["body"]) == (alice, "Alice", "Thanks!")
    assert message["timestamp"] == reply.json()["timestamp"] and message["group_id"] is None
    assert page["next_cursor"] == message["id"] > cursor and page["has_more"] is False
    [attached] = message["attachments"]
    fetched = (await dex.api.get(f"/v1/signal/attachments/{attached['id']}")).json()
    assert base64.b64decode(fetched["content_base64"]) == b"see you then"
    again = (await dex.api.get("/v1/signal/messages", params={"after": page["next_cursor"]})).json()
    assert again == {"messages": [], "next_cursor": page["next_cursor"], "has_more": False}
    # What the keep-alive receives meanwhile is stored for the next poll, never lost between two.
    await env.sandbox.post(
        f"/signal/_control/outside_users/{alice}/messages",
        json={"recipient": dex.number, "message": "One more"},
    )
    await jobs.keep_signal_alive(ctx(env.w))
    later = (
        await dex.api.get("/v1/signal/messages", params={"after": page["next_cursor"], "receive": "false"})
    ).json()
    assert [m["body"] for m in later["messages"]] == ["One more"]

    contacts = (await dex.api.get("/v1/signal/contacts")).json()
    assert {"number": alice, "name": "Alice", "profile_name": "Alice"}.items() <= next(
        c for c in contacts["contacts"] if c["number"] == alice
    ).items()
    await counted(env, dex.user["id"], "signal_sent", 1)
    await counted(env, dex.user["id"], "signal_received", 2)


async def test_a_signal_message_to_a_group_reaches_its_members(env: Env, dex: Dex) -> None:
    bob = await outside_user(env, "Bob")
    made = await env.sandbox.post(
        f"/signal/v1/groups/{dex.number}", json={"name": "Family", "members": [bob]}
    )
    assert made.status_code == 201, made.text
    contacts = (await dex.api.get("/v1/signal/contacts")).json()
    [family] = [g for g in contacts["groups"] if g["name"] == "Family"]
    assert family["id"] == made.json()["id"] and set(family["members"]) == {dex.number, bob}
    sent = await dex.api.post("/v1/signal/send", json={"group_id": family["id"], "message": "Dinner at 7"})
    assert sent.status_code == 201, sent.text
    [got] = await phone_of(env, bob)
    assert got["message"] == "Dinner at 7" and got["group"] == {"id": family["id"], "name": "Family"}
    # Bob answers in the group: the message says which group, in the form a send takes.
    await env.sandbox.post(
        f"/signal/_control/outside_users/{bob}/messages", json={"recipient": family["id"], "message": "Yes"}
    )
    page = (await dex.api.get("/v1/signal/messages", params={"limit": 200})).json()
    [answer] = [m for m in page["messages"] if m["source"] == bob and m["body"] == "Yes"]
    assert answer["group_id"] == family["id"]


# --- SMS ----------------------------------------------------------------------------------------------------


async def test_sms_sent_over_telnyx_and_received_are_listed_in_order_past_a_cursor(
    env: Env, dex: Dex
) -> None:
    start = (await dex.api.get("/v1/sms/messages")).json()["next_cursor"]
    sent = await dex.api.post("/v1/sms/send", json={"to": OUTSIDER, "text": "Your table is booked for 8."})
    assert sent.status_code == 201, sent.text
    sms = sent.json()
    assert (sms["direction"], sms["from_number"], sms["to_number"], sms["parts"]) == (
        "outbound",
        dex.number,
        OUTSIDER,
        1,
    )
    at_telnyx = (await env.w.telnyx.messages.retrieve(sms["telnyx_message_id"])).data
    assert at_telnyx is not None and at_telnyx.text == "Your table is booked for 8."
    assert at_telnyx.from_ is not None and at_telnyx.from_.phone_number == dex.number
    inbound = await env.sandbox.post(
        "/telnyx/_control/inbound", json={"from": OUTSIDER, "to": dex.number, "text": "Great, thanks"}
    )
    assert inbound.status_code == 200, inbound.text

    async def both() -> list[dict[str, Any]]:
        page = (await dex.api.get("/v1/sms/messages", params={"after": start})).json()
        messages: list[dict[str, Any]] = page["messages"]
        return messages if len(messages) == 2 else []

    listed = await eventually(both)
    assert [(m["direction"], m["text"]) for m in listed] == [
        ("outbound", "Your table is booked for 8."),
        ("inbound", "Great, thanks"),
    ]
    assert (
        listed[1]["from_number"] == OUTSIDER
        and listed[1]["telnyx_message_id"] == inbound.json()["data"]["id"]
    )
    only_in = (await dex.api.get("/v1/sms/messages", params={"after": start, "direction": "inbound"})).json()
    assert [m["text"] for m in only_in["messages"]] == ["Great, thanks"]
    first = (await dex.api.get("/v1/sms/messages", params={"after": start, "limit": 1})).json()
    assert first["has_more"] is True and first["next_cursor"] == listed[0]["cursor"]
    nothing = (await dex.api.get("/v1/sms/messages", params={"after": listed[1]["cursor"]})).json()
    assert nothing["messages"] == [] and nothing["has_more"] is False
    await counted(env, dex.user["id"], "sms_sent", 1)
    await counted(env, dex.user["id"], "sms_received", 1)


async def processed(env: Env, event_id: str) -> bool:
    """The stored Telnyx event ``event_id`` has been acted on."""
    async with env.w.resources.db.sessions() as session:
        at = await session.scalar(
            select(WebhookEvent.processed_at).where(
                WebhookEvent.provider == "telnyx", WebhookEvent.event_id == event_id
            )
        )
    return at is not None


async def test_a_sent_sms_follows_its_delivery_reports_to_delivered(env: Env, dex: Dex) -> None:
    start = (await dex.api.get("/v1/sms/messages")).json()["next_cursor"]
    sent = await dex.api.post("/v1/sms/send", json={"to": OUTSIDER, "text": "On my way."})
    assert (sent.status_code, sent.json()["status"]) == (201, "queued")

    async def delivered() -> bool:
        # Telnyx reports it sent (message.sent), then delivered (message.finalized), to our webhook
        [listed] = (await dex.api.get("/v1/sms/messages", params={"after": start})).json()["messages"]
        return bool(listed["id"] == sent.json()["id"] and listed["status"] == "delivered")

    await eventually(delivered)

    # A message.sent report that comes last (its first delivery failed and was retried) changes nothing.
    late = {
        "event_type": "message.sent",
        "id": str(uuid.uuid4()),
        "payload": {
            "record_type": "message",
            "direction": "outbound",
            "id": sent.json()["telnyx_message_id"],
            "from": {"phone_number": dex.number},
            "to": [{"phone_number": OUTSIDER, "status": "sent"}],
        },
        "record_type": "event",
    }
    body = json.dumps({"data": late, "meta": {"attempt": 2, "delivered_to": "x"}})
    stored = await env.w.b.web.post(
        "/webhooks/telnyx", content=body, headers={"content-type": "application/json", **sign(body)}
    )
    assert stored.status_code == 200, stored.text
    await eventually(lambda: processed(env, late["id"]))
    assert await delivered()


async def test_a_send_retried_with_its_idempotency_key_goes_out_once(env: Env, dex: Dex) -> None:
    start = (await dex.api.get("/v1/sms/messages")).json()["next_cursor"]
    texted = await usage_count(env, dex.user["id"], "sms_sent")  # the module's subscriber has sent before
    emailed_before = await usage_count(env, dex.user["id"], "email_sent")

    async def texts() -> list[str]:
        page = (await dex.api.get("/v1/sms/messages", params={"after": start})).json()
        return [m["text"] for m in page["messages"]]

    once = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"to": OUTSIDER, "text": "Booked for 8, whatever Dex retries."}
    first, again = [await dex.api.post("/v1/sms/send", json=body, headers=once) for _ in range(2)]
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    reused = await dex.api.post("/v1/sms/send", json={**body, "text": "Something else"}, headers=once)
    error_of(reused, 422, "idempotency_key_reused")
    error_of(
        await dex.api.post("/v1/sms/send", json=body, headers={"Idempotency-Key": "has spaces"}),
        400,
        "invalid_idempotency_key",
    )

    # A send that failed keeps nothing: its retry with the same key goes out.
    outage = {"path": "/v2/messages", "method": "POST", "status": 500, "count": 2}
    assert (await env.sandbox.post("/telnyx/_control/faults", json=outage)).status_code == 200
    retried = {"Idempotency-Key": str(uuid.uuid4())}
    late = {"to": OUTSIDER, "text": "Sent on the second try."}
    error_of(await dex.api.post("/v1/sms/send", json=late, headers=retried), 503, "provider_unavailable")
    resent = await dex.api.post("/v1/sms/send", json=late, headers=retried)
    assert resent.status_code == 201 and "idempotent-replayed" not in resent.headers

    # Two at once with one key: one is sent, the other waits its turn (409) or gets the first's answer.
    both = {"Idempotency-Key": str(uuid.uuid4())}
    twin = {"to": OUTSIDER, "text": "Twins."}
    twins = await asyncio.gather(*(dex.api.post("/v1/sms/send", json=twin, headers=both) for _ in range(2)))
    assert sorted(r.status_code for r in twins) in ([201, 201], [201, 409])
    assert await texts() == [body["text"], late["text"], "Twins."]
    await counted(env, dex.user["id"], "sms_sent", texted + 3)

    mail = {"to": ["outside@example.org"], "subject": "Once", "text": "One email, two tries."}
    error_of(await dex.api.post("/v1/email/send", json=mail, headers=once), 422, "idempotency_key_reused")
    emailing = {"Idempotency-Key": str(uuid.uuid4())}
    emailed = [await dex.api.post("/v1/email/send", json=mail, headers=emailing) for _ in range(2)]
    assert [r.status_code for r in emailed] == [201, 201]
    assert emailed[1].json() == emailed[0].json() and emailed[1].headers["idempotent-replayed"] == "true"
    await counted(env, dex.user["id"], "email_sent", emailed_before + 1)


async def test_each_key_has_its_own_per_operation_limit_with_retry_after(env: Env, dex: Dex) -> None:
    made = await env.w.b.web.post("/v1/api-keys/", json={"name": "burst"}, headers=bearer(dex.user))
    async with httpx.AsyncClient(base_url=env.web_url, headers={"x-api-key": made.json()["key"]}) as api:
        bad = await api.post("/v1/sms/send", json={"to": "12345", "text": "x"})
        error_of(bad, 400, "invalid_phone_number")  # refused requests take nothing from the limit
        for n in range(10):  # Basic: 10 SMS a minute per key
            assert (
                await api.post("/v1/sms/send", json={"to": OUTSIDER, "text": f"burst {n}"})
            ).status_code == 201
        refused = await api.post("/v1/sms/send", json={"to": OUTSIDER, "text": "one too many"})
        error = error_of(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert error["details"]["operation"] == "sms_send" and error["details"]["per_minute"] == 10
        assert (await api.get("/v1/sms/messages")).status_code == 200  # another operation: its own limit
        for _ in range(30):  # Basic: 30 calendar writes a minute; none of these malformed ones counts
            error_of(await api.delete("/v1/calendar/events/bad$id"), 400, "invalid_id")
        made = await api.post("/v1/calendar/events", json=DAY, params={"send_updates": "none"})
        assert made.status_code == 201, made.text
        gone = await api.delete(f"/v1/calendar/events/{made.json()['id']}", params={"send_updates": "none"})
        assert gone.status_code == 204, gone.text
    # The subscriber's other key is not held back by this one.
    assert (
        await dex.api.post("/v1/sms/send", json={"to": OUTSIDER, "text": "still fine"})
    ).status_code == 201


# --- payment, validation, provider failures -----------------------------------------------------------------


async def test_a_suspended_identity_cannot_send_but_still_reads_what_arrived(env: Env) -> None:
    suspended = await subscriber(env)
    async with suspended.api as api:
        await env.sandbox.post(
            "/telnyx/_control/inbound", json={"from": OUTSIDER, "to": suspended.number, "text": "hello"}
        )
        await set_subscription(env, suspended, "past_due")  # the payment failed
        await jobs.suspend_identity(ctx(env.w), str(suspended.user["id"]))  # what billing defers then
        config = (await api.get("/v1/identity")).json()
        assert (config["status"], config["plan"]["state"], config["parts"]["email"]["state"]) == (
            "suspended",
            "suspended",
            "suspended",
        )
        sends = [
            ("/v1/email/send", {"to": ["a@example.com"], "text": "hi"}),
            ("/v1/sms/send", {"to": OUTSIDER, "text": "hi"}),
            ("/v1/signal/send", {"recipients": [OUTSIDER], "message": "hi"}),
        ]
        for path, body in sends:
            error = error_of(await api.post(path, json=body), 403, "identity_suspended")
            assert "payment failed" in error["message"]
        error_of(await api.get("/v1/email/inbox"), 403, "identity_suspended")  # Google holds the mailbox

        async def listed() -> bool:
            page = (await api.get("/v1/sms/messages")).json()
            return [m["text"] for m in page["messages"]] == ["hello"]

        assert await eventually(listed)
        assert (await api.get("/v1/signal/messages")).status_code == 200
        await set_subscription(env, suspended, "active")  # paid again: sends work once it resumed
        await jobs.resume_identity(ctx(env.w), str(suspended.user["id"]))
        assert (await api.post("/v1/sms/send", json={"to": OUTSIDER, "text": "back"})).status_code == 201
        await set_subscription(env, suspended, "canceled")  # ended: within the grace period, reading only
        error_of(
            await api.post("/v1/sms/send", json={"to": OUTSIDER, "text": "hi"}), 402, "subscription_required"
        )
        assert (await api.get("/v1/sms/messages")).status_code == 200


async def set_subscription(env: Env, dex: Dex, status: str) -> None:
    """The subscription's status, as Stripe's webhook records it."""
    async with env.w.resources.db.sessions() as session:
        await session.execute(
            update(Subscription).where(Subscription.user_id == dex.user["id"]).values(status=status)
        )
        await session.commit()


def big_file(size: int) -> list[dict[str, str]]:
    return [{"filename": "big.bin", "content_base64": base64.b64encode(b"\0" * size).decode()}]


UNKNOWN_GROUP = "group." + base64.b64encode(base64.b64encode(b"\x01" * 32)).decode()
SIZE_LIMIT = 4 * 1024 * 1024  # IDENTITY_MAX_ATTACHMENT_BYTES' default
MAIL, INBOX, EVENTS = "POST /v1/email/send", "GET /v1/email/inbox", "/v1/calendar/events"
SIGNAL, SMS = "POST /v1/signal/send", "POST /v1/sms/send"
TO = {"to": ["a@x.com"], "text": "x"}
DAY = {"summary": "x", "start": {"date": "2026-03-08"}, "end": {"date": "2026-03-09"}}
AT_TEN = {"date_time": "2026-03-08T10:00:00Z"}


def case(
    what: str, route: str, status: int, code: str, field: str | None = None, body: Any = None, **query: str
) -> Any:
    """One refused request: ``route`` is "METHOD /path", ``body`` its JSON, ``query`` its parameters."""
    method, path = route.split(" ", 1)
    return pytest.param(method, path, body, query or None, status, code, field, id=what)


INVALID = [
    case("address", MAIL, 400, "invalid_email_address", "to[0]", {"to": ["not-an-address"], "text": "x"}),
    case(
        "two in one", MAIL, 400, "invalid_email_address", "to[0]", {"to": ["a@x.com, b@y.com"], "text": "x"}
    ),
    case("bad cc", MAIL, 400, "invalid_email_address", "cc[0]", {**TO, "cc": ["b@localhost"]}),
    case("nobody", MAIL, 400, "no_recipients", None, {"text": "x"}),
    case("crowd", MAIL, 400, "too_many_recipients", None, {**TO, "to": [f"p{i}@x.com" for i in range(101)]}),
    case("injection", MAIL, 400, "invalid_header", "subject", {**TO, "subject": "hi\r\nBcc: c@x.com"}),
    case("empty", MAIL, 400, "empty_message", None, {"to": ["a@x.com"], "subject": "hi"}),
    case(
        "base64",
        MAIL,
        400,
        "invalid_attachment",
        "attachments[0].content_base64",
        {**TO, "attachments": [{"filename": "a.txt", "content_base64": "%%%"}]},
    ),
    case(
        "path",
        MAIL,
        400,
        "invalid_attachment",
        "attachments[0].filename",
        {**TO, "attachments": [{"filename": "../a.txt", "content_base64": ""}]},
    ),
    case(
        "too big", MAIL, 413, "attachments_too_large", None, {**TO, "attachments": big_file(SIZE_LIMIT + 1)}
    ),
    case(
        "no such reply",
        MAIL,
        404,
        "message_not_found",
        None,
        {**TO, "reply_to_message_id": "0123456789abcdef"},
    ),
    case(
        "bad reply id", MAIL, 400, "invalid_id", "reply_to_message_id", {**TO, "reply_to_message_id": "../x"}
    ),
    case("unknown field", MAIL, 400, "invalid_request", None, {**TO, "priority": "high"}),
    case("not a time", INBOX, 400, "invalid_time", "after", after="yesterday"),
    case("no offset", INBOX, 400, "invalid_time", "after", after="2026-03-01T10:00:00"),
    case(
        "backwards",
        INBOX,
        400,
        "invalid_time_range",
        after="2026-03-02T00:00:00Z",
        before="2026-03-01T00:00Z",
    ),
    case("quote", INBOX, 400, "invalid_query", "from", **{"from": 'a" OR "b'}),
    case("page size", INBOX, 400, "invalid_request", limit="0"),
    case("page token", INBOX, 400, "invalid_cursor", page_token="bm90IG91cnM"),
    case("no message", "GET /v1/email/messages/ffffffffffffffff", 404, "message_not_found"),
    case("trash nothing", "DELETE /v1/email/messages/ffffffffffffffff", 404, "message_not_found"),
    case("list no offset", f"GET {EVENTS}", 400, "invalid_time", "start", start="2026-03-08T10:00:00"),
    case(
        "list backwards",
        f"GET {EVENTS}",
        400,
        "invalid_time_range",
        start="2026-03-09T00:00Z",
        end="2026-03-08T00:00Z",
    ),
    case(
        "list too long",
        f"GET {EVENTS}",
        400,
        "invalid_time_range",
        start="2026-01-01T00:00Z",
        end="2027-06-01T00:00Z",
    ),
    case("zone", f"GET {EVENTS}", 400, "invalid_time_zone", "time_zone", time_zone="Mars/Olympus_Mons"),
    case(
        "naive",
        f"POST {EVENTS}",
        400,
        "invalid_time",
        "start.date_time",
        {**DAY, "start": {"date_time": "2026-03-08T10:00:00"}, "end": AT_TEN},
    ),
    case(
        "both forms",
        f"POST {EVENTS}",
        400,
        "invalid_time",
        "start",
        {**DAY, "start": {"date": "2026-03-08", **AT_TEN}},
    ),
    case(
        "bad date",
        f"POST {EVENTS}",
        400,
        "invalid_time",
        "start.date",
        {**DAY, "start": {"date": "2026-02-30"}},
    ),
    case(
        "event zone",
        f"POST {EVENTS}",
        400,
        "invalid_time_zone",
        "start.time_zone",
        {**DAY, "start": {"date_time": "2026-03-08T09:00:00", "time_zone": "Europe/Nowhere"}, "end": AT_TEN},
    ),
    case(
        "event backwards",
        f"POST {EVENTS}",
        400,
        "invalid_time_range",
        None,
        {**DAY, "start": AT_TEN, "end": {"date_time": "2026-03-08T09:00:00Z"}},
    ),
    case("mixed forms", f"POST {EVENTS}", 400, "invalid_time_range", None, {**DAY, "end": AT_TEN}),
    case(
        "attendee",
        f"POST {EVENTS}",
        400,
        "invalid_email_address",
        "attendees[0].email",
        {**DAY, "attendees": [{"email": "x"}]},
    ),
    case("no event", f"PUT {EVENTS}/abcdef0123456789", 404, "event_not_found", None, {"summary": "y"}),
    case("event id", f"DELETE {EVENTS}/bad$id", 400, "invalid_id", "event_id"),
    case(
        "not E.164",
        SIGNAL,
        400,
        "invalid_phone_number",
        "recipients[0]",
        {"recipients": ["4155550100"], "message": "x"},
    ),
    case(
        "both targets",
        SIGNAL,
        400,
        "no_recipients",
        None,
        {"recipients": ["+14155550100"], "group_id": UNKNOWN_GROUP, "message": "x"},
    ),
    case("no target", SIGNAL, 400, "no_recipients", None, {"message": "x"}),
    case("group id", SIGNAL, 400, "invalid_id", "group_id", {"group_id": "family", "message": "x"}),
    case("silent", SIGNAL, 400, "empty_message", None, {"recipients": ["+14155550100"]}),
    case(
        "too big for Signal",
        SIGNAL,
        413,
        "attachments_too_large",
        None,
        {"recipients": ["+14155550100"], "attachments": big_file(SIZE_LIMIT + 1)},
    ),
    case(
        "not on Signal",
        SIGNAL,
        422,
        "signal_recipient_unknown",
        None,
        {"recipients": ["+14155550999"], "message": "x"},
    ),
    case(
        "no such group",
        SIGNAL,
        404,
        "signal_group_not_found",
        None,
        {"group_id": UNKNOWN_GROUP, "message": "x"},
    ),
    case("cursor", "GET /v1/signal/messages", 400, "invalid_request", after="-1"),
    case("kind", "GET /v1/signal/messages", 400, "invalid_request", kind="gossip"),
    case("not our attachment", "GET /v1/signal/attachments/AbCdEf.png", 404, "attachment_not_found"),
    case("sms to", SMS, 400, "invalid_phone_number", "to", {"to": "555-0100", "text": "x"}),
    case("sms length", SMS, 400, "message_too_long", "text", {"to": OUTSIDER, "text": "\u0439" * 700}),
    case("sms empty", SMS, 400, "empty_message", None, {"to": OUTSIDER}),
    case("sms nul", SMS, 400, "invalid_text", "text", {"to": OUTSIDER, "text": "a\x00b"}),
    case(
        "media",
        SMS,
        400,
        "invalid_attachment",
        "media_urls[0]",
        {"to": OUTSIDER, "media_urls": ["ftp://x.org/a"]},
    ),
    case("direction", "GET /v1/sms/messages", 400, "invalid_request", direction="sideways"),
]


@pytest.mark.parametrize(("method", "path", "body", "query", "status", "code", "field"), INVALID)
async def test_every_invalid_request_gets_the_documented_error(
    dex: Dex,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    query: dict[str, str] | None,
    status: int,
    code: str,
    field: str | None,
) -> None:
    error = error_of(await dex.api.request(method, path, json=body, params=query), status, code)
    if field is not None:
        assert error["details"]["field"] == field


async def test_calls_without_a_valid_key_are_refused(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.web_url) as anonymous:
        error_of(await anonymous.get("/v1/email/inbox"), 401, "invalid_token")
        error_of(
            await anonymous.get("/v1/signal/messages", headers={"x-api-key": "pk_test_nope"}),
            401,
            "invalid_api_key",
        )


async def test_provider_failures_become_our_errors_never_their_bodies(env: Env, dex: Dex) -> None:
    faults = [
        (
            "/google/_control/faults",
            {"api": "gmail", "status": 503, "count": 1},
            "POST",
            "/v1/email/send",
            {"to": ["a@x.com"], "text": "x"},
        ),
        (
            "/telnyx/_control/faults",
            {"path": "/v2/messages", "method": "POST", "status": 500, "count": 2},
            "POST",
            "/v1/sms/send",
            {"to": OUTSIDER, "text": "x"},
        ),
        (
            "/signal/_control/faults",
            {"kind": "error", "endpoint": "POST /v2/send", "count": 1},
            "POST",
            "/v1/signal/send",
            {"recipients": [OUTSIDER], "message": "x"},
        ),
        (
            "/google/_control/faults",
            {"api": "calendar", "status": 500, "count": 1},
            "GET",
            "/v1/calendar/events",
            None,
        ),
    ]
    for control, fault, method, path, body in faults:
        assert (await env.sandbox.post(control, json=fault)).status_code == 200
        answer = await dex.api.request(method, path, json=body)
        error = error_of(answer, 503, "provider_unavailable")
        assert "sandbox" not in answer.text.lower() and "Internal error encountered" not in answer.text, error
    await env.sandbox.delete("/google/_control/faults")
    await env.sandbox.delete("/telnyx/_control/faults")


# --- the typed client, usage --------------------------------------------------------------------------------


async def test_the_typed_client_speaks_every_part_and_hands_out_ai_clients_on_the_proxy(
    env: Env, dex: Dex, proxy_server: RunningServer
) -> None:
    tag = uuid.uuid4().hex[:8]
    async with DexClient(env.web_url, dex.key) as client:
        config = await client.wait_until_ready(within=5)
        assert config.email == dex.email and config.limits.operations["email_send"].per_day == 500
        assert (await client.signal_identity()).number == dex.number

        await inject(
            env,
            dex.email,
            **{
                "from": "erin@example.net",
                "subject": f"Client {tag}",
                "text": "ping",
                "attachments": [{"filename": "a.txt", "content": "A"}],
            },
        )
        page = await client.inbox(q=tag, sender="erin@example.net", after=datetime(2020, 1, 1, tzinfo=UTC))
        [summary] = page.messages
        message = await client.email_message(summary.id)
        assert message.text is not None and message.text.strip() == "ping"
        assert await client.email_attachment(message.id, message.attachments[0].attachment_id) == b"A"
        sent = await client.send_email(
            to=["erin@example.net"],
            text="pong",
            reply_to_message_id=message.id,
            attachments=[upload("b.txt", b"B")],
        )
        assert sent.thread_id == message.thread_id
        await client.trash_email(message.id)

        event = await client.create_event(
            EventCreate(
                summary=f"Client {tag}",
                start=EventTime(date_time="2026-07-01T09:00:00", time_zone="Europe/Paris"),
                end=EventTime(date_time="2026-07-01T10:00:00", time_zone="Europe/Paris"),
            ),
            send_updates="none",
        )
        moved = await client.update_event(event.id, EventUpdate(summary=f"Moved {tag}"), send_updates="none")
        assert moved.summary == f"Moved {tag}" and instant_of(moved.start.date_time or "") == datetime(
            2026, 7, 1, 7, tzinfo=UTC
        )
        listed = await client.events(
            start=datetime(2026, 7, 1, tzinfo=UTC), end="2026-07-02T00:00:00Z", q=tag
        )
        assert [e.id for e in listed.events] == [event.id]
        await client.delete_event(event.id, send_updates="none")

        once = str(uuid.uuid4())
        sms = await client.send_sms(OUTSIDER, "from the client", idempotency_key=once)
        assert await client.send_sms(OUTSIDER, "from the client", idempotency_key=once) == sms  # a retry
        outbound = (await client.sms_messages(after=sms.cursor - 1, direction="outbound")).messages
        assert [m.text for m in outbound] == ["from the client"]
        frank = await outside_user(env, "Frank")
        start = (await client.signal_messages(limit=200, receive=False)).next_cursor
        await client.send_signal(recipients=[frank], message="hi Frank", attachments=[upload("c.txt", b"C")])
        assert frank in [c.number for c in (await client.signal_contacts()).contacts]
        await env.sandbox.post(
            f"/signal/_control/outside_users/{frank}/messages",
            json={"recipient": dex.number, "message": "hi Dex"},
        )
        [reply] = (await client.signal_messages(after=start)).messages
        assert (reply.source, reply.body) == (frank, "hi Dex")

        with pytest.raises(PoindexterError) as refused:
            await client.send_sms("12345", "x")
        assert (refused.value.status, refused.value.code) == (400, "invalid_phone_number")

        claude = await client.anthropic()
        assert str(claude.base_url).rstrip("/") == proxy_server.url
        answer = await claude.messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.content and answer.usage.output_tokens > 0
        gpt = await client.openai()
        chat = await gpt.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
        assert chat.choices[0].message.content


async def test_every_operation_rolls_into_the_months_usage(env: Env, dex: Dex) -> None:
    """One of each operation (and whatever the tests before did), as sync_usage's rollup counts it."""
    kinds = ("email_sent", "email_received", "signal_sent", "signal_received", "sms_sent", "sms_received")

    async def counts() -> dict[str, int]:
        return {kind: await usage_count(env, dex.user["id"], kind) for kind in kinds}

    tag = uuid.uuid4().hex[:8]
    assert (
        await dex.api.post("/v1/email/send", json={"to": ["g@example.net"], "text": tag})
    ).status_code == 201
    await inject(env, dex.email, **{"from": "g@example.net", "subject": tag, "text": "in"})
    assert (await dex.api.get("/v1/email/inbox", params={"q": tag})).json()["messages"]
    grace = await outside_user(env, "Grace")
    assert (
        await dex.api.post("/v1/signal/send", json={"recipients": [grace], "message": tag})
    ).status_code == 201
    await env.sandbox.post(
        f"/signal/_control/outside_users/{grace}/messages", json={"recipient": dex.number, "message": "in"}
    )
    assert (await dex.api.get("/v1/signal/messages")).status_code == 200
    assert (await dex.api.post("/v1/sms/send", json={"to": OUTSIDER, "text": tag})).status_code == 201
    await env.sandbox.post("/telnyx/_control/inbound", json={"from": OUTSIDER, "to": dex.number, "text": tag})

    async def drained() -> dict[str, int]:
        """Every kind counted, and nothing more arriving (earlier tests' events drain too)."""
        seen = await counts()
        if not all(seen.values()):
            return {}
        await asyncio.sleep(1.5)  # longer than a drain pass (its 1 s block and 0.2 s gather)
        return seen if await counts() == seen else {}

    events = await eventually(drained, within=20)
    async with env.w.resources.db.sessions() as session:
        await usage_sync.rollup_monthly(session, usage_sync.month_of(datetime.now(UTC)), dex.user["id"])
        await session.commit()
        row = (
            await session.execute(select(UsageMonthly).where(UsageMonthly.user_id == dex.user["id"]))
        ).scalar_one()
    assert (row.emails_sent, row.emails_received) == (events["email_sent"], events["email_received"])
    assert (row.signal_messages_sent, row.signal_messages_received) == (
        events["signal_sent"],
        events["signal_received"],
    )
    assert (row.sms_sent, row.sms_received) == (events["sms_sent"], events["sms_received"])
    async with env.w.resources.db.sessions() as session:
        keyed = await session.scalar(
            select(func.count())
            .select_from(UsageEvent)
            .where(
                UsageEvent.user_id == dex.user["id"],
                UsageEvent.event_type == "sms_sent",
                UsageEvent.api_key_id.is_not(None),
            )
        )
    assert keyed == events["sms_sent"]  # a send is the key's that made it
