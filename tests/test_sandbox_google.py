"""The Google Workspace simulator, driven over real HTTP by the official SDKs (google-auth and
google-api-python-client); httpx only for the sandbox's ``/_control`` endpoints.

The SDK is synchronous and the sandbox serves from this test's event loop, so every SDK call runs in a
thread (``await google_call(request)``), as our adapters will run it.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import sys
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import google_auth_httplib2
import httplib2
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaInMemoryUpload

from conftest import RunningServer, google_call
from poindexter_cloud.integrations.google import upload_on

DOMAIN = "dex.sandbox.test"
ADMIN = f"admin@{DOMAIN}"
DEX_A = f"dex-abc@{DOMAIN}"
DEX_B = f"dex-bcd@{DOMAIN}"
AUTH = "https://www.googleapis.com/auth/"
SCOPES = [f"{AUTH}admin.directory.user", "https://mail.google.com/", f"{AUTH}calendar"]
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4

# ------------------------------------------------------------------------------------ loopback only

_watching = False
_destinations: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Every host this process resolves or connects to while a test of this module runs."""
    if not _watching:
        return
    if event == "socket.getaddrinfo":
        _destinations.append(str(args[0]))
    elif event == "socket.connect" and isinstance(args[1], tuple):
        _destinations.append(str(args[1][0]))


sys.addaudithook(_audit)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    """No request of the SDKs leaves 127.0.0.1 (no discovery fetch, no token call to Google)."""
    global _watching
    _destinations.clear()
    _watching = True
    yield
    _watching = False
    assert _destinations, "the test made no connection at all"
    assert all(_loopback(host) for host in _destinations), sorted(set(_destinations))


# ------------------------------------------------------------------------------------ fixtures


class Workspace:
    """The sandbox's Google Workspace as our service sees it: a service-account key and SDK clients."""

    def __init__(self, url: str, control: httpx.AsyncClient, info: dict[str, str]) -> None:
        self.url = url
        self.control = control
        self.info = info
        self._keys: dict[tuple[str, ...], service_account.Credentials] = {}  # loading a key takes ~30 ms

    def credentials(self, subject: str, scopes: list[str] = SCOPES) -> service_account.Credentials:
        key = tuple(scopes)
        if key not in self._keys:
            self._keys[key] = service_account.Credentials.from_service_account_info(self.info, scopes=scopes)
        return self._keys[key].with_subject(subject)

    def _build(self, api: str, version: str, endpoint: str, subject: str, **options: Any) -> Any:
        scopes = options.pop("scopes", SCOPES)
        http = options.pop("http", None)
        auth: dict[str, Any] = (
            {"http": google_auth_httplib2.AuthorizedHttp(self.credentials(subject, scopes), http=http)}
            if http is not None
            else {"credentials": self.credentials(subject, scopes)}
        )
        return build(
            api,
            version,
            static_discovery=True,
            client_options={"api_endpoint": f"{self.url}/google/{endpoint}"},
            **auth,
        )

    def directory(self, subject: str = ADMIN) -> Any:
        return self._build("admin", "directory_v1", "", subject)

    def gmail(self, subject: str, **options: Any) -> Any:
        return self._build("gmail", "v1", "", subject, **options)

    def calendar(self, subject: str, **options: Any) -> Any:
        return self._build("calendar", "v3", "calendar/v3/", subject, **options)

    async def add_user(self, email: str, given: str = "Dex") -> dict[str, Any]:
        body = {
            "primaryEmail": email,
            "name": {"givenName": given, "familyName": email.split("@")[0]},
            "password": "a long sandbox passphrase",
            "changePasswordAtNextLogin": False,
        }
        user: dict[str, Any] = await google_call(self.directory().users().insert(body=body))
        return user


@pytest.fixture
async def google(sandbox_server: RunningServer) -> AsyncIterator[Workspace]:
    async with httpx.AsyncClient(base_url=f"{sandbox_server.url}/google/_control", timeout=10) as control:
        assert (await control.post("/reset")).status_code == 200
        info = (await control.get("/service-account")).json()
        yield Workspace(sandbox_server.url, control, info)


def raw_message(message: EmailMessage) -> str:
    return base64.urlsafe_b64encode(message.as_bytes()).decode()


def error_of(failure: pytest.ExceptionInfo[HttpError]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(failure.value.content)["error"]
    return body


def headers_of(part: dict[str, Any]) -> dict[str, str]:
    return {h["name"]: h["value"] for h in part["headers"]}


def data_of(part: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64decode(part["body"]["data"])


# ------------------------------------------------------------------------------------ OAuth


async def test_token_grant_with_delegation_and_refused_assertions(google: Workspace) -> None:
    info = google.info
    assert info["token_uri"] == f"{google.url}/google/oauth2/token"
    credentials = google.credentials(ADMIN)
    await asyncio.to_thread(credentials.refresh, google_auth_httplib2.Request(httplib2.Http()))
    assert credentials.token.startswith("ya29.") and credentials.valid

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = dict(info)
    forged["private_key"] = stranger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    forged["private_key_id"] = "0" * 40
    refusals = {
        "Invalid JWT Signature.": service_account.Credentials.from_service_account_info(
            forged, scopes=SCOPES
        ).with_subject(ADMIN),
        "Invalid email or User ID": google.credentials(f"nobody@{DOMAIN}"),
    }
    limited = (
        await google.control.post(
            "/service-accounts", json={"name": "readonly", "delegated_scopes": [f"{AUTH}gmail.readonly"]}
        )
    ).json()
    refusals["Client is unauthorized"] = service_account.Credentials.from_service_account_info(
        limited, scopes=["https://mail.google.com/"]
    ).with_subject(ADMIN)
    for expected, refused in refusals.items():
        with pytest.raises(RefreshError, match=expected):
            await asyncio.to_thread(refused.refresh, google_auth_httplib2.Request(httplib2.Http()))

    readonly = google.gmail(ADMIN, scopes=[f"{AUTH}gmail.readonly"])
    with pytest.raises(HttpError) as failure:
        await google_call(readonly.users().messages().send(userId="me", body={"raw": "eA=="}))
    assert failure.value.status_code == 403
    assert error_of(failure)["errors"][0]["reason"] == "insufficientPermissions"

    anonymous = build(
        "gmail",
        "v1",
        http=httplib2.Http(),
        static_discovery=True,
        client_options={"api_endpoint": f"{google.url}/google/"},
    )
    request = anonymous.users().getProfile(userId="me")
    request.headers["authorization"] = "Bearer ya29.not-issued-here"
    with pytest.raises(HttpError) as failure:
        await google_call(request)
    assert failure.value.status_code == 401
    assert failure.value.resp["www-authenticate"].startswith("Bearer")
    assert error_of(failure)["status"] == "UNAUTHENTICATED"


# ------------------------------------------------------------------------------------ Directory


async def test_directory_users_insert_list_suspend_delete(google: Workspace) -> None:
    users = google.directory().users()
    created = await google.add_user(DEX_A)
    assert created["primaryEmail"] == DEX_A and created["suspended"] is False
    with pytest.raises(HttpError) as failure:
        await google.add_user(DEX_A)
    assert failure.value.status_code == 409
    assert error_of(failure)["message"] == "Entity already exists."
    assert error_of(failure)["errors"][0]["reason"] == "duplicate"

    fetched = await google_call(users.get(userKey=created["id"]))
    assert fetched["primaryEmail"] == DEX_A and fetched["name"]["fullName"] == "Dex dex-abc"
    for index in range(3):
        await google.add_user(f"dex-{index}@{DOMAIN}", given="Robot")
    seen: list[str] = []
    token = None
    while True:
        page = await google_call(
            users.list(domain=DOMAIN, query="givenName:Robot", maxResults=2, pageToken=token)
        )
        seen += [u["primaryEmail"] for u in page["users"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert seen == [f"dex-{i}@{DOMAIN}" for i in range(3)]

    dex = google.gmail(DEX_A)
    assert (await google_call(dex.users().getProfile(userId="me")))["emailAddress"] == DEX_A
    suspended = await google_call(users.patch(userKey=DEX_A, body={"suspended": True}))
    assert suspended["suspended"] is True
    with pytest.raises(RefreshError, match="Invalid email or User ID"):
        await google_call(google.gmail(DEX_A).users().getProfile(userId="me"))
    restored = await google_call(users.update(userKey=DEX_A, body={"suspended": False}))
    assert restored["suspended"] is False
    assert (await google_call(google.gmail(DEX_A).users().getProfile(userId="me")))["emailAddress"] == DEX_A

    # A refused change changes nothing, not even the parts of it that were valid.
    for refused in ({"primaryEmail": f"renamed@{DOMAIN}", "name": {"givenName": ""}}, {"emails": 1}):
        with pytest.raises(HttpError) as failure:
            await google_call(users.patch(userKey=DEX_A, body=refused))
        assert failure.value.status_code == 400
    unchanged = await google_call(users.get(userKey=created["id"]))
    assert (unchanged["primaryEmail"], unchanged["name"]["givenName"]) == (DEX_A, "Dex")
    assert "aliases" not in unchanged

    with pytest.raises(HttpError) as failure:
        await google_call(google.directory(DEX_A).users().get(userKey=ADMIN))
    assert failure.value.status_code == 403

    await google_call(users.delete(userKey=DEX_A))
    with pytest.raises(HttpError) as failure:
        await google_call(users.get(userKey=DEX_A))
    assert failure.value.status_code == 404


# ------------------------------------------------------------------------------------ Gmail


async def test_gmail_delivers_between_mailboxes_with_bodies_and_attachment(google: Workspace) -> None:
    await google.add_user(DEX_A)
    await google.add_user(DEX_B)
    message = EmailMessage()
    message["From"] = f"Dex A <{DEX_A}>"
    message["To"] = DEX_B
    message["Cc"] = "Carol <carol@example.org>"
    message["Subject"] = "Quarterly report"
    message.set_content("Plain words for you.\n")
    message.add_alternative("<p>HTML <b>words</b> for you.</p>", subtype="html")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    sender = google.gmail(DEX_A)
    sent = await google_call(sender.users().messages().send(userId="me", body={"raw": raw_message(message)}))
    assert sent["labelIds"] == ["SENT"]

    reader = google.gmail(DEX_B).users().messages()
    listed = await google_call(reader.list(userId="me", labelIds=["INBOX"]))
    assert len(listed["messages"]) == 1 and listed["resultSizeEstimate"] == 1
    full = await google_call(reader.get(userId="me", id=listed["messages"][0]["id"], format="full"))
    assert {"INBOX", "UNREAD"} <= set(full["labelIds"])
    assert full["snippet"] == "Plain words for you."
    headers = headers_of(full["payload"])
    assert headers["Subject"] == "Quarterly report" and headers["From"] == f"Dex A <{DEX_A}>"
    assert headers["Delivered-To"] == DEX_B and "Message-ID" in headers
    assert full["payload"]["mimeType"] == "multipart/mixed"
    alternative, attachment = full["payload"]["parts"]
    text, html = alternative["parts"]
    assert (text["mimeType"], data_of(text)) == (
        "text/plain",
        b"Plain words for you.\r\n",
    )  # Gmail keeps CRLF
    assert html["mimeType"] == "text/html" and b"<b>words</b>" in data_of(html)
    assert attachment["filename"] == "report.pdf" and attachment["body"]["size"] == len(PDF)
    fetched = await google_call(
        reader.attachments().get(userId="me", messageId=full["id"], id=attachment["body"]["attachmentId"])
    )
    assert base64.urlsafe_b64decode(fetched["data"]) == PDF

    metadata = await google_call(
        reader.get(userId="me", id=full["id"], format="metadata", metadataHeaders=["Subject"])
    )
    assert metadata["payload"]["headers"] == [{"name": "Subject", "value": "Quarterly report"}]
    raw = await google_call(reader.get(userId="me", id=full["id"], format="raw"))
    assert b"Subject: Quarterly report" in base64.urlsafe_b64decode(raw["raw"])
    minimal = await google_call(reader.get(userId="me", id=full["id"], format="minimal"))
    assert "payload" not in minimal and minimal["threadId"] == full["threadId"]

    outbound = (await google.control.get("/outbound")).json()["messages"]
    assert [(m["from"], m["to"], m["subject"]) for m in outbound] == [
        (DEX_A, "carol@example.org", "Quarterly report")
    ]
    profile = await google_call(sender.users().getProfile(userId="me"))
    assert profile["messagesTotal"] == 1
    labels = await google_call(sender.users().labels().list(userId="me"))
    assert {"INBOX", "SENT", "TRASH", "UNREAD"} <= {label["id"] for label in labels["labels"]}


async def test_gmail_thread_replies(google: Workspace) -> None:
    await google.add_user(DEX_A)
    await google.add_user(DEX_B)
    first = EmailMessage()
    first["To"], first["Subject"] = DEX_B, "Lunch?"
    first.set_content("Noon?")
    sent = await google_call(
        google.gmail(DEX_A).users().messages().send(userId="me", body={"raw": raw_message(first)})
    )

    replier = google.gmail(DEX_B).users().messages()
    received = (await google_call(replier.list(userId="me")))["messages"][0]
    original = await google_call(replier.get(userId="me", id=received["id"], format="metadata"))
    message_id = headers_of(original["payload"])["Message-ID"]
    reply = EmailMessage()
    reply["To"], reply["Subject"] = DEX_A, "Re: Lunch?"
    reply["In-Reply-To"] = reply["References"] = message_id
    reply.set_content("Noon works.")
    body = {"raw": raw_message(reply), "threadId": received["threadId"]}
    answered = await google_call(replier.send(userId="me", body=body))
    assert answered["threadId"] == received["threadId"]

    mailbox = google.gmail(DEX_A).users().messages()
    thread = await google_call(mailbox.list(userId="me", q="lunch"))
    assert {m["threadId"] for m in thread["messages"]} == {sent["threadId"]}
    assert len(thread["messages"]) == 2


async def test_gmail_send_as_an_upload_alone_or_with_its_thread(google: Workspace) -> None:
    await google.add_user(DEX_A)
    await google.add_user(DEX_B)
    first = EmailMessage()
    first["To"], first["Subject"] = DEX_B, "Plans"
    first.set_content("The plans, in full." + " x" * 3_000_000)  # 6 MB

    def on_sandbox(request: Any) -> Any:  # the SDK sends uploads to Google's root whatever api_endpoint says
        return upload_on(f"{google.url}/google", request)

    sender = google.gmail(DEX_A).users().messages()
    media = MediaInMemoryUpload(first.as_bytes(), mimetype="message/rfc822")
    sent = await google_call(on_sandbox(sender.send(userId="me", media_body=media)))  # uploadType=media
    received = (await google_call(google.gmail(DEX_B).users().messages().list(userId="me")))["messages"]
    assert len(received) == 1  # in a thread of the recipient's own
    full = await google_call(google.gmail(DEX_B).users().messages().get(userId="me", id=received[0]["id"]))
    assert full["sizeEstimate"] > 6_000_000 and headers_of(full["payload"])["Subject"] == "Plans"

    more = EmailMessage()
    more["To"], more["Subject"] = DEX_B, "Re: Plans"
    more.set_content("And the rest.")
    media = MediaInMemoryUpload(more.as_bytes(), mimetype="message/rfc822")
    body = {"threadId": sent["threadId"]}  # uploadType=multipart: this metadata, then the message
    followed = await google_call(on_sandbox(sender.send(userId="me", body=body, media_body=media)))
    assert followed["threadId"] == sent["threadId"] and followed["id"] != sent["id"]


async def test_gmail_inbound_mail_search_and_paging(google: Workspace) -> None:
    await google.add_user(DEX_A)
    specs = [
        {
            "from": "Alice <alice@example.org>",
            "subject": "Invoice 42",
            "text": "Please pay.",
            "message_id": "<Invoice-42@example.org>",
        },
        {"from": "bob@example.net", "subject": "Hello", "html": "<p>Just saying <i>hi</i></p>"},
        {
            "from": "alice@example.org",
            "subject": "Scan",
            "text": "Attached.",
            "attachments": [{"filename": "scan.pdf", "content_base64": base64.b64encode(PDF).decode()}],
        },
    ]
    injected = []
    for spec in specs:
        response = await google.control.post("/inbound", json={"to": DEX_A, **spec})
        assert response.status_code == 200, response.text
        injected.append(response.json()["delivered"][0]["id"])
    refused = await google.control.post("/inbound", json={"to": f"ghost@{DOMAIN}", "text": "?"})
    assert refused.status_code == 404

    messages = google.gmail(DEX_A).users().messages()

    async def ids(**params: Any) -> list[str]:
        found = await google_call(messages.list(userId="me", **params))
        return [m["id"] for m in found.get("messages", [])]

    assert await ids(q="from:alice@example.org has:attachment") == [injected[2]]
    assert await ids(q="subject:invoice") == [injected[0]]
    assert await ids(q="hi -from:alice") == [injected[1]]
    assert await ids(q="pay OR attached") == [injected[2], injected[0]]
    assert await ids(q="invoic") == []
    assert await ids(q="rfc822msgid:invoice-42@example.org") == [injected[0]]
    assert await ids(q="rfc822msgid:<Invoice-42@example.org>") == [injected[0]]
    paged: list[str] = []
    token = None
    for _ in range(3):
        page = await google_call(
            messages.list(userId="me", labelIds=["INBOX", "UNREAD"], maxResults=2, pageToken=token)
        )
        paged += [m["id"] for m in page["messages"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert paged == injected[::-1]


async def test_gmail_trash_untrash_delete(google: Workspace) -> None:
    await google.add_user(DEX_A)
    delivered = (await google.control.post("/inbound", json={"to": DEX_A, "subject": "Old news"})).json()
    message_id = delivered["delivered"][0]["id"]
    messages = google.gmail(DEX_A).users().messages()
    trashed = await google_call(messages.trash(userId="me", id=message_id))
    assert "TRASH" in trashed["labelIds"] and "INBOX" not in trashed["labelIds"]
    assert "messages" not in await google_call(messages.list(userId="me", q="old news"))
    assert (await google_call(messages.list(userId="me", labelIds=["TRASH"])))["messages"][0][
        "id"
    ] == message_id
    restored = await google_call(messages.untrash(userId="me", id=message_id))
    assert "INBOX" in restored["labelIds"] and "TRASH" not in restored["labelIds"]
    await google_call(messages.delete(userId="me", id=message_id))
    with pytest.raises(HttpError) as failure:
        await google_call(messages.get(userId="me", id=message_id))
    assert failure.value.status_code == 404
    assert error_of(failure)["status"] == "NOT_FOUND"


async def test_delegation_refused_across_users(google: Workspace) -> None:
    await google.add_user(DEX_A)
    await google.add_user(DEX_B)
    delivered = (await google.control.post("/inbound", json={"to": DEX_B, "subject": "For B only"})).json()
    dex_a = google.gmail(DEX_A).users()
    with pytest.raises(HttpError) as failure:
        await google_call(dex_a.messages().list(userId=DEX_B))
    assert failure.value.status_code == 403
    assert error_of(failure)["message"] == f"Delegation denied for {DEX_A}"
    with pytest.raises(HttpError) as failure:
        await google_call(dex_a.messages().get(userId="me", id=delivered["delivered"][0]["id"]))
    assert failure.value.status_code == 404
    with pytest.raises(HttpError) as failure:
        await google_call(google.calendar(DEX_A).events().list(calendarId=DEX_B))
    assert failure.value.status_code == 404


# ------------------------------------------------------------------------------------ Calendar


def timed(start: str, end: str, zone: str, summary: str, **fields: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        **fields,
    }


async def test_calendar_times_across_zones(google: Workspace) -> None:
    await google.add_user(DEX_A)
    events = google.calendar(DEX_A).events()
    late = await google_call(
        events.insert(
            calendarId="primary",
            body=timed("2024-03-01T23:30:00", "2024-03-02T00:30:00", "America/Los_Angeles", "Late call"),
        )
    )
    assert late["start"] == {"dateTime": "2024-03-02T07:30:00Z", "timeZone": "America/Los_Angeles"}
    dst = await google_call(
        events.insert(
            calendarId="primary",
            body=timed(
                "2024-03-10T09:00:00-04:00", "2024-03-10T10:00:00-04:00", "America/New_York", "After DST"
            ),
        )
    )
    holiday = await google_call(
        events.insert(
            calendarId="primary",
            body={"summary": "Holiday", "start": {"date": "2024-03-04"}, "end": {"date": "2024-03-05"}},
        )
    )

    async def summaries(**params: Any) -> list[str]:
        listed = await google_call(
            events.list(calendarId="primary", singleEvents=True, orderBy="startTime", **params)
        )
        return [e["summary"] for e in listed["items"]]

    # 23:30 on March 1 in Los Angeles is March 2 in UTC.
    utc_march_2 = {"timeMin": "2024-03-02T00:00:00Z", "timeMax": "2024-03-03T00:00:00Z"}
    assert await summaries(**utc_march_2) == ["Late call"]
    assert await summaries(timeMin="2024-03-01T00:00:00Z", timeMax="2024-03-02T00:00:00Z") == []
    assert await summaries(timeMin="2024-03-01T00:00:00-08:00", timeMax="2024-03-02T00:00:00-08:00") == [
        "Late call"
    ]
    # The all-day event is March 4 in the calendar's zone (UTC): 05:00 in Karachi is still March 4 there.
    assert await summaries(timeMin="2024-03-05T04:00:00+05:00", timeMax="2024-03-06T00:00:00+05:00") == [
        "Holiday"
    ]
    assert await summaries(timeMin="2024-03-05T05:00:00+05:00", timeMax="2024-03-06T00:00:00+05:00") == []
    assert await summaries(timeMin="2024-03-10T13:30:00Z", timeMax="2024-03-10T14:00:00Z") == ["After DST"]

    tokyo = await google_call(events.list(calendarId="primary", timeZone="Asia/Tokyo"))
    shown = {e["summary"]: e["start"] for e in tokyo["items"]}
    assert shown["Late call"] == {"dateTime": "2024-03-02T16:30:00+09:00", "timeZone": "America/Los_Angeles"}
    assert shown["Holiday"] == {"date": "2024-03-04"}
    fetched = await google_call(events.get(calendarId="primary", eventId=dst["id"], timeZone="Europe/Paris"))
    assert fetched["start"]["dateTime"] == "2024-03-10T14:00:00+01:00"
    assert fetched["end"]["dateTime"] == "2024-03-10T15:00:00+01:00"
    assert holiday["end"] == {"date": "2024-03-05"}

    with pytest.raises(HttpError) as failure:
        await google_call(
            events.insert(
                calendarId="primary",
                body=timed("2024-03-05T10:00:00Z", "2024-03-05T09:00:00Z", "UTC", "Backwards"),
            )
        )
    assert failure.value.status_code == 400
    error = error_of(failure)
    assert error["message"] == "The specified time range is empty."
    assert error["errors"][0] == {
        "message": "The specified time range is empty.",
        "domain": "calendar",
        "reason": "timeRangeEmpty",
        "location": "timeMax",
        "locationType": "parameter",
    }
    with pytest.raises(HttpError) as failure:
        await google_call(
            events.list(calendarId="primary", timeMin="2024-03-05T00:00:00Z", timeMax="2024-03-04T00:00:00Z")
        )
    assert failure.value.status_code == 400
    with pytest.raises(HttpError) as failure:
        await google_call(events.list(calendarId="primary", orderBy="startTime"))
    assert failure.value.status_code == 400
    with pytest.raises(HttpError) as failure:
        bad_status = {**timed("2024-03-05T09:00:00Z", "2024-03-05T10:00:00Z", "UTC", "?"), "status": ["x"]}
        await google_call(events.insert(calendarId="primary", body=bad_status))
    assert error_of(failure)["message"] == "Invalid event status."


async def test_calendar_update_patch_move_delete_and_invitations(google: Workspace) -> None:
    await google.add_user(DEX_A)
    await google.add_user(DEX_B)
    calendar = google.calendar(DEX_A)
    events = calendar.events()
    body = timed(
        "2024-05-06T10:00:00+02:00",
        "2024-05-06T11:00:00+02:00",
        "Europe/Berlin",
        "Planning",
        description="Agenda: everything",
        location="Room 1",
        attendees=[
            {"email": DEX_B, "responseStatus": "accepted"},
            {"email": "guest@example.org", "displayName": "Guest"},
        ],
    )
    event = await google_call(events.insert(calendarId="primary", body=body, sendUpdates="all"))
    assert event["organizer"] == {"email": DEX_A, "self": True}
    assert [(a["email"], a["responseStatus"]) for a in event["attendees"]] == [
        (DEX_B, "accepted"),
        ("guest@example.org", "needsAction"),
    ]
    invitation = await google_call(
        google.gmail(DEX_B).users().messages().list(userId="me", q="subject:invitation")
    )
    assert len(invitation["messages"]) == 1
    outbound = (await google.control.get("/outbound", params={"to": "guest@example.org"})).json()["messages"]
    assert outbound[0]["subject"].startswith("Invitation: Planning @ ")
    sent = message_from_bytes(base64.b64decode(outbound[0]["raw"]), policy=policy.default)
    invite = next(part for part in sent.walk() if part.get_filename() == "invite.ics")
    assert b"METHOD:REQUEST" in invite.get_payload(decode=True)

    patched = await google_call(
        events.patch(calendarId="primary", eventId=event["id"], body={"summary": "Planning v2"})
    )
    assert (patched["summary"], patched["location"], patched["sequence"]) == ("Planning v2", "Room 1", 1)
    replaced = await google_call(
        events.update(
            calendarId="primary",
            eventId=event["id"],
            body=timed("2024-05-06T12:00:00", "2024-05-06T13:00:00", "Europe/Berlin", "Planning v3"),
        )
    )
    assert "description" not in replaced and "attendees" not in replaced
    assert replaced["start"]["dateTime"] == "2024-05-06T10:00:00Z"

    team = await google_call(
        calendar.calendars().insert(body={"summary": "Team", "timeZone": "Europe/Berlin"})
    )
    moved = await google_call(events.move(calendarId="primary", eventId=event["id"], destination=team["id"]))
    assert moved["organizer"] == {"email": team["id"], "displayName": "Team", "self": True}
    assert moved["start"]["dateTime"] == "2024-05-06T12:00:00+02:00"
    assert (await google_call(events.get(calendarId="primary", eventId=event["id"])))["status"] == "cancelled"
    assert (await google_call(events.get(calendarId=team["id"], eventId=event["id"])))[
        "summary"
    ] == "Planning v3"

    await google_call(events.delete(calendarId=team["id"], eventId=event["id"]))
    deleted = await google_call(events.get(calendarId=team["id"], eventId=event["id"]))
    assert deleted["status"] == "cancelled"
    assert (await google_call(events.list(calendarId=team["id"])))["items"] == []
    shown = await google_call(events.list(calendarId=team["id"], showDeleted=True))
    assert [e["id"] for e in shown["items"]] == [event["id"]]
    with pytest.raises(HttpError) as failure:
        await google_call(events.delete(calendarId=team["id"], eventId=event["id"]))
    assert failure.value.status_code == 410
    assert error_of(failure) == {
        "code": 410,
        "message": "Resource has been deleted",
        "errors": [{"message": "Resource has been deleted", "domain": "global", "reason": "deleted"}],
    }


async def test_calendar_paging_and_sync(google: Workspace) -> None:
    await google.add_user(DEX_A)
    events = google.calendar(DEX_A).events()
    created = []
    for day in (5, 3, 1, 4, 2):
        body = timed(f"2024-06-0{day}T09:00:00Z", f"2024-06-0{day}T10:00:00Z", "UTC", f"Day {day}")
        created.append(await google_call(events.insert(calendarId="primary", body=body)))
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await google_call(
            events.list(
                calendarId="primary", singleEvents=True, orderBy="startTime", maxResults=2, pageToken=token
            )
        )
        pages += 1
        seen += [e["summary"] for e in page["items"]]
        token = page.get("nextPageToken")
        if token is None:
            sync_token = page["nextSyncToken"]
            break
    assert (pages, seen) == (3, [f"Day {d}" for d in range(1, 6)])
    assert [
        e["summary"] for e in (await google_call(events.list(calendarId="primary", q="day 4")))["items"]
    ] == ["Day 4"]

    await google_call(
        events.patch(calendarId="primary", eventId=created[0]["id"], body={"summary": "Day five"})
    )
    await google_call(events.delete(calendarId="primary", eventId=created[1]["id"]))
    changes = await google_call(events.list(calendarId="primary", syncToken=sync_token))
    assert [(e["id"], e["status"]) for e in changes["items"]] == [
        (created[0]["id"], "confirmed"),
        (created[1]["id"], "cancelled"),
    ]
    with pytest.raises(HttpError) as failure:
        await google_call(events.list(calendarId="primary", syncToken="bm90IGEgdG9rZW4"))
    assert failure.value.status_code == 410


# ------------------------------------------------------------------------------------ faults


async def test_injected_faults(google: Workspace) -> None:
    await google.add_user(DEX_A)
    profile = google.gmail(DEX_A).users().getProfile(userId="me")
    assert (await google.control.post("/faults", json={"api": "gmail", "status": 503})).status_code == 200
    with pytest.raises(HttpError) as failure:
        await google_call(profile)
    assert failure.value.status_code == 503
    assert error_of(failure)["status"] == "UNAVAILABLE"
    assert (await google_call(profile))["emailAddress"] == DEX_A

    await google.control.post("/faults", json={"api": "calendar", "delay_seconds": 0.5})
    impatient = google.calendar(DEX_A, http=httplib2.Http(timeout=0.2))
    with pytest.raises(TimeoutError):
        await google_call(impatient.events().list(calendarId="primary"))
    assert (await google.control.get("/faults")).json() == {"faults": []}
    assert (await google_call(impatient.events().list(calendarId="primary")))["items"] == []
