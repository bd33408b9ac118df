"""The Telnyx simulator, driven by the official SDK (``telnyx.AsyncTelnyx``) over real HTTP against the
sandbox app; httpx only for the simulator's own ``/telnyx/_control`` endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import telnyx
from litestar import Litestar, Request, Response, post

from conftest import RunningServer
from poindexter_cloud.sandbox.telnyx import deliver_sms

KEY = "KEY0123456789ABCDEF_sandbox"
OFF_NET = "+16465550142"  # a mobile phone outside the sandbox's account (646 is not in its inventory)


class Receiver:
    """A webhook endpoint on ``/hook`` and ``/failover`` that records what it gets and answers each path's
    ``statuses`` in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (path, body, headers)
        self.statuses: dict[str, list[int]] = {}

    def events(self, path: str = "/hook") -> list[dict[str, Any]]:
        return [json.loads(body) for at, body, _ in self.requests if at == path]

    def types(self, path: str = "/hook") -> list[str]:
        return [event["data"]["event_type"] for event in self.events(path)]

    async def wait_for(self, *types: str, path: str = "/hook", count: int = 0, within: float = 5.0) -> None:
        """Until ``types`` (and at least ``count`` webhooks) have reached ``path``."""
        deadline = time.monotonic() + within
        while not set(types) <= set(self.types(path)) or len(self.types(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"webhooks {types} not all received on {path}; got {self.types(path)}")
            await asyncio.sleep(0.01)

    def app(self) -> Litestar:
        @post(["/hook", "/failover"], status_code=200)
        async def hook(request: Request[Any, Any, Any]) -> Response[str]:
            path = request.url.path
            self.requests.append((path, (await request.body()).decode(), dict(request.headers)))
            queued = self.statuses.get(path) or []
            return Response("ok", status_code=queued.pop(0) if queued else 200)

        return Litestar(route_handlers=[hook], logging_config=None)


@pytest.fixture(scope="module")
async def receiver_server() -> AsyncIterator[tuple[Receiver, RunningServer]]:
    receiver = Receiver()
    async with RunningServer(receiver.app()) as server:
        yield receiver, server


@pytest.fixture
def receiver(receiver_server: tuple[Receiver, RunningServer]) -> Receiver:
    receiver_server[0].requests.clear()
    receiver_server[0].statuses.clear()
    return receiver_server[0]


@pytest.fixture
def hook_url(receiver_server: tuple[Receiver, RunningServer]) -> str:
    return f"{receiver_server[1].url}/hook"


@pytest.fixture
async def control(sandbox_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's controls, on a freshly reset simulator."""
    async with httpx.AsyncClient(base_url=f"{sandbox_server.url}/telnyx/_control", timeout=10) as http:
        assert (await http.post("/reset")).status_code == 200
        yield http


def make_client(sandbox: RunningServer, **options: Any) -> telnyx.AsyncTelnyx:
    options = {"api_key": KEY, "max_retries": 0, **options}
    return telnyx.AsyncTelnyx(base_url=f"{sandbox.url}/telnyx/v2", **options)


@pytest.fixture
async def client(
    sandbox_server: RunningServer, control: httpx.AsyncClient
) -> AsyncIterator[telnyx.AsyncTelnyx]:
    async with make_client(sandbox_server) as sdk:
        yield sdk


async def public_key(control: httpx.AsyncClient) -> str:
    key: str = (await control.get("/public_key")).json()["public_key"]
    return key


async def settled(client: telnyx.AsyncTelnyx, order_id: str) -> Any:
    """The order once it is no longer pending (what a caller polls for)."""
    for _ in range(200):
        order = (await client.number_orders.retrieve(order_id)).data
        assert order is not None
        if order.status != "pending":
            return order
        await asyncio.sleep(0.01)
    raise AssertionError("the number order stayed pending")


async def buy(client: telnyx.AsyncTelnyx, ndc: str = "312", profile_id: str | None = None) -> Any:
    """Search an SMS number in ``ndc``, order it, wait for the order, and return the number's record."""
    found = await client.available_phone_numbers.list(
        filter={"country_code": "US", "national_destination_code": ndc, "features": ["sms"], "limit": 1}
    )
    assert found.data and found.data[0].phone_number
    wanted = found.data[0].phone_number
    extra = {"messaging_profile_id": profile_id} if profile_id else {}
    created = await client.number_orders.create(phone_numbers=[{"phone_number": wanted}], **extra)
    assert created.data is not None and created.data.id
    assert (await settled(client, created.data.id)).status == "success"
    page = await client.phone_numbers.list(filter={"phone_number": wanted.removeprefix("+")})
    assert [n.phone_number for n in page.data] == [wanted]
    return page.data[0]


async def profile(client: telnyx.AsyncTelnyx, webhook_url: str | None = None, **extra: Any) -> Any:
    made = await client.messaging_profiles.create(
        name="Dex SMS", whitelisted_destinations=["US"], webhook_url=webhook_url, **extra
    )
    assert made.data is not None
    return made.data


# ---------------------------------------------------------------------------------------------- auth


async def test_requests_without_a_valid_key_are_refused(
    sandbox_server: RunningServer, control: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    for api_key in (None, "sk_test_not_a_telnyx_key"):
        async with make_client(sandbox_server, api_key=api_key) as anonymous:
            with pytest.raises(telnyx.AuthenticationError) as refused:
                await anonymous.available_phone_numbers.list()
        assert refused.value.status_code == 401
        assert refused.value.body["errors"][0]["code"] == "10009"  # type: ignore[index]
        assert refused.value.response.headers["x-request-id"]


# ---------------------------------------------------------------------------------------------- numbers


async def test_number_search_filters(client: telnyx.AsyncTelnyx) -> None:
    found = await client.available_phone_numbers.list(
        filter={
            "country_code": "US",
            "national_destination_code": "415",
            "features": ["sms", "mms"],
            "limit": 5,
        }
    )
    assert found.data is not None and len(found.data) == 5
    assert found.metadata is not None and found.metadata.total_results == 75  # one line in four lacks MMS
    for entry in found.data:
        assert entry.phone_number and entry.phone_number.startswith("+1415555")
        assert {"sms", "mms"} <= {feature.name for feature in entry.features or []}
        assert entry.record_type == "available_phone_number"
        assert entry.cost_information and entry.cost_information.currency == "USD"

    boston = await client.available_phone_numbers.list(
        filter={"locality": "Boston", "administrative_area": "MA", "features": ["sms"], "limit": 100}
    )
    assert boston.data and len(boston.data) == 100
    regions = {(r.region_type, r.region_name) for r in boston.data[0].region_information or []}
    assert {("location", "Boston"), ("state", "MA")} <= regions

    exact = await client.available_phone_numbers.list(
        filter={"national_destination_code": "206", "phone_number": {"ends_with": "42"}}
    )
    assert [n.phone_number for n in exact.data or []] == ["+12065550142"]
    assert (await client.available_phone_numbers.list(filter={"country_code": "GB"})).data == []


async def test_order_lists_the_number_and_an_owned_number_cannot_be_ordered(
    client: telnyx.AsyncTelnyx,
) -> None:
    found = await client.available_phone_numbers.list(
        filter={"national_destination_code": "512", "features": ["sms"], "limit": 3}
    )
    wanted = [n.phone_number for n in found.data or []]
    created = (
        await client.number_orders.create(
            phone_numbers=[{"phone_number": n} for n in wanted if n], customer_reference="dex-42"
        )
    ).data
    assert created is not None and created.id
    assert created.status == "pending" and created.phone_numbers_count == 3
    pending = await client.phone_numbers.list(filter={"status": "purchase-pending"})
    assert sorted(n.phone_number for n in pending.data) == sorted(wanted)

    order = await settled(client, created.id)
    assert order.status == "success" and {n.status for n in order.phone_numbers} == {"success"}
    first = await client.phone_numbers.list(page_size=2)
    assert len(first.data) == 2 and first.meta and (first.meta.page_number, first.meta.total_pages) == (1, 2)
    everything = [n async for n in await client.phone_numbers.list(page_size=2)]
    assert sorted(n.phone_number for n in everything) == sorted(wanted)
    assert {(n.status, n.customer_reference) for n in everything} == {("active", "dex-42")}
    one = (await client.phone_numbers.retrieve(everything[0].id)).data
    assert one is not None and one.phone_number == everything[0].phone_number and one.activated_at

    # The number filter takes digits, as documented: a "+" matches nothing.
    assert (await client.phone_numbers.list(filter={"phone_number": wanted[0] or ""})).data == []
    again = await client.available_phone_numbers.list(
        filter={"national_destination_code": "512", "limit": 100}
    )
    assert not set(wanted) & {n.phone_number for n in again.data or []}

    with pytest.raises(telnyx.UnprocessableEntityError) as taken:
        await client.number_orders.create(phone_numbers=[{"phone_number": wanted[0] or ""}])
    error = taken.value.body["errors"][0]  # type: ignore[index]
    assert error["code"] == "10015" and error["source"]["pointer"] == "/phone_numbers/0/phone_number"
    listed = await client.number_orders.list(filter={"customer_reference": "dex-42"})
    assert [o.id for o in listed.data] == [created.id]


async def test_a_failed_order_leaves_no_usable_number(
    client: telnyx.AsyncTelnyx, control: httpx.AsyncClient
) -> None:
    assert (await control.post("/number_orders", json={"outcome": "failure"})).status_code == 200
    wanted = "+12125550107"
    created = (await client.number_orders.create(phone_numbers=[{"phone_number": wanted}])).data
    assert created is not None and created.id and created.status == "pending"
    order = await settled(client, created.id)
    assert order.status == "failure" and [n.status for n in order.phone_numbers] == ["failure"]
    record = (await client.phone_numbers.list(filter={"phone_number": wanted[1:]})).data
    assert [n.status for n in record] == ["purchase-failed"]
    assert deliver_sms(OFF_NET, wanted, "anyone there?") is None
    on_sale = await client.available_phone_numbers.list(filter={"phone_number": {"ends_with": "0107"}})
    assert wanted in {n.phone_number for n in on_sale.data or []}

    # The outcome stays "failure" until set back.
    second = (await client.number_orders.create(phone_numbers=[{"phone_number": "+12125550108"}])).data
    assert second is not None and second.id and (await settled(client, second.id)).status == "failure"
    await control.post("/number_orders", json={"outcome": "success"})
    retried = (await client.number_orders.create(phone_numbers=[{"phone_number": wanted}])).data
    assert retried is not None and retried.id and (await settled(client, retried.id)).status == "success"


async def test_release_returns_the_number_to_the_inventory(client: telnyx.AsyncTelnyx) -> None:
    dex = await profile(client)
    number = await buy(client, "617", dex.id)
    released = (await client.phone_numbers.delete(number.id)).data
    assert (
        released is not None and released.status == "deleted" and released.phone_number == number.phone_number
    )
    with pytest.raises(telnyx.NotFoundError) as gone:
        await client.phone_numbers.retrieve(number.id)
    assert gone.value.body["errors"][0]["code"] == "10005"  # type: ignore[index]
    assert (await client.phone_numbers.list()).data == []
    with pytest.raises(telnyx.BadRequestError) as refused:
        await client.messages.send(from_=number.phone_number, to=OFF_NET, text="still mine?")
    assert refused.value.body["errors"][0]["code"] == "40305"  # type: ignore[index]
    on_sale = await client.available_phone_numbers.list(
        filter={"national_destination_code": "617", "limit": 1}
    )
    assert [n.phone_number for n in on_sale.data or []] == [number.phone_number]


async def test_malformed_number_requests_are_telnyx_errors_not_crashes(
    client: telnyx.AsyncTelnyx, sandbox_server: RunningServer
) -> None:
    with pytest.raises(telnyx.UnprocessableEntityError) as refused:
        await client.number_orders.create(phone_numbers=[{"phone_number": 13125550111}])  # type: ignore[typeddict-item]
    error = refused.value.body["errors"][0]  # type: ignore[index]
    assert error["code"] == "10016" and error["source"]["pointer"] == "/phone_numbers/0/phone_number"
    # A parameter given twice (which the SDK never sends) is a list: refused like any other bad sort.
    async with httpx.AsyncClient(base_url=f"{sandbox_server.url}/telnyx/v2") as http:
        twice = await http.get(
            "/phone_numbers?sort=phone_number&sort=purchased_at", headers={"Authorization": f"Bearer {KEY}"}
        )
    assert twice.status_code == 422 and twice.json()["errors"][0]["code"] == "10015"


# ---------------------------------------------------------------------------------------------- messaging


async def test_messaging_profile_attach_update_and_detach(client: telnyx.AsyncTelnyx, hook_url: str) -> None:
    dex = await profile(client, hook_url)
    assert dex.record_type == "messaging_profile" and dex.whitelisted_destinations == ["US"]
    assert dex.webhook_url == hook_url and dex.enabled
    number = await buy(client)
    assert number.messaging_profile_id is None

    attached = (await client.phone_numbers.messaging.update(number.id, messaging_profile_id=dex.id)).data
    assert attached is not None and attached.messaging_profile_id == dex.id
    shown = (await client.phone_numbers.retrieve(number.id)).data
    assert shown is not None and (shown.messaging_profile_id, shown.messaging_profile_name) == (
        dex.id,
        "Dex SMS",
    )
    members = await client.messaging_profiles.list_phone_numbers(dex.id)
    assert [n.phone_number for n in members.data] == [number.phone_number]

    updated = (
        await client.messaging_profiles.update(dex.id, webhook_failover_url=f"{hook_url}/2", name="Dex")
    ).data
    assert updated is not None and (updated.name, updated.webhook_failover_url) == ("Dex", f"{hook_url}/2")
    assert [p.id for p in (await client.messaging_profiles.list(filter={"name": "Dex"})).data] == [dex.id]
    with pytest.raises(telnyx.UnprocessableEntityError) as in_use:
        await client.messaging_profiles.delete(dex.id)
    assert in_use.value.body["errors"][0]["code"] == "10021"  # type: ignore[index]

    detached = (await client.phone_numbers.messaging.update(number.id, messaging_profile_id="")).data
    assert detached is not None and detached.messaging_profile_id is None
    await client.messaging_profiles.delete(dex.id)
    with pytest.raises(telnyx.NotFoundError):
        await client.messaging_profiles.retrieve(dex.id)


async def test_sending_an_sms_is_queued_then_sent_and_finalized(
    client: telnyx.AsyncTelnyx, control: httpx.AsyncClient, receiver: Receiver, hook_url: str
) -> None:
    dex = await profile(client, hook_url)
    number = await buy(client, profile_id=dex.id)
    sent = (await client.messages.send(from_=number.phone_number, to=OFF_NET, text="Hello from Dex")).data
    assert sent is not None and sent.id and sent.direction == "outbound" and sent.type == "SMS"
    assert sent.to and (sent.to[0].phone_number, sent.to[0].status) == (OFF_NET, "queued")
    assert (sent.parts, sent.encoding, sent.messaging_profile_id) == (1, "GSM-7", dex.id)
    assert sent.from_ and sent.from_.phone_number == number.phone_number

    await receiver.wait_for("message.sent", "message.finalized")
    key = await public_key(control)
    statuses = []
    for _, body, headers in receiver.requests:
        event = client.webhooks.unwrap(body, headers=headers, key=key)
        assert event.data is not None and event.data.payload is not None
        assert event.data.payload.id == sent.id and event.data.record_type == "event"
        statuses.append((event.data.event_type, event.data.payload.to[0].status))  # type: ignore[union-attr, index]
    assert statuses == [("message.sent", "sent"), ("message.finalized", "delivered")]
    assert receiver.events()[0]["meta"] == {"attempt": 1, "delivered_to": hook_url}

    shown = (await client.messages.retrieve(sent.id)).data
    assert shown is not None and shown.to and shown.to[0].status == "delivered"  # type: ignore[union-attr]
    left = (await control.get("/state")).json()["off_network_messages"]
    assert [(m["id"], m["text"]) for m in left] == [(sent.id, "Hello from Dex")]


async def test_an_sms_of_more_than_ten_parts_is_refused(client: telnyx.AsyncTelnyx) -> None:
    dex = await profile(client)
    number = await buy(client, profile_id=dex.id)
    for text, encoding in (("a" * 1530, "GSM-7"), ("\u0434" * 670, "UCS-2")):  # 10 x 153, 10 x 67
        sent = (await client.messages.send(from_=number.phone_number, to=OFF_NET, text=text)).data
        assert sent is not None and (sent.parts, sent.encoding) == (10, encoding)
    for text in ("a" * 1531, "\u0434" * 671, "{" * 766):  # an escaped GSM-7 character takes two
        with pytest.raises(telnyx.BadRequestError) as refused:
            await client.messages.send(from_=number.phone_number, to=OFF_NET, text=text)
        error = refused.value.body["errors"][0]  # type: ignore[index]
        assert (error["code"], error["title"]) == ("40302", "Message too large")
        assert error["detail"] == "The SMS message would be divided into 11 parts. The maximum is 10."


async def test_a_message_to_another_number_of_the_account_arrives_inbound(
    client: telnyx.AsyncTelnyx, receiver: Receiver, hook_url: str
) -> None:
    sender_profile = await profile(client)
    dex = await profile(client, hook_url)
    sender = await buy(client, "212", sender_profile.id)
    number = await buy(client, "206", dex.id)
    sent = (await client.messages.send(from_=sender.phone_number, to=number.phone_number, text="on-net")).data
    assert sent is not None and sent.to and sent.to[0].carrier == "TELNYX LLC"
    await receiver.wait_for("message.received")
    [received] = receiver.events()  # the sender's profile has no webhook URL: nothing for it
    payload = received["data"]["payload"]
    assert (payload["direction"], payload["text"], payload["from"]["phone_number"]) == (
        "inbound",
        "on-net",
        sender.phone_number,
    )
    assert (
        payload["messaging_profile_id"] == dex.id and payload["to"][0]["phone_number"] == number.phone_number
    )


async def test_inbound_sms_is_a_signed_message_received_webhook(
    client: telnyx.AsyncTelnyx, control: httpx.AsyncClient, receiver: Receiver, hook_url: str
) -> None:
    dex = await profile(client, hook_url)
    number = await buy(client, profile_id=dex.id)
    texted = await control.post(
        "/inbound", json={"from": OFF_NET, "to": number.phone_number, "text": "Hi Dex"}
    )
    assert texted.status_code == 200
    # The in-process entry point other simulators use (the Signal simulator's verification SMS), here from
    # another thread than the sandbox's event loop.
    message = await asyncio.to_thread(
        deliver_sms, "+15557446250", number.phone_number, "Your Signal code: 123456"
    )
    assert message is not None and message.direction == "inbound"
    assert deliver_sms(OFF_NET, "+19995550100", "nobody here") is None
    await receiver.wait_for("message.received", count=2)

    key = await public_key(control)
    _, body, headers = receiver.requests[0]
    assert {"telnyx-signature-ed25519", "telnyx-timestamp"} <= set(headers)
    event = client.webhooks.unwrap(body, headers=headers, key=key)
    assert event.data is not None and event.data.event_type == "message.received"
    payload = event.data.payload
    assert payload is not None and payload.direction == "inbound" and payload.text == "Hi Dex"  # type: ignore[union-attr]
    assert payload.from_ and payload.from_.phone_number == OFF_NET  # type: ignore[union-attr]
    assert payload.to[0].phone_number == number.phone_number  # type: ignore[union-attr, index]
    texts = [event["data"]["payload"]["text"] for event in receiver.events()]
    assert texts == ["Hi Dex", "Your Signal code: 123456"]
    retrieved = (await client.messages.retrieve(message.id)).data
    assert retrieved is not None and retrieved.direction == "inbound"

    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(body.replace("Hi Dex", "Hi Eve"), headers=headers, key=key)
    with pytest.raises(ValueError, match="too old"):
        client.webhooks.unwrap(
            body, headers={**headers, "telnyx-timestamp": str(int(time.time()) - 600)}, key=key
        )
    refused = await control.post("/inbound", json={"from": OFF_NET, "to": "+19995550100", "text": "?"})
    assert refused.status_code == 404


async def test_webhooks_retry_then_fail_over_and_duplicate(
    client: telnyx.AsyncTelnyx, control: httpx.AsyncClient, receiver: Receiver, hook_url: str
) -> None:
    failover = hook_url.replace("/hook", "/failover")
    await control.post("/webhooks", json={"retry_base_seconds": 0.01})
    dex = await profile(client, hook_url, webhook_failover_url=failover)
    number = await buy(client, profile_id=dex.id)
    receiver.statuses["/hook"] = [500, 503, 502]
    await control.post("/inbound", json={"from": OFF_NET, "to": number.phone_number, "text": "retry me"})
    await receiver.wait_for("message.received", path="/failover")
    attempts = [(e["meta"]["attempt"], e["meta"]["delivered_to"]) for e in receiver.events("/failover")]
    assert attempts == [(4, failover)]
    log = (await control.get("/deliveries")).json()["deliveries"]
    assert [(d["attempt"], d["status"], d["failover"]) for d in log] == [
        (1, 500, False),
        (2, 503, False),
        (3, 502, False),
        (4, 200, True),
    ]

    receiver.requests.clear()
    await control.post("/webhooks", json={"mode": "duplicate"})
    await control.post("/inbound", json={"from": OFF_NET, "to": number.phone_number, "text": "twice"})
    await receiver.wait_for("message.received", count=2)
    assert len({event["data"]["id"] for event in receiver.events()}) == 1 and len(receiver.events()) == 2

    receiver.requests.clear()
    await control.post("/webhooks", json={"mode": "hold"})
    await control.post("/inbound", json={"from": OFF_NET, "to": number.phone_number, "text": "later"})
    await asyncio.sleep(0.1)
    assert receiver.requests == []
    assert (await control.post("/webhooks/flush")).json()["flushed"] == 1
    await receiver.wait_for("message.received")


# ---------------------------------------------------------------------------------------------- faults


async def test_fault_injection_answers_errors_for_the_next_calls(
    client: telnyx.AsyncTelnyx, control: httpx.AsyncClient, sandbox_server: RunningServer
) -> None:
    fault = {"method": "POST", "path": "/v2/number_orders", "status": 503, "count": 2}
    assert (await control.post("/faults", json=fault)).status_code == 200
    order = {"phone_numbers": [{"phone_number": "+13125550111"}]}
    with pytest.raises(telnyx.InternalServerError) as failed:
        await client.number_orders.create(**order)  # type: ignore[arg-type]
    assert failed.value.status_code == 503
    assert failed.value.body["errors"][0]["code"] == "10007"  # type: ignore[index]
    # The SDK's own retry absorbs the second one.
    async with make_client(sandbox_server, max_retries=1) as patient:
        created = (await patient.number_orders.create(**order)).data  # type: ignore[arg-type]
    assert created is not None and created.status == "pending"
    assert (await control.get("/faults")).json()["faults"] == []

    custom = {"path": "/v2/phone_numbers*", "status": 422, "code": "10001", "title": "Inactive phone number"}
    await control.post("/faults", json=custom)
    with pytest.raises(telnyx.UnprocessableEntityError) as inactive:
        await client.phone_numbers.list()
    assert inactive.value.body["errors"][0]["title"] == "Inactive phone number"  # type: ignore[index]
    await client.phone_numbers.list()


async def test_a_timed_out_send_takes_effect_and_its_idempotency_key_replays_it(
    client: telnyx.AsyncTelnyx, control: httpx.AsyncClient, sandbox_server: RunningServer
) -> None:
    dex = await profile(client)
    number = await buy(client, profile_id=dex.id)
    await control.post("/faults", json={"method": "POST", "path": "/v2/messages", "delay_seconds": 0.3})
    send = {
        "from_": number.phone_number,
        "to": OFF_NET,
        "text": "exactly once",
        "idempotency_key": "dex-msg-1",
    }
    async with make_client(sandbox_server, timeout=0.1) as hasty:
        with pytest.raises(telnyx.APITimeoutError):
            await hasty.messages.send(**send)
    with pytest.raises(telnyx.ConflictError) as busy:
        await client.messages.send(**send)  # the first is still being processed
    assert busy.value.body["errors"][0]["code"] == "10036"  # type: ignore[index]
    for _ in range(40):  # the timed-out call goes through all the same
        await asyncio.sleep(0.05)
        sent_meanwhile = (await control.get("/state")).json()["off_network_messages"]
        if sent_meanwhile:
            break
    assert len(sent_meanwhile) == 1

    first = (await client.messages.send(**send)).data
    again = (await client.messages.send(**send)).data
    assert first is not None and again is not None and first.id == again.id == sent_meanwhile[0]["id"]
    assert (await control.get("/state")).json()["messages"] == 1
    with pytest.raises(telnyx.UnprocessableEntityError):
        await client.messages.send(**{**send, "text": "something else"})
    other = (await client.messages.send(**{**send, "idempotency_key": "dex-msg-2"})).data
    assert other is not None and other.id != first.id
