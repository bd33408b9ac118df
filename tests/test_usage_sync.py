"""Overage to Stripe exactly once: usage events through the real buffer and drain, the ``sync_usage`` job,
Stripe's meters in the simulator (read back through the SDK), the invoice at period end, the subscriber's
and the operators' views, and the reconcile command."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import QUEUE_NAME, Billing, eventually
from poindexter_cloud.billing import usage_sync
from poindexter_cloud.billing.models import MeterEventRecord, UsageEvent, UsageMonthly
from poindexter_cloud.billing.pricing import PRICE_TABLE_VERSION, TokenUsage, upstream_cost_microdollars
from poindexter_cloud.billing.usage_buffer import UsageBuffer, UsageRecord, stream_for
from poindexter_cloud.core.settings import Settings
from test_accounts import bearer
from test_admin import operator
from test_billing import GOOD_CARD, advance, pay, portal, row_of, start_checkout, status_becomes, subscribed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "claude-sonnet-4-5"  # $3/M input, $15/M output upstream: on Basic one unit a token


def usage(input_tokens: int = 0, output_tokens: int = 0, cache_read: int = 0) -> TokenUsage:
    return TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read)


async def record_usage(
    b: Billing, user: dict[str, Any], tokens: TokenUsage, at: datetime | None = None
) -> str:
    """One AI request's usage event, pushed to the Redis buffer the proxy writes to and drained by the
    worker into usage_events; returns its request id once it is stored."""
    request_id = f"req_{uuid.uuid4().hex}"
    moment = at or datetime.now(UTC)
    record = UsageRecord(
        request_id=request_id,
        attempt=0,
        user_id=uuid.UUID(user["user_id"]),
        api_key_id=None,
        event_type="ai_request",
        model=MODEL,
        provider="anthropic",
        usage=tokens,
        cost_microdollars=upstream_cost_microdollars(MODEL, tokens),
        latency_ms=10,
        status=200,
        estimated=False,
        created_at_us=int(moment.timestamp() * 1_000_000),
        price_version=PRICE_TABLE_VERSION,
    )
    await UsageBuffer(b.resources.redis, stream_for(b.settings.queue_name)).push(record)

    async def stored() -> bool:
        async with b.resources.db.sessions() as session:
            found = await session.scalar(
                select(func.count()).select_from(UsageEvent).where(UsageEvent.request_id == request_id)
            )
        return found == 1

    await eventually(stored, within=10)
    return request_id


async def stripe_totals(b: Billing, user: dict[str, Any]) -> dict[str, Decimal]:
    """What Stripe's two meters hold for the customer this month and next (the sandbox's own summaries)."""
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    end = (now + timedelta(days=40)).replace(hour=0, minute=0, second=0, microsecond=0)
    meters = {m.event_name: m.id for m in await b.stripe.list_meters()}
    customer = user["customer"]
    return {
        kind: await b.stripe.meter_event_total(meters[f"poindexter_{kind}_tokens"], customer, start, end)
        for kind in ("input", "output")
    }


async def records_of(b: Billing, user: dict[str, Any]) -> list[MeterEventRecord]:
    async with b.resources.db.sessions() as session:
        return list(
            (
                await session.execute(
                    select(MeterEventRecord)
                    .where(MeterEventRecord.user_id == uuid.UUID(user["user_id"]))
                    .order_by(MeterEventRecord.meter, MeterEventRecord.seq)
                )
            )
            .scalars()
            .all()
        )


async def sync(b: Billing, user: dict[str, Any]) -> usage_sync.SyncStats:
    return await usage_sync.run(b.resources, uuid.UUID(user["user_id"]))


async def usage_of(b: Billing, user: dict[str, Any]) -> dict[str, Any]:
    response = await b.web.get("/v1/billing/usage", headers=bearer(user))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_included_tokens_then_overage_reach_stripe_once_and_the_invoice(billing: Billing) -> None:
    b = billing
    user = await subscribed(b, "basic")  # 5,000,000 tokens included
    early = datetime.now(UTC)
    await record_usage(b, user, usage(4_000_000, 500_000))  # 4.5M: included
    await record_usage(b, user, usage(400_000, 200_000))  # crosses: 400k in + 100k out included, 100k over
    assert (await sync(b, user)).decided == 1  # one output record
    assert await stripe_totals(b, user) == {"input": 0, "output": 100_000}

    last = await record_usage(b, user, usage(1_000, 2_000, cache_read=10_000))  # all overage
    stats = await sync(b, user)
    assert (stats.decided, stats.sent) == (2, 2)
    assert await stripe_totals(b, user) == {"input": 11_000, "output": 102_000}

    again = await sync(b, user)  # nothing new: nothing sent
    assert (again.decided, again.sent) == (0, 0)
    assert await stripe_totals(b, user) == {"input": 11_000, "output": 102_000}
    assert [(r.meter, r.seq, r.units, r.status) for r in await records_of(b, user)] == [
        ("input", 1, 11_000, "sent"),
        ("output", 1, 100_000, "sent"),
        ("output", 2, 2_000, "sent"),
    ]
    # A meter event names the last request it counted: one id follows a request from the proxy to the bill.
    assert {
        r.watermark_request_id for r in await records_of(b, user) if r.seq == 1 and r.meter == "input"
    } == {last}

    # A late event, stored after the sync but created before every other one, takes its place in request
    # order: its 500 tokens are included, so 500 more of the crossing request's output become overage.
    await record_usage(b, user, usage(500, 0), at=early)
    assert (await sync(b, user)).decided == 1
    assert await stripe_totals(b, user) == {"input": 11_000, "output": 102_500}

    shown = await usage_of(b, user)
    assert (shown["plan"], shown["period"]) == ("basic", "billing_period")
    assert (shown["tokens"], shown["included_used"], shown["included_remaining"]) == (5_113_500, 5_000_000, 0)
    assert shown["overage"] == {
        "input_units": 11_000,
        "output_units": 102_500,
        "input_cents": "3.3",  # 11,000 x $3/M
        "output_cents": "153.75",  # 102,500 x $15/M
        "total_cents": "157.05",
        "billed": True,
    }
    [today] = shown["days"]
    assert (today["day"], today["requests"], today["output_tokens"]) == (
        f"{datetime.now(UTC):%Y-%m-%d}",
        4,
        702_000,
    )
    [model] = shown["models"]
    assert (model["model"], model["requests"], model["input_tokens"], model["cache_read_tokens"]) == (
        MODEL,
        4,
        4_401_500,
        10_000,
    )

    # The period ends: Stripe's invoice carries exactly those units at Basic's rates.
    await advance(b, user)

    async def cycle_invoice() -> Any:
        invoices = await b.stripe.sdk.v1.invoices.list_async({"subscription": user["subscription"]})
        return next((i for i in invoices.data if i.billing_reason == "subscription_cycle"), None)

    invoice = await eventually(cycle_invoice, within=10)
    metered = {
        line.pricing.price_details.price: line
        for line in invoice.lines.data
        if line.quantity in (11_000, 102_500)
    }
    assert sorted(line.quantity for line in metered.values()) == [11_000, 102_500]
    assert sorted(line.amount for line in metered.values()) == [3, 154]  # cents, rounded half up


async def test_a_sync_killed_halfway_then_rerun_sends_each_unit_once(billing: Billing) -> None:
    b = billing
    user = await subscribed(b, "basic")
    await record_usage(b, user, usage(5_000_000, 0))  # the whole allowance
    await record_usage(b, user, usage(3_000, 4_000))

    # Killed right after the decision committed, before anything reached Stripe: pending records.
    decided = await usage_sync.decide(b.resources, uuid.UUID(user["user_id"]))
    assert len(decided) == 2
    assert await stripe_totals(b, user) == {"input": 0, "output": 0}
    # Killed after Stripe took one event, before it was marked sent.
    [pending_input, pending_output] = await records_of(b, user)
    assert pending_input.status == pending_output.status == "pending"
    await b.stripe.create_meter_event(
        event_name=pending_input.event_name,
        payload=usage_sync.meter_payload(pending_input.stripe_customer_id, pending_input.units),
        identifier=pending_input.identifier,
        timestamp=pending_input.timestamp,
    )

    stats = await sync(b, user)  # the rerun: the same identifiers (and idempotency keys), Stripe keeps one
    assert (stats.decided, stats.sent + stats.duplicates) == (0, 2)
    assert await stripe_totals(b, user) == {"input": 3_000, "output": 4_000}
    assert {r.status for r in await records_of(b, user)} == {"sent"}
    assert (await sync(b, user)).sent == 0
    assert await stripe_totals(b, user) == {"input": 3_000, "output": 4_000}


async def test_two_syncs_at_once_decide_each_unit_once(billing: Billing) -> None:
    b = billing
    user = await subscribed(b, "basic")
    await record_usage(b, user, usage(5_000_000, 7_000))
    results = await asyncio.gather(*(sync(b, user) for _ in range(4)))
    assert sum(r.decided for r in results) == 1
    assert await stripe_totals(b, user) == {"input": 0, "output": 7_000}


async def test_a_new_subscription_inside_a_cancelled_period_bills_its_tokens_once(billing: Billing) -> None:
    b = billing
    user = await subscribed(b, "basic")
    old = await row_of(b, user)
    assert old is not None and old.current_period_start is not None
    # The allowance, and 1,000 output tokens over, as the period starts.
    await record_usage(b, user, usage(5_000_000, 1_000), at=old.current_period_start)
    await sync(b, user)
    assert await stripe_totals(b, user) == {"input": 0, "output": 1_000}

    # Cancelled at once, then subscribed again before the cancelled period would have ended: the new
    # subscription's period starts now (a later second: Stripe's periods are whole seconds) and includes
    # 5M tokens of its own.
    await portal(b, user, action="cancel_now", subscription=user["subscription"])
    await status_becomes(b, user, "canceled")
    await asyncio.sleep(max(0.0, old.current_period_start.timestamp() + 1 - time.time()))
    paid = await pay(b, (await start_checkout(b, user))["url"], GOOD_CARD)
    assert paid.status_code == 303
    await status_becomes(b, user, "active")
    row = await row_of(b, user)
    assert row is not None and row.stripe_subscription_id != user["subscription"]

    await record_usage(b, user, usage(2_000, 3_000))  # included in the new period
    await sync(b, user)
    assert await stripe_totals(b, user) == {"input": 0, "output": 1_000}  # not billed again by the old one


async def test_a_record_pending_past_the_dedupe_window_is_held_for_an_operator(
    billing: Billing, settings: Settings
) -> None:
    b = billing
    user = await subscribed(b, "basic")
    await record_usage(b, user, usage(5_000_500, 0))
    [record_id] = await usage_sync.decide(b.resources, uuid.UUID(user["user_id"]))
    stats = usage_sync.SyncStats()
    later = datetime.now(UTC) + usage_sync.SEND_WINDOW + timedelta(minutes=1)
    await usage_sync.send_pending(b.resources.db, b.stripe, uuid.UUID(user["user_id"]), stats, now=later)
    assert (stats.stale, stats.sent) == (1, 0)
    assert await stripe_totals(b, user) == {"input": 0, "output": 0}
    assert (await sync(b, user)).sent == 0  # never resent blindly

    month = f"{datetime.now(UTC):%Y-%m}"
    code, out = await admin(settings, b, "usage", "reconcile", "--month", month)
    assert code == 1, out
    line = next(row for row in out.splitlines() if row.startswith(user["customer"]) and " input " in row)
    assert line.split()[2:] == ["0", "0", "500", "0", "0", "DIFFERS"]  # sent, pending, stale, Stripe
    [stale] = [r for r in await records_of(b, user) if r.id == record_id]
    assert f"stale: {stale.identifier}" in out

    code, out = await admin(settings, b, "usage", "resolve", stale.identifier, "--resend")
    assert code == 0, out
    assert await stripe_totals(b, user) == {"input": 500, "output": 0}
    code, out = await admin(settings, b, "usage", "reconcile", "--month", month)
    line = next(row for row in out.splitlines() if row.startswith(user["customer"]) and " input " in row)
    assert line.split()[-1] == "ok"


async def test_the_monthly_rollup_and_the_operators_report(billing: Billing, settings: Settings) -> None:
    b = billing
    user = await subscribed(b, "pro")
    await record_usage(b, user, usage(1_000, 200, cache_read=50))
    await record_usage(b, user, usage(2_000, 300))
    await sync(b, user)
    async with b.resources.db.sessions() as session:
        row = (
            await session.execute(
                select(UsageMonthly).where(UsageMonthly.user_id == uuid.UUID(user["user_id"]))
            )
        ).scalar_one()
    assert (row.ai_input_tokens, row.ai_output_tokens, row.ai_cache_read_tokens, row.ai_requests) == (
        3_000,
        500,
        50,
        2,
    )
    assert row.ai_cost_microdollars == upstream_cost_microdollars(
        MODEL, usage(1_000, 200, cache_read=50)
    ) + upstream_cost_microdollars(MODEL, usage(2_000, 300))
    synced_at = row.synced_at
    await sync(b, user)  # nothing changed: the row is left alone
    async with b.resources.db.sessions() as session:
        again = await session.get(UsageMonthly, row.id)
    assert again is not None and again.synced_at == synced_at

    month = f"{datetime.now(UTC):%Y-%m}"
    admin_user = await operator(b.web, settings)
    response = await b.web.get("/v1/admin/usage", params={"month": month}, headers=bearer(admin_user))
    assert response.status_code == 200, response.text
    pro_rows = [m for m in response.json()["models"] if m["plan"] == "pro" and m["model"] == MODEL]
    assert pro_rows and pro_rows[0]["input_tokens"] >= 3_000 and pro_rows[0]["month"] == month
    refused = await b.web.get("/v1/admin/usage", params={"month": month}, headers=bearer(user))
    assert refused.status_code == 403
    bad = await b.web.get("/v1/admin/usage", params={"month": "2026-13"}, headers=bearer(admin_user))
    assert bad.status_code == 400 and bad.json()["error"]["code"]

    code, out = await admin(settings, b, "usage", "report", "--month", month, "--csv")
    assert code == 0, out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert any(r["section"] == "models" and r["plan"] == "pro" and r["model"] == MODEL for r in rows)
    code, out = await admin(settings, b, "usage", "report", "--month", "1999-01")
    assert code == 0 and out.count("(none)") == 3


async def admin(settings: Settings, b: Billing, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poindexter_cloud",
        "admin",
        *args,
        env={
            **os.environ,
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url.replace("+psycopg", ""),
            "REDIS_URL": settings.redis_url,
            "QUEUE_NAME": QUEUE_NAME,
            "SANDBOX_URL": settings.sandbox_url,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()
