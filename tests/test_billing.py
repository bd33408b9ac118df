"""Billing through Stripe, end to end with the official SDK against the sandbox's Stripe simulator: the
catalog sync, Checkout, signed webhooks into the web role, the worker mirroring Stripe's current state, and
the proxy obeying it within one webhook."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import func, select

from conftest import QUEUE_NAME, Billing, RunningServer, eventually
from poindexter_cloud.accounts.models import User
from poindexter_cloud.billing import catalog
from poindexter_cloud.billing.jobs import process_stripe_event
from poindexter_cloud.billing.models import Subscription
from poindexter_cloud.billing.plans import PLANS, Plan
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.core.embedded import free_port
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.models import JobHistory
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role, Settings
from poindexter_cloud.webhooks import inbox
from poindexter_cloud.webhooks.models import WebhookEvent
from poindexter_cloud.webhooks.service import ProviderEvent
from test_accounts import bearer, register

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

GOOD_CARD = "4242424242424242"
FAILING_CARD = "4000000000000341"  # attaches, every charge is declined
MONTH_AND_A_BIT = 32 * 86400


# --- helpers ----------------------------------------------------------------------------------------------


async def subscriber_without_plan(b: Billing) -> dict[str, Any]:
    tokens = await register(b.web)
    key = (await b.web.post("/v1/api-keys/", json={"name": "dex"}, headers=bearer(tokens))).json()
    return {**tokens, "key": key["key"]}


async def ask_claude(b: Billing, user: dict[str, Any]) -> httpx.Response:
    return await b.proxy.post(
        "/v1/messages",
        headers={"x-api-key": user["key"], "anthropic-version": "2023-06-01"},
        json={
            "model": "claude-sonnet-4-5",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )


async def proxy_answers(b: Billing, user: dict[str, Any], status: int, within: float = 5.0) -> None:
    async def check() -> bool:
        return (await ask_claude(b, user)).status_code == status

    await eventually(check, within=within)


async def start_checkout(b: Billing, user: dict[str, Any], plan: str = "basic") -> dict[str, Any]:
    response = await b.web.post("/v1/billing/subscribe", json={"plan": plan}, headers=bearer(user))
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    assert started["session_id"].startswith("cs_")
    return started


async def pay(b: Billing, url: str, card: str) -> httpx.Response:
    page = await b.sandbox.get(url)
    assert page.status_code == 200 and "card_number" in page.text
    return await b.sandbox.post(url, data={"card_number": card})


async def row_of(b: Billing, user: dict[str, Any]) -> Subscription | None:
    async with b.resources.db.sessions() as session:
        return (
            await session.execute(
                select(Subscription).where(Subscription.user_id == uuid.UUID(user["user_id"]))
            )
        ).scalar_one_or_none()


async def state_of(b: Billing, user: dict[str, Any]) -> dict[str, Any]:
    response = await b.web.get("/v1/billing/subscription", headers=bearer(user))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def status_becomes(
    b: Billing, user: dict[str, Any], status: str, within: float = 15.0
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        state = await state_of(b, user)
        return state if state["status"] == status else None

    found: dict[str, Any] = await eventually(check, within=within)
    return found


async def quiet(b: Billing, within: float = 15.0) -> None:
    """Every delivery made, and every stored Stripe event processed."""

    async def settled() -> bool:
        deliveries = (await b.sandbox.get("/stripe/_control/deliveries")).json()
        if not deliveries["idle"] or deliveries["held"]:
            return False
        async with b.resources.db.sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(WebhookEvent).where(WebhookEvent.processed_at.is_(None))
            )
        return pending == 0

    await eventually(settled, within=within)


async def subscribed(b: Billing, plan: str = "basic") -> dict[str, Any]:
    """A user with a key whose Checkout was paid and whose subscription is active for us."""
    user = await subscriber_without_plan(b)
    started = await start_checkout(b, user, plan)
    paid = await pay(b, started["url"], GOOD_CARD)
    assert paid.status_code == 303
    await status_becomes(b, user, "active")
    row = await row_of(b, user)
    assert row is not None
    user["subscription"] = row.stripe_subscription_id
    user["customer"] = await customer_of(b, user)
    return user


async def customer_of(b: Billing, user: dict[str, Any]) -> str | None:
    async with b.resources.db.sessions() as session:
        found = await session.get(User, uuid.UUID(user["user_id"]))
    assert found is not None
    return found.stripe_customer_id


async def portal(b: Billing, user: dict[str, Any], **fields: str) -> None:
    response = await b.web.post("/v1/billing/portal", headers=bearer(user))
    assert response.status_code == 200, response.text
    acted = await b.sandbox.post(response.json()["url"], data=fields)
    assert acted.status_code == 303, acted.text


async def advance(b: Billing, user: dict[str, Any], seconds: int = MONTH_AND_A_BIT) -> None:
    response = await b.sandbox.post(
        "/stripe/_control/advance", json={"customer": user["customer"], "seconds": seconds}
    )
    assert response.status_code == 200, response.text


async def webhook_mode(b: Billing, mode: str) -> None:
    response = await b.sandbox.post("/stripe/_control/webhooks", json={"mode": mode})
    assert response.status_code == 200, response.text


async def flush(b: Billing) -> int:
    flushed: int = (await b.sandbox.post("/stripe/_control/webhooks/flush")).json()["flushed"]
    return flushed


async def stored_events(b: Billing, subscription_id: str | None = None) -> list[WebhookEvent]:
    async with b.resources.db.sessions() as session:
        rows = (
            (await session.execute(select(WebhookEvent).order_by(WebhookEvent.received_at))).scalars().all()
        )
    if subscription_id is None:
        return list(rows)
    return [row for row in rows if subscription_id in json.dumps(row.payload)]


async def processing_jobs(b: Billing, event_id: str) -> int:
    async with b.resources.db.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(JobHistory)
            .where(
                JobHistory.job_type == "process_stripe_event",
                JobHistory.payload["event_id"].astext == event_id,
            )
        )
    return int(count or 0)


def bare_event(event_id: str, event_type: str) -> bytes:
    """A Stripe event's body with nothing in its object."""
    return json.dumps(
        {"id": event_id, "object": "event", "type": event_type, "data": {"object": {}}}
    ).encode()


def signed(payload: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Stripe sends: ``t=<unix time>,v1=<HMAC-SHA256 of "t.body">``."""
    at = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={at},v1={mac}", "Content-Type": "application/json"}


async def admin_stripe_sync(settings: Settings, sandbox_url: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poindexter_cloud",
        "admin",
        "stripe",
        "sync",
        env={
            **os.environ,
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url.replace("+psycopg", ""),
            "REDIS_URL": settings.redis_url,
            "QUEUE_NAME": QUEUE_NAME,
            "SANDBOX_URL": sandbox_url,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert process.returncode == 0, err.decode()
    return process.returncode, out.decode()


def actions(output: str) -> dict[str, str]:
    """KEY -> ACTION from the sync's table."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        cells = line.split()
        if len(cells) >= 4 and cells[0] in {"product", "meter", "price"}:
            found[cells[1]] = cells[3]
    return found


# --- the catalog ------------------------------------------------------------------------------------------


async def test_admin_stripe_sync_is_idempotent(
    settings: Settings, sandbox_server: RunningServer, stripe: StripeAdapter
) -> None:
    code, first = await admin_stripe_sync(settings, sandbox_server.url)
    assert code == 0, first
    assert len(actions(first)) == 2 + 2 + 6
    code, second = await admin_stripe_sync(settings, sandbox_server.url)
    assert code == 0, second
    assert set(actions(second).values()) == {"unchanged"} and "unchanged" in second.splitlines()[-1]

    prices = await stripe.prices_by_lookup_keys(
        [spec.lookup_key for spec in catalog.desired_catalog().prices]
    )
    basic, pro = prices["poindexter_basic_monthly"], prices["poindexter_pro_monthly"]
    assert (basic.unit_amount, basic.interval, basic.usage_type, basic.currency) == (
        5000,
        "month",
        "licensed",
        "usd",
    )
    assert pro.unit_amount == 25000
    expected = {"basic": ("0.0003", "0.0015"), "pro": ("0.00025", "0.0012")}
    meters = {m.event_name: m for m in await stripe.list_meters()}
    for plan, (input_rate, output_rate) in expected.items():
        for kind, rate in (("input", input_rate), ("output", output_rate)):
            price = prices[f"poindexter_{plan}_{kind}_tokens"]
            meter = meters[f"poindexter_{kind}_tokens"]
            assert price.unit_amount_decimal == Decimal(rate)
            assert (price.usage_type, price.meter) == ("metered", meter.id)
            assert (meter.formula, meter.customer_payload_key, meter.value_payload_key) == (
                "sum",
                "stripe_customer_id",
                "value",
            )
    products = {p.id: p for p in await stripe.list_products()}
    assert (
        products[basic.product].name == "Poindexter Basic" and products[pro.product].name == "Poindexter Pro"
    )


async def test_a_changed_amount_is_a_new_price_holding_the_lookup_key(stripe: StripeAdapter) -> None:
    await catalog.sync_catalog(stripe)
    key = "poindexter_pro_input_tokens"
    before = (await stripe.prices_by_lookup_keys([key]))[key]
    dearer = {
        **PLANS,
        "pro": msgspec.structs.replace(PLANS["pro"], overage_input_nanodollars_per_token=2_600),
    }
    try:
        rows = {r.key: r for r in await catalog.sync_catalog(stripe, catalog.desired_catalog(dearer))}
        assert rows[key].action == "replaced"
        assert {r.action for k, r in rows.items() if k != key} == {"unchanged"}
        after = (await stripe.prices_by_lookup_keys([key]))[key]
        assert after.id != before.id and after.unit_amount_decimal == Decimal("0.00026")
        old = await stripe.sdk.v1.prices.retrieve_async(before.id)
        assert old.active is False and old.lookup_key is None
    finally:
        rows = {r.key: r for r in await catalog.sync_catalog(stripe)}
    assert rows[key].action == "replaced"
    assert {r.action for r in await catalog.sync_catalog(stripe)} == {"unchanged"}


def test_metered_prices_are_cents_per_token() -> None:
    plan: Plan = PLANS["basic"]
    assert catalog.cents_per_token(plan.overage_input_nanodollars_per_token) == Decimal("0.0003")
    assert str(catalog.cents_per_token(PLANS["pro"].overage_input_nanodollars_per_token)) == "0.00025"


# --- subscribing ------------------------------------------------------------------------------------------


async def test_checkout_activates_the_subscription_and_the_proxy_serves_the_key(billing: Billing) -> None:
    b = billing
    user = await subscriber_without_plan(b)
    assert (await state_of(b, user))["status"] == "none"
    assert (await ask_claude(b, user)).status_code == 402
    no_portal = await b.web.post("/v1/billing/portal", headers=bearer(user))
    assert no_portal.status_code == 404 and no_portal.json()["error"]["code"] == "no_billing_account"

    started = await start_checkout(b, user, "pro")
    session = await b.stripe.sdk.v1.checkout.sessions.retrieve_async(started["session_id"])
    assert session.client_reference_id == user["user_id"] and session.metadata["user_id"] == user["user_id"]
    assert session.success_url == f"{b.settings.web_base_url}/console/billing?checkout=success"
    assert session.cancel_url == f"{b.settings.web_base_url}/console/billing?checkout=cancelled"
    lines = await b.stripe.sdk.v1.checkout.sessions.line_items.list_async(started["session_id"])
    assert sorted(line.price.lookup_key for line in lines.data) == sorted(
        catalog.subscription_lookup_keys("pro")
    )

    paid = await pay(b, started["url"], GOOD_CARD)
    assert paid.status_code == 303 and paid.headers["location"].endswith("?checkout=success")
    state = await status_becomes(b, user, "active")
    assert state["plan"] == "pro" and state["reason"] is None and state["cancel_at_period_end"] is False
    assert state["current_period_start"] and state["current_period_end"] > state["current_period_start"]
    row = await row_of(b, user)
    assert row is not None and row.activated_at is not None and row.stripe_subscription_id.startswith("sub_")
    assert row.status == "active" and row.deprovision_after is None
    stripe_sub = await b.stripe.retrieve_subscription(row.stripe_subscription_id)
    assert row.stripe_price_id == next(
        i.price.id for i in stripe_sub.items if i.price.usage_type == "licensed"
    )
    await proxy_answers(b, user, 200)

    again = await b.web.post("/v1/billing/subscribe", json={"plan": "basic"}, headers=bearer(user))
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_subscribed"
    portal_url = (await b.web.post("/v1/billing/portal", headers=bearer(user))).json()["url"]
    assert (await b.sandbox.get(portal_url)).status_code == 200
    await quiet(b)
    activated = await row_of(b, user)
    assert activated is not None and activated.activated_at == row.activated_at  # recorded once


async def test_a_declined_card_at_checkout_grants_nothing(billing: Billing) -> None:
    b = billing
    user = await subscriber_without_plan(b)
    started = await start_checkout(b, user)
    declined = await pay(b, started["url"], FAILING_CARD)
    assert declined.status_code == 402 and "declined" in declined.text
    await quiet(b)
    assert await row_of(b, user) is None
    assert (await state_of(b, user))["status"] == "none"
    assert (await ask_claude(b, user)).status_code == 402


async def test_subscribe_refuses_an_unknown_plan(billing: Billing) -> None:
    user = await subscriber_without_plan(billing)
    response = await billing.web.post("/v1/billing/subscribe", json={"plan": "gold"}, headers=bearer(user))
    assert response.status_code == 400


# --- payment failure, recovery, cancellation --------------------------------------------------------------


async def test_a_failed_renewal_suspends_and_a_paid_invoice_restores(billing: Billing) -> None:
    b = billing
    user = await subscribed(b)
    await proxy_answers(b, user, 200)
    await portal(b, user, action="update_card", card_number=FAILING_CARD)
    await advance(b, user)  # the period ends; the renewal invoice's charge is declined
    state = await status_becomes(b, user, "suspended")
    assert state["reason"] == "payment failed"
    await proxy_answers(b, user, 403, within=2.0)
    body = (await ask_claude(b, user)).json()
    assert body["error"]["type"] == "permission_error" or "suspended" in json.dumps(body)
    row = await row_of(b, user)
    assert row is not None and row.status == "past_due" and row.suspended_reason == "payment failed"

    await portal(b, user, action="update_card", card_number=GOOD_CARD)  # open invoices are retried at once
    state = await status_becomes(b, user, "active")
    assert state["reason"] is None
    await proxy_answers(b, user, 200, within=2.0)
    paid = [e for e in await stored_events(b, user["subscription"]) if e.type == "invoice.paid"]
    assert len(paid) == 2  # the first invoice and the retried renewal


async def test_cancellation_ends_the_plan_and_schedules_deprovisioning(billing: Billing) -> None:
    b = billing
    user = await subscribed(b)
    await portal(b, user, action="cancel_at_period_end", subscription=user["subscription"])

    async def flagged() -> bool:
        return bool((await state_of(b, user))["cancel_at_period_end"])

    await eventually(flagged, within=15)
    assert (await state_of(b, user))["status"] == "active"
    await portal(b, user, action="cancel_now", subscription=user["subscription"])
    state = await status_becomes(b, user, "canceled")
    assert state["plan"] == "basic"
    row = await row_of(b, user)
    assert row is not None and row.canceled_at is not None and row.deprovision_after is not None
    stripe_sub = await b.stripe.retrieve_subscription(user["subscription"])
    assert stripe_sub.ended_at is not None
    assert row.deprovision_after == stripe_sub.ended_at + timedelta(days=b.settings.deprovision_grace_days)
    await proxy_answers(b, user, 402, within=2.0)
    assert (
        await b.web.post("/v1/billing/subscribe", json={"plan": "basic"}, headers=bearer(user))
    ).status_code == 200


async def test_a_plan_change_in_the_portal_takes_effect_from_the_webhook(billing: Billing) -> None:
    b = billing
    user = await subscribed(b, "basic")
    pro = (await b.stripe.prices_by_lookup_keys(["poindexter_pro_monthly"]))["poindexter_pro_monthly"]
    await portal(b, user, action="switch", subscription=user["subscription"], price=pro.id)

    async def on_pro() -> bool:
        return (await state_of(b, user))["plan"] == "pro"

    await eventually(on_pro, within=15)
    await quiet(b)
    # The portal swapped only the monthly price; the worker moved the token prices to Pro's rates too.
    items = (await b.stripe.retrieve_subscription(user["subscription"])).items
    assert sorted(i.price.lookup_key or "" for i in items) == sorted(catalog.subscription_lookup_keys("pro"))
    row = await row_of(b, user)
    assert row is not None and (row.plan, row.stripe_price_id, row.status) == ("pro", pro.id, "active")
    await proxy_answers(b, user, 200, within=2.0)


# --- webhooks: signatures, duplicates, order --------------------------------------------------------------


async def test_a_forged_or_stale_signature_is_refused_and_nothing_is_stored(billing: Billing) -> None:
    b = billing
    event_id = f"evt_forged{uuid.uuid4().hex[:12]}"
    payload = bare_event(event_id, "customer.subscription.deleted")
    secret = b.settings.stripe_webhook_secret or ""
    attempts = [
        signed(payload, "whsec_not_the_secret"),
        signed(payload, secret, int(time.time()) - 3600),  # stale: outside the 5 minute tolerance
        {"Content-Type": "application/json"},
        {**signed(payload, secret), "Stripe-Signature": "t=1,v1=00"},
    ]
    for headers in attempts:
        response = await b.web.post("/webhooks/stripe", content=payload, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_signature"
    tampered = signed(payload, secret)
    response = await b.web.post(
        "/webhooks/stripe", content=payload.replace(b"deleted", b"created"), headers=tampered
    )
    assert response.status_code == 400
    assert all(e.event_id != event_id for e in await stored_events(b))
    assert await processing_jobs(b, event_id) == 0


async def test_an_event_delivered_while_postgresql_is_away_is_held_then_stored_and_processed_once(
    billing: Billing,
) -> None:
    b = billing
    event_id = f"evt_held{uuid.uuid4().hex[:12]}"
    payload = bare_event(event_id, "invoice.upcoming")
    secret = b.settings.stripe_webhook_secret or ""
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    away = dataclasses.replace(b.settings, database_url=unreachable)
    opened = await Resources.open(away)
    try:
        async with (
            RunningServer(create_app(Role.WEB, away, opened)) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as web,
        ):
            for _ in range(2):  # Stripe delivers it again: held twice
                response = await web.post(
                    "/webhooks/stripe", content=payload, headers=signed(payload, secret)
                )
                assert response.status_code == 200, response.text
    finally:
        await opened.close()

    async def processed() -> WebhookEvent | None:
        stored = [e for e in await stored_events(b) if e.event_id == event_id]
        return stored[0] if stored and stored[0].processed_at is not None else None

    await eventually(processed, within=20)  # the session's worker stores what Redis held
    again = await b.web.post("/webhooks/stripe", content=payload, headers=signed(payload, secret))
    assert again.json() == {"received": True, "duplicate": True}
    assert len([e for e in await stored_events(b) if e.event_id == event_id]) == 1
    assert await processing_jobs(b, event_id) == 1


async def test_a_held_event_that_cannot_be_stored_is_set_aside_and_the_next_one_is_stored(
    billing: Billing,
) -> None:
    b = billing
    unstorable, fine = (f"evt_held{uuid.uuid4().hex[:12]}" for _ in range(2))
    for event_id, payload in (
        (unstorable, {"note": "nul \x00 in jsonb"}),
        (fine, json.loads(bare_event(fine, "invoice.upcoming"))),
    ):
        await inbox.hold(
            b.resources.redis, b.settings, ProviderEvent("stripe", event_id, "invoice.upcoming", payload)
        )

    async def stored() -> set[str]:
        return {e.event_id for e in await stored_events(b)} & {unstorable, fine}

    assert await eventually(stored, within=20) == {fine}
    dead = await b.resources.redis.xrange(f"{inbox.inbox_key(b.settings)}:dead")
    assert [json.loads(fields[b"e"])["event_id"] for _, fields in dead] == [unstorable]

    async def inbox_empty() -> bool:  # neither is left to block others (each leaves once it is handled)
        return await b.resources.redis.xlen(inbox.inbox_key(b.settings)) == 0

    await eventually(inbox_empty, within=5)


async def test_a_replayed_event_changes_nothing(billing: Billing) -> None:
    b = billing
    user = await subscribed(b)
    await quiet(b)
    before = await row_of(b, user)
    events = await stored_events(b, user["subscription"])
    assert events and all(e.processed_at is not None for e in events)
    secret = b.settings.stripe_webhook_secret or ""
    for event in events:
        body = json.dumps(event.payload).encode()
        response = await b.web.post("/webhooks/stripe", content=body, headers=signed(body, secret))
        assert response.status_code == 200 and response.json() == {"received": True, "duplicate": True}
        assert await processing_jobs(b, event.event_id) == 1
    # Running the job again for a processed event is a no-op too.
    assert (
        await process_stripe_event({"resources": b.resources}, event_id=events[0].event_id)
        == "already processed"
    )
    await asyncio.sleep(0.5)
    after = await row_of(b, user)
    assert after is not None and before is not None
    assert (after.updated_at, after.status, after.activated_at) == (
        before.updated_at,
        before.status,
        before.activated_at,
    )
    assert len(await stored_events(b, user["subscription"])) == len(events)


async def test_duplicate_deliveries_are_stored_and_processed_once(billing: Billing) -> None:
    b = billing
    user = await subscribed(b)
    await quiet(b)
    known = {e.event_id for e in await stored_events(b)}
    await webhook_mode(b, "duplicate")
    try:
        await portal(b, user, action="cancel_at_period_end", subscription=user["subscription"])
        await quiet(b)
    finally:
        await webhook_mode(b, "normal")
    new = [e for e in await stored_events(b, user["subscription"]) if e.event_id not in known]
    assert [e.type for e in new] == ["customer.subscription.updated"]
    deliveries = (await b.sandbox.get("/stripe/_control/deliveries")).json()["deliveries"]
    assert sum(1 for d in deliveries if d["event"] == new[0].event_id and d["url"] == b.webhook_url) == 2
    assert await processing_jobs(b, new[0].event_id) == 1
    assert (await state_of(b, user))["cancel_at_period_end"] is True


async def test_events_delivered_newest_first_end_in_stripes_state(billing: Billing) -> None:
    b = billing
    user = await subscriber_without_plan(b)
    started = await start_checkout(b, user)
    await webhook_mode(b, "reverse")
    try:
        assert (await pay(b, started["url"], GOOD_CARD)).status_code == 303
        assert await flush(b) >= 3
        await status_becomes(b, user, "active")
        row = await row_of(b, user)
        assert row is not None and row.activated_at is not None
        user["subscription"] = row.stripe_subscription_id
        user["customer"] = await customer_of(b, user)

        # A failed renewal, then a good card: delivered newest first, the oldest event ("past_due") comes
        # last, and acting on it would leave the user suspended; reading Stripe's current state does not.
        await portal(b, user, action="update_card", card_number=FAILING_CARD)
        await advance(b, user)
        await portal(b, user, action="update_card", card_number=GOOD_CARD)
        assert await flush(b) >= 4
        await quiet(b)
    finally:
        await webhook_mode(b, "normal")
        await flush(b)
    updates = [
        e.payload["data"]["object"]["status"]
        for e in await stored_events(b, user["subscription"])
        if e.type == "customer.subscription.updated"
    ]
    assert updates.index("active") < updates.index("past_due")  # the newest arrived first
    state = await state_of(b, user)
    assert (state["status"], state["reason"]) == ("active", None)
    await proxy_answers(b, user, 200, within=2.0)


async def test_every_stripe_event_of_this_module_was_processed_once_without_errors(billing: Billing) -> None:
    await quiet(billing)
    async with billing.resources.db.sessions() as session:
        events = (await session.execute(select(WebhookEvent))).scalars().all()
        jobs = (
            (await session.execute(select(JobHistory).where(JobHistory.job_type == "process_stripe_event")))
            .scalars()
            .all()
        )
    assert events and all(e.processed_at is not None and e.last_error is None for e in events)
    assert all(e.attempts == 1 for e in events)
    assert sorted(j.payload["event_id"] for j in jobs) == sorted(e.event_id for e in events)
    assert {j.status for j in jobs} == {"completed"}
