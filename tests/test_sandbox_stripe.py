"""The Stripe simulator, driven by the official SDK (async methods) over real HTTP against the sandbox app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import stripe
from litestar import Litestar, Request, Response, post

from conftest import RunningServer
from poindexter_cloud.sandbox.app import create_sandbox_app

# stripe-python's async HTTPX client passes bytes as `data=`, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

KEY = "sk_test_sandbox"
MONTH = 31 * 86400


class Receiver:
    """A webhook endpoint that records what it gets and answers ``statuses`` in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.statuses: list[int] = []

    def types(self) -> list[str]:
        return [json.loads(body)["type"] for body, _ in self.requests]

    async def wait_for(self, *types: str, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not set(types) <= set(self.types()):
            if time.monotonic() > deadline:
                raise AssertionError(f"webhooks {types} not all received; got {self.types()}")
            await asyncio.sleep(0.02)

    def app(self) -> Litestar:
        @post("/hook", status_code=200)
        async def hook(request: Request[Any, Any, Any]) -> Response[str]:
            body = (await request.body()).decode()
            self.requests.append((body, dict(request.headers)))
            status = self.statuses.pop(0) if self.statuses else 200
            return Response("ok", status_code=status)

        return Litestar(route_handlers=[hook], logging_config=None)


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[RunningServer]:
    async with RunningServer(create_sandbox_app()) as server:
        yield server


@pytest.fixture(scope="module")
async def receiver_server() -> AsyncIterator[tuple[Receiver, RunningServer]]:
    receiver = Receiver()
    async with RunningServer(receiver.app()) as server:
        yield receiver, server


@pytest.fixture
async def http(sandbox: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as client:
        response = await client.post("/stripe/_control/reset")
        assert response.status_code == 200
        yield client


@pytest.fixture
def client(sandbox: RunningServer, http: httpx.AsyncClient) -> stripe.StripeClient:
    base = f"{sandbox.url}/stripe"
    return stripe.StripeClient(
        api_key=KEY,
        base_addresses={"api": base, "meter_events": base, "files": base, "connect": base},
        max_network_retries=0,
    )


@pytest.fixture
def receiver(receiver_server: tuple[Receiver, RunningServer]) -> Receiver:
    receiver_server[0].requests.clear()
    receiver_server[0].statuses.clear()
    return receiver_server[0]


@pytest.fixture
def hook_url(receiver_server: tuple[Receiver, RunningServer]) -> str:
    return f"{receiver_server[1].url}/hook"


async def catalog(client: stripe.StripeClient) -> dict[str, Any]:
    """A product with a $20/month licensed price (lookup key) and a metered price at 0.5 cents per token."""
    product = await client.v1.products.create_async(params={"name": "Dex Pro", "id": "prod_dex_pro"})
    price = await client.v1.prices.create_async(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
        }
    )
    meter = await client.v1.billing.meters.create_async(
        params={
            "display_name": "AI tokens",
            "event_name": "ai_tokens",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    metered = await client.v1.prices.create_async(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "lookup_key": "tokens_monthly",
        }
    )
    return {"product": product, "price": price, "meter": meter, "metered": metered}


async def subscribe(
    client: stripe.StripeClient, http: httpx.AsyncClient, customer: str, prices: list[Any], card: str
) -> tuple[Any, httpx.Response]:
    items: list[dict[str, Any]] = [
        {"price": p.id} if p.recurring.usage_type == "metered" else {"price": p.id, "quantity": 1}
        for p in prices
    ]
    session = await client.v1.checkout.sessions.create_async(
        params={
            "mode": "subscription",
            "customer": customer,
            "line_items": items,
            "success_url": "https://dex.example/billing/done?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://dex.example/billing",
            "client_reference_id": "user-42",
            "subscription_data": {"metadata": {"user_id": "42"}},
        }
    )
    page = await http.post(session.url, data={"card_number": card})
    return session, page


async def ready(client: stripe.StripeClient, clock_id: str) -> Any:
    for _ in range(200):
        clock = await client.v1.test_helpers.test_clocks.retrieve_async(clock_id)
        if clock.status == "ready":
            return clock
        await asyncio.sleep(0.02)
    raise AssertionError("test clock never became ready")


# ---------------------------------------------------------------------------------------------- catalog


async def test_products_prices_and_lookup_keys(client: stripe.StripeClient, sandbox: RunningServer) -> None:
    made = await catalog(client)
    price = made["price"]
    assert price.object == "price" and price.id.startswith("price_")
    assert (price.unit_amount, price.unit_amount_decimal, price.type) == (2000, Decimal(2000), "recurring")
    assert made["metered"].unit_amount is None and made["metered"].unit_amount_decimal == Decimal("0.5")

    found = await client.v1.prices.list_async(
        params={"lookup_keys": ["pro_monthly"], "active": True, "expand": ["data.product"]}
    )
    assert found.object == "list" and found.url == "/v1/prices" and not found.has_more
    assert [p.id for p in found.data] == [price.id]
    assert found.data[0].product.name == "Dex Pro"

    with pytest.raises(stripe.InvalidRequestError) as taken:
        await client.v1.prices.create_async(
            params={
                "product": "prod_dex_pro",
                "currency": "usd",
                "unit_amount": 3000,
                "lookup_key": "pro_monthly",
            }
        )
    assert taken.value.http_status == 400 and taken.value.param == "lookup_key"
    moved = await client.v1.prices.create_async(
        params={
            "product": "prod_dex_pro",
            "currency": "usd",
            "unit_amount": 2500,
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
            "transfer_lookup_key": True,
            "nickname": "Pro 2026",
        }
    )
    assert (await client.v1.prices.retrieve_async(price.id)).lookup_key is None
    found = await client.v1.prices.list_async(params={"lookup_keys": ["pro_monthly"]})
    assert [p.id for p in found.data] == [moved.id]

    updated = await client.v1.prices.update_async(
        price.id, params={"active": False, "metadata": {"tier": "old"}}
    )
    assert updated.active is False and updated.metadata.to_dict() == {"tier": "old"}
    assert [p.id for p in (await client.v1.prices.list_async(params={"active": False})).data] == [price.id]

    customer = await client.v1.customers.create_async(params={"email": "ada@example.com", "name": "Ada"})
    assert customer.id.startswith("cus_") and customer.email == "ada@example.com"
    customer = await client.v1.customers.update_async(customer.id, params={"metadata": {"user_id": "7"}})
    assert customer.metadata["user_id"] == "7"

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await client.v1.customers.create_async(params={"emial": "typo@example.com"})  # type: ignore[typeddict-unknown-key]
    assert unknown.value.code == "parameter_unknown" and unknown.value.param == "emial"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.customers.retrieve_async("cus_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    assert missing.value.json_body is not None
    assert missing.value.json_body["error"]["message"] == "No such customer: 'cus_nope'"
    bad = stripe.StripeClient(api_key="sk_live_nope", base_addresses={"api": f"{sandbox.url}/stripe"})
    with pytest.raises(stripe.AuthenticationError):
        await bad.v1.customers.list_async()


async def test_idempotency_keys_replay_and_conflict(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    first = await client.v1.customers.create_async(
        params={"email": "once@example.com"}, options={"idempotency_key": "key-1"}
    )
    again = await client.v1.customers.create_async(
        params={"email": "once@example.com"}, options={"idempotency_key": "key-1"}
    )
    assert again.id == first.id
    assert len((await client.v1.customers.list_async()).data) == 1
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.customers.create_async(
            params={"email": "other@example.com"}, options={"idempotency_key": "key-1"}
        )
    raw = await http.post(
        "/stripe/v1/customers",
        content="email=once%40example.com",
        headers={
            "Authorization": f"Bearer {KEY}",
            "Idempotency-Key": "key-1",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert raw.headers["idempotent-replayed"] == "true" and raw.json()["id"] == first.id
    event = (await client.v1.events.list_async(params={"type": "customer.created"})).data[0]
    assert event.request.idempotency_key == "key-1" and event.request.id.startswith("req_")


# ---------------------------------------------------------------------------------------------- meters


async def test_meter_events_summaries_and_duplicates(
    client: stripe.StripeClient, sandbox: RunningServer
) -> None:
    made = await catalog(client)
    meter = made["meter"]
    assert meter.object == "billing.meter" and meter.status == "active"
    customer = await client.v1.customers.create_async(params={"email": "meter@example.com"})
    now = int(time.time())
    start = now - now % 60 - 600
    for value, identifier in (("10", "req-1"), ("15.5", "req-2")):
        event = await client.v1.billing.meter_events.create_async(
            params={
                "event_name": "ai_tokens",
                "payload": {"stripe_customer_id": customer.id, "value": value},
                "identifier": identifier,
                "timestamp": now - 60,
            }
        )
        assert event.object == "billing.meter_event" and event.identifier == identifier

    # Stripe refuses a reused identifier (within 24 h) with a 400, not silently.
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        await client.v1.billing.meter_events.create_async(
            params={
                "event_name": "ai_tokens",
                "payload": {"stripe_customer_id": customer.id, "value": "99"},
                "identifier": "req-1",
            }
        )
    assert duplicate.value.http_status == 400
    assert duplicate.value.user_message == "An event already exists with identifier req-1."
    with pytest.raises(stripe.InvalidRequestError) as stale:
        await client.v1.billing.meter_events.create_async(
            params={
                "event_name": "ai_tokens",
                "payload": {"stripe_customer_id": customer.id, "value": "1"},
                "timestamp": now - 36 * 86400,
            }
        )
    assert stale.value.param == "timestamp"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.billing.meter_events.create_async(
            params={
                "event_name": "no_such_meter",
                "payload": {"stripe_customer_id": customer.id, "value": "1"},
            }
        )

    # v2: one event directly, one through a meter event session's stream.
    v2 = await client.v2.billing.meter_events.create_async(
        params={"event_name": "ai_tokens", "payload": {"stripe_customer_id": customer.id, "value": "4"}}
    )
    assert v2.object == "v2.billing.meter_event"
    session = await client.v2.billing.meter_event_session.create_async()
    base = f"{sandbox.url}/stripe"
    streamer = stripe.StripeClient(
        api_key=session.authentication_token, base_addresses={"api": base, "meter_events": base}
    )
    await streamer.v2.billing.meter_event_stream.create_async(
        params={
            "events": [
                {"event_name": "ai_tokens", "payload": {"stripe_customer_id": customer.id, "value": "0.5"}}
            ]
        }
    )

    summaries = await client.v1.billing.meters.event_summaries.list_async(
        meter.id, params={"customer": customer.id, "start_time": start, "end_time": start + 3600}
    )
    assert summaries.url == f"/v1/billing/meters/{meter.id}/event_summaries"
    [summary] = summaries.data
    assert summary.object == "billing.meter_event_summary"
    assert summary.aggregated_value == 30 and summary.start_time == start

    with pytest.raises(stripe.InvalidRequestError):  # event_name is unique among active meters
        await client.v1.billing.meters.create_async(
            params={
                "display_name": "again",
                "event_name": "ai_tokens",
                "default_aggregation": {"formula": "sum"},
            }
        )
    deactivated = await client.v1.billing.meters.deactivate_async(meter.id)
    assert deactivated.status == "inactive" and deactivated.status_transitions.deactivated_at


# ---------------------------------------------------------------------------------------------- checkout


async def test_checkout_pays_subscribes_and_signs_webhooks(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver, hook_url: str
) -> None:
    endpoint = await client.v1.webhook_endpoints.create_async(
        params={
            "url": hook_url,
            "enabled_events": ["checkout.session.completed", "customer.subscription.created"],
        }
    )
    assert endpoint.secret.startswith("whsec_")
    assert "secret" not in (await client.v1.webhook_endpoints.retrieve_async(endpoint.id))
    made = await catalog(client)
    customer = await client.v1.customers.create_async(params={"email": "buyer@example.com"})
    session = await client.v1.checkout.sessions.create_async(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": made["price"].id, "quantity": 1}, {"price": made["metered"].id}],
            "success_url": "https://dex.example/done?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://dex.example/billing",
        }
    )
    assert session.id.startswith("cs_test_") and session.status == "open" and session.amount_total == 2000
    assert session.url == f"{str(http.base_url).rstrip('/')}/stripe/checkout/{session.id}"

    page = await http.get(session.url)
    assert page.status_code == 200
    assert "Dex Pro" in page.text and "$20.00" in page.text and "name=card_number" in page.text
    assert 'href="https://dex.example/billing"' in page.text
    paid = await http.post(session.url, data={"card_number": "4242 4242 4242 4242"})
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://dex.example/done?session={session.id}"

    done = await client.v1.checkout.sessions.retrieve_async(
        session.id, params={"expand": ["subscription.latest_invoice"]}
    )
    assert (done.status, done.payment_status, done.customer) == ("complete", "paid", customer.id)
    sub = done.subscription
    assert sub.status == "active" and sub.customer == customer.id
    item = sub["items"].data[0]
    assert item.current_period_end - item.current_period_start in range(28 * 86400, 31 * 86400 + 1)
    assert "current_period_end" not in sub  # basil and later: the period lives on the items
    invoice = sub.latest_invoice
    assert (invoice.status, invoice.amount_paid, invoice.billing_reason) == (
        "paid",
        2000,
        "subscription_create",
    )
    assert invoice.parent.subscription_details.subscription == sub.id
    invoices = await client.v1.invoices.list_async(params={"customer": customer.id, "status": "paid"})
    assert [i.id for i in invoices.data] == [invoice.id]

    await receiver.wait_for("checkout.session.completed", "customer.subscription.created")
    for body, headers in receiver.requests:
        event = stripe.Webhook.construct_event(body, headers["stripe-signature"], endpoint.secret)
        assert event.id.startswith("evt_") and event.livemode is False
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            receiver.requests[0][0], receiver.requests[0][1]["stripe-signature"], "whsec_x"
        )
    completed = next(
        json.loads(b) for b, _ in receiver.requests if json.loads(b)["type"].startswith("checkout")
    )
    assert completed["data"]["object"]["subscription"] == sub.id
    deliveries = (await http.get("/stripe/_control/deliveries")).json()["deliveries"]
    assert {d["status"] for d in deliveries} == {200} and all(d["url"] == hook_url for d in deliveries)


async def test_checkout_declined_card_creates_nothing(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    made = await catalog(client)
    customer = await client.v1.customers.create_async(params={"email": "declined@example.com"})
    session, page = await subscribe(client, http, customer.id, [made["price"]], "4000000000000341")
    assert page.status_code == 402 and "Your card was declined." in page.text
    assert (await client.v1.checkout.sessions.retrieve_async(session.id)).status == "open"
    assert (
        await client.v1.subscriptions.list_async(params={"customer": customer.id, "status": "all"})
    ).data == []
    assert (await client.v1.invoices.list_async(params={"customer": customer.id})).data == []


# ---------------------------------------------------------------------------------------------- time


async def test_test_clock_bills_usage_at_period_end(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    made = await catalog(client)
    start = int(time.time())
    clock = await client.v1.test_helpers.test_clocks.create_async(params={"frozen_time": start})
    customer = await client.v1.customers.create_async(
        params={"email": "clock@example.com", "test_clock": clock.id}
    )
    _, page = await subscribe(client, http, customer.id, [made["price"], made["metered"]], "4242424242424242")
    assert page.status_code == 303
    [sub] = (await client.v1.subscriptions.list_async(params={"customer": customer.id})).data
    period_end = sub["items"].data[0].current_period_end
    assert sub["items"].data[0].current_period_start == start and sub.test_clock == clock.id
    for index, value in enumerate(("600", "400.5", "0.5")):
        await client.v1.billing.meter_events.create_async(
            params={
                "event_name": "ai_tokens",
                "payload": {"stripe_customer_id": customer.id, "value": value},
                "timestamp": start + 10 + index,
            }
        )

    advancing = await client.v1.test_helpers.test_clocks.advance_async(
        clock.id, params={"frozen_time": period_end + 3600}
    )
    assert advancing.status == "advancing"
    await ready(client, clock.id)

    invoices = (await client.v1.invoices.list_async(params={"subscription": sub.id})).data
    assert [i.billing_reason for i in invoices] == ["subscription_cycle", "subscription_create"]
    cycle = invoices[0]
    assert (cycle.status, cycle.period_start, cycle.period_end) == ("paid", start, period_end)
    lines = {line.pricing.price_details.price: line for line in cycle.lines.data}
    usage = lines[made["metered"].id]
    assert usage.quantity == 1001 and usage.amount == 501  # 1001 x 0.5 cents = 500.5, rounded half up
    assert (usage.period.start, usage.period.end) == (start, period_end)
    assert lines[made["price"].id].amount == 2000 and lines[made["price"].id].period.start == period_end
    assert cycle.total == 2501 and cycle.amount_paid == 2501
    renewed = await client.v1.subscriptions.retrieve_async(sub.id)
    assert renewed.status == "active" and renewed["items"].data[0].current_period_start == period_end
    assert renewed.latest_invoice == cycle.id


async def test_failing_card_makes_the_subscription_past_due(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver, hook_url: str
) -> None:
    await client.v1.webhook_endpoints.create_async(params={"url": hook_url, "enabled_events": ["*"]})
    made = await catalog(client)
    start = int(time.time())
    clock = await client.v1.test_helpers.test_clocks.create_async(params={"frozen_time": start})
    customer = await client.v1.customers.create_async(
        params={"email": "late@example.com", "test_clock": clock.id}
    )
    await subscribe(client, http, customer.id, [made["price"]], "4242424242424242")
    portal = await client.v1.billing_portal.sessions.create_async(
        params={"customer": customer.id, "return_url": "https://dex.example/account"}
    )
    changed = await http.post(portal.url, data={"action": "update_card", "card_number": "4000000000000341"})
    assert changed.status_code == 303 and changed.headers["location"] == "https://dex.example/account"

    [sub] = (await client.v1.subscriptions.list_async(params={"customer": customer.id})).data
    period_end = sub["items"].data[0].current_period_end
    await client.v1.test_helpers.test_clocks.advance_async(clock.id, params={"frozen_time": period_end + 60})
    await ready(client, clock.id)

    [failed] = (await client.v1.invoices.list_async(params={"customer": customer.id, "status": "open"})).data
    assert failed.attempt_count == 1 and failed.attempted
    assert failed.next_payment_attempt == period_end + 3 * 86400
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "past_due"
    await receiver.wait_for("invoice.payment_failed", "customer.subscription.updated")

    # A good card in the portal pays the open invoice at once.
    await http.post(portal.url, data={"action": "update_card", "card_number": "4242424242424242"})
    assert (await client.v1.invoices.retrieve_async(failed.id)).status == "paid"
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "active"


async def test_portal_switches_and_cancels(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver, hook_url: str
) -> None:
    await client.v1.webhook_endpoints.create_async(
        params={
            "url": hook_url,
            "enabled_events": ["customer.subscription.updated", "customer.subscription.deleted"],
        }
    )
    made = await catalog(client)
    team = await client.v1.prices.create_async(
        params={
            "product_data": {"name": "Dex Team"},
            "currency": "usd",
            "unit_amount": 5000,
            "recurring": {"interval": "month"},
            "lookup_key": "team_monthly",
        }
    )
    customer = await client.v1.customers.create_async(params={"email": "portal@example.com"})
    await subscribe(client, http, customer.id, [made["price"], made["metered"]], "4242424242424242")
    [sub] = (await client.v1.subscriptions.list_async(params={"customer": customer.id})).data
    portal = await client.v1.billing_portal.sessions.create_async(
        params={"customer": customer.id, "return_url": "https://dex.example/account"}
    )
    assert portal.object == "billing_portal.session" and portal.url.endswith(f"/stripe/portal/{portal.id}")
    page = await http.get(portal.url)
    assert "Dex Pro" in page.text and "Switch to Dex Team" in page.text and "Cancel now" in page.text

    switched = await http.post(
        portal.url, data={"action": "switch", "subscription": sub.id, "price": team.id}
    )
    assert switched.status_code == 303
    prices = {i.price.id for i in (await client.v1.subscriptions.retrieve_async(sub.id))["items"].data}
    assert prices == {team.id, made["metered"].id}

    await http.post(portal.url, data={"action": "cancel_at_period_end", "subscription": sub.id})
    pending = await client.v1.subscriptions.retrieve_async(sub.id)
    assert pending.cancel_at_period_end and pending.cancel_at == pending["items"].data[0].current_period_end
    gone = await http.post(portal.url, data={"action": "cancel_now", "subscription": sub.id})
    assert gone.status_code == 303 and gone.headers["location"] == "https://dex.example/account"
    canceled = await client.v1.subscriptions.retrieve_async(sub.id)
    assert canceled.status == "canceled" and canceled.ended_at
    assert (await client.v1.subscriptions.list_async(params={"customer": customer.id})).data == []
    await receiver.wait_for("customer.subscription.deleted")
    deleted = [json.loads(b) for b, _ in receiver.requests if json.loads(b)["type"].endswith("deleted")]
    assert deleted[0]["data"]["object"]["id"] == sub.id


async def test_subscription_update_and_cancel_through_the_api(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    made = await catalog(client)
    customer = await client.v1.customers.create_async(params={"email": "api@example.com"})
    await subscribe(client, http, customer.id, [made["price"]], "4242424242424242")
    [sub] = (await client.v1.subscriptions.list_async(params={"customer": customer.id})).data
    item = sub["items"].data[0]
    # Without a test clock, the advance control moves one customer through time.
    moved = await http.post("/stripe/_control/advance", json={"customer": customer.id, "seconds": MONTH})
    assert moved.status_code == 200
    invoices = (await client.v1.invoices.list_async(params={"customer": customer.id})).data
    assert [(i.billing_reason, i.status) for i in invoices] == [
        ("subscription_cycle", "paid"),
        ("subscription_create", "paid"),
    ]
    sub = await client.v1.subscriptions.retrieve_async(sub.id)
    assert sub["items"].data[0].current_period_start == item.current_period_end
    updated = await client.v1.subscriptions.update_async(
        sub.id,
        params={"cancel_at_period_end": True, "proration_behavior": "none", "metadata": {"plan": "pro"}},
    )
    assert updated.cancel_at_period_end and updated.metadata["plan"] == "pro"
    assert updated["items"].data[0].id == item.id
    events = await client.v1.events.list_async(params={"type": "customer.subscription.updated"})
    assert events.data[0].data.previous_attributes["cancel_at_period_end"] is False
    canceled = await client.v1.subscriptions.cancel_async(sub.id)
    assert canceled.status == "canceled"
    everything = await client.v1.subscriptions.list_async(params={"customer": customer.id, "status": "all"})
    assert [s.id for s in everything.data] == [sub.id]


# ------------------------------------------------------------------------------------------- webhook controls


async def test_webhook_retries_and_delivery_modes(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver, hook_url: str
) -> None:
    await client.v1.webhook_endpoints.create_async(
        params={"url": hook_url, "enabled_events": ["customer.created"]}
    )
    await http.post("/stripe/_control/webhooks", json={"mode": "normal", "retry_base_seconds": 0.05})
    receiver.statuses = [500]
    first = await client.v1.customers.create_async(params={"email": "retry@example.com"})
    await receiver.wait_for("customer.created")
    for _ in range(100):
        deliveries = (await http.get("/stripe/_control/deliveries")).json()["deliveries"]
        if [d["status"] for d in deliveries] == [500, 200]:
            break
        await asyncio.sleep(0.02)
    assert [(d["attempt"], d["status"]) for d in deliveries] == [(1, 500), (2, 200)]
    assert (await client.v1.events.list_async(params={"type": "customer.created"})).data[
        0
    ].pending_webhooks == 0

    receiver.requests.clear()
    await http.post("/stripe/_control/webhooks", json={"mode": "reverse"})
    second = await client.v1.customers.create_async(params={"email": "two@example.com"})
    third = await client.v1.customers.create_async(params={"email": "three@example.com"})
    await asyncio.sleep(0.1)
    assert receiver.requests == []
    assert (await http.post("/stripe/_control/webhooks/flush")).json()["flushed"] == 2
    for _ in range(100):
        if len(receiver.requests) == 2:
            break
        await asyncio.sleep(0.02)
    order = [json.loads(b)["data"]["object"]["id"] for b, _ in receiver.requests]
    assert order == [third.id, second.id]

    receiver.requests.clear()
    await http.post("/stripe/_control/webhooks", json={"mode": "duplicate"})
    await client.v1.customers.create_async(params={"email": "twice@example.com"})
    for _ in range(100):
        if len(receiver.requests) == 2:
            break
        await asyncio.sleep(0.02)
    assert len({json.loads(b)["id"] for b, _ in receiver.requests}) == 1 and len(receiver.requests) == 2
    state = (await http.get("/stripe/_control/state")).json()
    assert state["customers"] == 4 and first.id


async def test_webhook_endpoint_from_the_environment(
    client: stripe.StripeClient,
    http: httpx.AsyncClient,
    receiver: Receiver,
    hook_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SANDBOX_STRIPE_WEBHOOK_URL", hook_url)
    monkeypatch.setenv("SANDBOX_STRIPE_WEBHOOK_SECRET", "whsec_from_environment")
    customer = await client.v1.customers.create_async(params={"email": "env@example.com"})
    await receiver.wait_for("customer.created")
    body, headers = receiver.requests[0]
    event = stripe.Webhook.construct_event(body, headers["stripe-signature"], "whsec_from_environment")
    assert event.data.object.id == customer.id
    assert (await client.v1.webhook_endpoints.list_async()).data == []  # like `stripe listen`, not listed
    status = (await http.get("/stripe/_control/webhooks")).json()
    assert status["environment_endpoint"] == {"url": hook_url, "secret": "whsec_from_environment"}
