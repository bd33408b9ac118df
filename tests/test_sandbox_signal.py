"""The signal-cli-rest-api simulator over real HTTP against the sandbox app. There is no official SDK for it,
so the tests speak HTTP with httpx as a client would; the Telnyx side (the number that receives Signal's
verification SMS) is driven with the official Telnyx SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import telnyx
from litestar import Litestar, Request, Response, post

from conftest import RunningServer

ALICE = "+14155550142"  # a Signal user outside the sandbox
CODE_IN_SMS = re.compile(r"Your Signal code: (\d{3}-?\d{3})")
CAPTCHA = (
    "signalcaptcha://signal-hcaptcha.5fad97ac-7d06-4e44-b18a-b950b20148ff.registration.P1_eyJ0eXAiOiJKV1Qi"
)


@dataclass
class WebhookInbox:
    """A Telnyx messaging profile's webhook endpoint: every request body and its headers."""

    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> Litestar:
        @post("/telnyx", status_code=200)
        async def hook(request: Request[Any, Any, Any]) -> Response[str]:
            self.requests.append(((await request.body()).decode(), dict(request.headers)))
            return Response("ok")

        return Litestar(route_handlers=[hook], logging_config=None)

    async def text_to(self, number: str, within: float = 5.0) -> tuple[str, dict[str, str]]:
        """The first ``message.received`` webhook for an SMS to ``number``: its raw body and headers."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for body, headers in self.requests:
                data = json.loads(body)["data"]
                if (
                    data["event_type"] == "message.received"
                    and data["payload"]["to"][0]["phone_number"] == number
                ):
                    return body, headers
            await asyncio.sleep(0.02)
        raise AssertionError(f"no SMS reached {number}")


@dataclass
class TelnyxNumber:
    phone_number: str
    inbox: WebhookInbox
    client: telnyx.AsyncTelnyx


@pytest.fixture(scope="module")
async def telnyx_number(sandbox_server: RunningServer) -> AsyncIterator[TelnyxNumber]:
    """A number bought on the sandbox's Telnyx account, whose messaging profile posts to a local receiver."""
    inbox = WebhookInbox()
    async with RunningServer(inbox.app()) as receiver:
        client = telnyx.AsyncTelnyx(api_key="KEYsandbox", base_url=f"{sandbox_server.url}/telnyx/v2")
        profile = await client.messaging_profiles.create(
            name="signal registration", whitelisted_destinations=["US"], webhook_url=f"{receiver.url}/telnyx"
        )
        assert profile.data is not None
        available = await client.available_phone_numbers.list(
            filter={"country_code": "US", "features": ["sms"]}
        )
        assert available.data
        phone_number = available.data[0].phone_number
        assert phone_number is not None
        order = await client.number_orders.create(
            phone_numbers=[{"phone_number": phone_number}], messaging_profile_id=profile.data.id
        )
        assert order.data is not None and order.data.id is not None
        while order.data.status == "pending":  # the number is ours once the order succeeds
            await asyncio.sleep(0.02)
            order = await client.number_orders.retrieve(order.data.id)
            assert order.data is not None and order.data.id is not None
        assert order.data.status == "success"
        yield TelnyxNumber(phone_number, inbox, client)
        await client.close()


@pytest.fixture
async def signal(sandbox_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the simulated signal-cli-rest-api, on a fresh simulator."""
    async with httpx.AsyncClient(base_url=f"{sandbox_server.url}/signal", timeout=5) as client:
        assert (await client.post("/_control/reset")).status_code == 200
        yield client
        await client.post("/_control/reset")


async def pending_code(signal: httpx.AsyncClient, number: str) -> str:
    state = (await signal.get("/_control/state")).json()
    return next(a["pending_code"] for a in state["accounts"] if a["number"] == number)


async def register(signal: httpx.AsyncClient, number: str, name: str = "") -> None:
    """Register and verify ``number`` (the code read from the simulator's state), and set a profile name."""
    assert (await signal.post(f"/v1/register/{number}")).status_code == 201
    code = await pending_code(signal, number)
    assert (await signal.post(f"/v1/register/{number}/verify/{code}")).status_code == 201
    if name:
        assert (await signal.put(f"/v1/profiles/{number}", json={"name": name})).status_code == 204


async def receive(signal: httpx.AsyncClient, number: str) -> list[dict[str, Any]]:
    response = await signal.get(f"/v1/receive/{number}", params={"timeout": "0"})
    assert response.status_code == 200, response.text
    return list(response.json())


def messages(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item["envelope"] for item in received if "dataMessage" in item["envelope"]]


async def send(signal: httpx.AsyncClient, number: str, recipients: list[str], message: str) -> httpx.Response:
    return await signal.post(
        "/v2/send", json={"number": number, "recipients": recipients, "message": message}
    )


async def add_outside_user(signal: httpx.AsyncClient, number: str, name: str) -> dict[str, Any]:
    response = await signal.post("/_control/outside_users", json={"number": number, "name": name})
    assert response.status_code == 201
    return dict(response.json())


async def test_about_reports_the_normal_mode(signal: httpx.AsyncClient) -> None:
    about = (await signal.get("/v1/about")).json()
    assert about["mode"] == "normal"
    assert about["versions"] == ["v1", "v2"]


async def test_the_code_arrives_by_sms_at_the_telnyx_number(
    signal: httpx.AsyncClient, telnyx_number: TelnyxNumber, sandbox_server: RunningServer
) -> None:
    number = telnyx_number.phone_number
    response = await signal.post(f"/v1/register/{number}")
    assert response.status_code == 201
    assert response.content == b""

    body, headers = await telnyx_number.inbox.text_to(number)
    key = (await signal.get(f"{sandbox_server.url}/telnyx/_control/public_key")).json()["public_key"]
    event = telnyx_number.client.webhooks.unwrap(body, headers=headers, key=key)  # a genuine Telnyx webhook
    text = json.loads(body)["data"]["payload"]["text"]
    assert event is not None
    match = CODE_IN_SMS.search(text)
    assert match is not None, text

    assert (await signal.post(f"/v1/register/{number}/verify/{match.group(1)}")).status_code == 201
    assert number in (await signal.get("/v1/accounts")).json()


async def test_a_number_outside_telnyx_gets_no_sms(signal: httpx.AsyncClient) -> None:
    number = "+16175550123"
    assert (await signal.post(f"/v1/register/{number}")).status_code == 201
    sms = (await signal.get("/_control/state")).json()["sms"]
    assert [s["delivered_to_telnyx"] for s in sms if s["to"] == number] == [False]


async def test_wrong_or_unrequested_codes_are_refused(signal: httpx.AsyncClient) -> None:
    number = "+16175550124"
    unrequested = await signal.post(f"/v1/register/{number}/verify/123456")
    assert unrequested.status_code == 400
    assert unrequested.json() == {"error": "Verify error: No registration verification session active\n"}

    assert (await signal.post(f"/v1/register/{number}")).status_code == 201
    code = await pending_code(signal, number)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    refused = await signal.post(f"/v1/register/{number}/verify/{wrong}")
    assert refused.status_code == 400
    assert refused.json() == {"error": "Verify error: [401] Authorization failed!\n"}
    assert number not in (await signal.get("/v1/accounts")).json()

    assert (await signal.post(f"/v1/register/{number}/verify/{code[:3]}-{code[3:]}")).status_code == 201
    assert number in (await signal.get("/v1/accounts")).json()


async def test_a_captcha_is_demanded_then_accepted(signal: httpx.AsyncClient) -> None:
    number = "+16175550125"
    assert (await signal.post("/_control/captcha", json={"count": 1})).status_code == 200

    demanded = await signal.post(f"/v1/register/{number}", json={"use_voice": False})
    assert demanded.status_code == 400
    assert demanded.json()["error"].startswith("Captcha required for verification, use --captcha CAPTCHA\n")
    assert "https://signalcaptchas.org/registration/generate.html" in demanded.json()["error"]
    malformed = await signal.post(f"/v1/register/{number}", json={"captcha": "not-a-token"})
    assert malformed.json() == {"error": "Invalid captcha given.\n"}

    assert (await signal.post(f"/v1/register/{number}", json={"captcha": CAPTCHA})).status_code == 201
    code = await pending_code(signal, number)
    assert (await signal.post(f"/v1/register/{number}/verify/{code}")).status_code == 201
    # The demand was for one registration only.
    assert (await signal.post("/v1/register/+16175550126")).status_code == 201


async def test_signal_rate_limits_registration(signal: httpx.AsyncClient) -> None:
    fault = {"kind": "rate_limit", "status": 413, "count": 1}
    assert (await signal.post("/_control/faults", json=fault)).status_code == 200
    limited = await signal.post("/v1/register/+16175550127")
    assert limited.status_code == 400
    assert limited.json() == {"error": "Failed to register: [413] Rate Limited (RateLimitException)\n"}
    assert (await signal.post("/v1/register/+16175550127")).status_code == 201


async def test_messages_between_accounts_are_received_once(signal: httpx.AsyncClient) -> None:
    dex, bob = "+16175550130", "+16175550131"
    await register(signal, dex, "Dex")
    await register(signal, bob)

    sent = await send(signal, dex, [bob], "hello Bob")
    assert sent.status_code == 201
    timestamp = int(sent.json()["timestamp"])

    received = await receive(signal, bob)
    assert len(received) == 1
    assert received[0]["account"] == bob
    envelope = received[0]["envelope"]
    assert (envelope["source"], envelope["sourceNumber"], envelope["sourceName"]) == (dex, dex, "Dex")
    assert envelope["timestamp"] == timestamp
    assert envelope["dataMessage"]["message"] == "hello Bob"
    assert await receive(signal, bob) == []

    # Bob's signal-cli acknowledged it while receiving.
    receipts = [item["envelope"] for item in await receive(signal, dex)]
    assert [(r["sourceNumber"], r["receiptMessage"]["timestamps"]) for r in receipts] == [(bob, [timestamp])]
    assert receipts[0]["receiptMessage"]["isDelivery"] is True


async def test_an_outside_user_reads_our_message_and_replies(signal: httpx.AsyncClient) -> None:
    dex = "+16175550132"
    await register(signal, dex, "Dex")
    alice = await add_outside_user(signal, ALICE, "Alice")

    attachment = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
    sent = await signal.post(
        "/v2/send",
        json={"number": dex, "recipients": [ALICE], "message": "Lunch?", "base64_attachments": [attachment]},
    )
    assert sent.status_code == 201
    phone = (await signal.get(f"/_control/outside_users/{ALICE}")).json()["received"]
    assert [(m["from"], m["from_name"], m["message"]) for m in phone] == [(dex, "Dex", "Lunch?")]
    assert phone[0]["attachments"][0]["content_type"] == "image/png"

    reply = await signal.post(
        f"/_control/outside_users/{ALICE}/messages", json={"recipient": dex, "message": "Yes!"}
    )
    assert reply.status_code == 201
    received = await receive(signal, dex)
    # Alice's phone confirmed delivery of "Lunch?" before she answered.
    assert [item["envelope"]["receiptMessage"]["timestamps"] for item in received[:1]] == [
        [int(sent.json()["timestamp"])]
    ]
    [envelope] = messages(received)
    assert envelope["sourceNumber"] == ALICE
    assert envelope["sourceUuid"] == alice["uuid"]
    assert envelope["sourceName"] == "Alice"
    assert envelope["timestamp"] == reply.json()["timestamp"]
    assert envelope["dataMessage"]["message"] == "Yes!"
    assert await receive(signal, dex) == []


async def test_a_group_message_reaches_every_member(signal: httpx.AsyncClient) -> None:
    dex, bob = "+16175550133", "+16175550134"
    await register(signal, dex, "Dex")
    await register(signal, bob, "Bob")
    await add_outside_user(signal, ALICE, "Alice")

    created = await signal.post(f"/v1/groups/{dex}", json={"name": "Lunch club", "members": [bob, ALICE]})
    assert created.status_code == 201
    group_id = created.json()["id"]
    assert group_id.startswith("group.")
    [group] = (await signal.get(f"/v1/groups/{bob}")).json()
    assert (group["id"], group["name"], group["members"], group["admins"]) == (
        group_id,
        "Lunch club",
        [dex, bob, ALICE],
        [dex],
    )
    [update] = messages(await receive(signal, bob))
    assert update["dataMessage"]["groupInfo"]["type"] == "UPDATE"

    assert (await send(signal, dex, [group_id], "Noon today")).status_code == 201
    [envelope] = messages(await receive(signal, bob))
    assert envelope["dataMessage"]["message"] == "Noon today"
    info = envelope["dataMessage"]["groupInfo"]
    assert (info["groupId"], info["groupName"], info["type"]) == (
        group["internal_id"],
        "Lunch club",
        "DELIVER",
    )
    [on_phone] = (await signal.get(f"/_control/outside_users/{ALICE}")).json()["received"]
    assert (on_phone["message"], on_phone["group"]["id"]) == ("Noon today", group_id)

    mixed = await send(signal, dex, [group_id, bob], "both")
    assert mixed.status_code == 400
    assert "cannot be specified together" in mixed.json()["error"]


async def test_contacts_are_who_the_account_talked_with(signal: httpx.AsyncClient) -> None:
    dex, bob = "+16175550135", "+16175550136"
    await register(signal, dex, "Dex")
    await register(signal, bob, "Bob")
    alice = await add_outside_user(signal, ALICE, "Alice")
    assert (await send(signal, dex, [bob], "hi")).status_code == 201
    await signal.post(f"/_control/outside_users/{ALICE}/messages", json={"recipient": dex, "message": "hey"})

    contacts = (await signal.get(f"/v1/contacts/{dex}")).json()
    assert [(c["number"], c["profile"]["given_name"]) for c in contacts] == [(bob, "Bob"), (ALICE, "Alice")]
    one = await signal.get(f"/v1/contacts/{dex}/{alice['uuid']}")
    assert (one.status_code, one.json()["number"]) == (200, ALICE)
    assert (await signal.get(f"/v1/contacts/{dex}/+16175550199")).status_code == 404

    named = await signal.put(f"/v1/contacts/{dex}", json={"recipient": ALICE, "name": "Alice from work"})
    assert named.status_code == 204
    await signal.post(
        f"/_control/outside_users/{ALICE}/messages", json={"recipient": dex, "message": "again"}
    )
    assert messages(await receive(signal, dex))[-1]["sourceName"] == "Alice from work"


async def test_an_unregistered_account_can_neither_send_nor_receive(signal: httpx.AsyncClient) -> None:
    dex, bob = "+16175550137", "+16175550138"
    await register(signal, dex)
    await register(signal, bob)
    assert (await signal.post(f"/v1/unregister/{dex}")).status_code == 204

    refused = await send(signal, dex, [bob], "still there?")
    assert refused.status_code == 400
    assert refused.json() == {"error": f"User {dex} is not registered.\n"}
    assert (await signal.get(f"/v1/receive/{dex}")).json() == {"error": f"User {dex} is not registered.\n"}
    unreachable = await send(signal, bob, [dex], "hello?")
    assert unreachable.json() == {"error": f"The user {dex} is not registered.\n"}
    assert dex not in (await signal.get("/v1/accounts")).json()

    # The Signal account still exists: registering again reactivates it without a code.
    assert (await signal.post(f"/v1/register/{dex}")).status_code == 201
    assert (await send(signal, dex, [bob], "back")).status_code == 201
    codes_sent = [sms["to"] for sms in (await signal.get("/_control/state")).json()["sms"]]
    assert codes_sent.count(dex) == 1  # its first registration's; the shared sandbox serves others too


async def test_injected_errors_and_timeouts(signal: httpx.AsyncClient) -> None:
    dex, bob = "+16175550139", "+16175550140"
    await register(signal, dex)
    await register(signal, bob)

    fault = {"kind": "error", "count": 2, "endpoint": "POST /v2/send"}
    assert (await signal.post("/_control/faults", json=fault)).status_code == 200
    assert (await signal.get("/v1/about")).status_code == 200  # another endpoint is unaffected
    for _ in range(2):
        failed = await send(signal, dex, [bob], "ping")
        assert (failed.status_code, failed.content) == (500, b"")
    assert (await send(signal, dex, [bob], "ping")).status_code == 201

    # Aimed at bob's number alone: a worker's keep-alive may be receiving for other numbers meanwhile.
    fault = {"kind": "timeout", "count": 1, "seconds": 0.3, "endpoint": f"GET /v1/receive/{bob}"}
    assert (await signal.post("/_control/faults", json=fault)).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        await signal.get(f"/v1/receive/{bob}", params={"timeout": "0"}, timeout=0.1)
    await asyncio.sleep(0.3)
    assert len(messages(await receive(signal, bob))) == 1  # nothing was taken while it hung
