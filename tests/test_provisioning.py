"""Identity provisioning end to end: a paid subscription becomes a Workspace mailbox, a Telnyx number and a
Signal account with no human step, against the sandbox's simulators, asserted through the official SDKs
(google-api-python-client, telnyx) and signal-cli-rest-api's HTTP API.

The web role is the ``billing`` fixture's (it receives the sandbox Stripe's webhooks); the sandbox Telnyx's
messaging profile posts inbound SMS (Signal's verification codes among them) to its ``/webhooks/telnyx``, as
an operator's Mission Control profile would. The session's worker runs the jobs; a "killed" worker is
simulated by running a job's steps up to a point (or making a provider act without our record of it), then
running the job again.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import telnyx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.oauth2 import service_account
from googleapiclient.discovery import build
from sqlalchemy import func, select, update

from conftest import Billing, RunningServer, eventually, google_call
from poindexter_cloud.accounts.models import User
from poindexter_cloud.billing import service as billing_service
from poindexter_cloud.billing.models import Subscription, UsageEvent
from poindexter_cloud.billing.usage_buffer import UsageBuffer, stream_for
from poindexter_cloud.core.models import JobHistory
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.models import Identity, IncomingSms, SignalMessage
from poindexter_cloud.integrations.errors import ProviderUnavailable
from poindexter_cloud.integrations.telnyx import PROFILE_NAME
from poindexter_cloud.provisioning import inbound, jobs, lifecycle
from poindexter_cloud.provisioning import service as provisioning
from poindexter_cloud.provisioning.errors import NotAwaitingCaptcha, NotProvisionable
from poindexter_cloud.sandbox.telnyx.signing import sign
from poindexter_cloud.webhooks.models import WebhookEvent
from test_accounts import PASSWORD, audit_actions, bearer, register
from test_admin import admin_cli, operator
from test_billing import FAILING_CARD, GOOD_CARD, advance, portal, status_becomes, subscribed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TELNYX_KEY = "KEYsandbox"
OUTSIDER = "+16465550199"  # someone's phone outside the sandbox's Telnyx account
CAPTCHA = "signalcaptcha://signal-hcaptcha.5fad97ac-7d06-4e44-b18a-b950b20148ff.registration.P1_eyJ0eXAi"


@dataclasses.dataclass
class World:
    b: Billing
    resources: Resources
    telnyx: telnyx.AsyncTelnyx
    directory: Any  # the Admin SDK Directory service, as the sandbox's Workspace administrator
    sandbox: httpx.AsyncClient
    web_url: str
    profile_id: str

    async def directory_call(self, request: Any) -> Any:
        return await google_call(request)

    async def workspace_users(self, email: str) -> list[dict[str, Any]]:
        page = await self.directory_call(
            self.directory.users().list(domain=email.split("@")[1], query=f"email={email}")
        )
        return list(page.get("users", []))

    async def numbers_of(self, identity: Identity) -> list[Any]:
        """Every number record the Telnyx account has under the identity's reference (any status)."""
        page = await self.telnyx.phone_numbers.list(filter={"customer_reference": str(identity.id)})
        return list(page.data)

    async def orders_of(self, identity: Identity) -> list[Any]:
        page = await self.telnyx.number_orders.list(filter={"customer_reference": str(identity.id)})
        return list(page.data)

    async def signal_accounts(self) -> list[str]:
        accounts: list[str] = (await self.sandbox.get("/signal/v1/accounts")).json()
        return accounts

    async def signal_state(self, number: str) -> dict[str, Any]:
        summary = (await self.sandbox.get("/signal/_control/state")).json()
        found: dict[str, Any] = next(a for a in summary["accounts"] if a["number"] == number)
        return found


@pytest.fixture(scope="module")
async def admin(billing: Billing) -> dict[str, Any]:
    """An operator's login session."""
    return await operator(billing.web, billing.settings)


@pytest.fixture(scope="module")
async def world(billing: Billing, sandbox_server: RunningServer) -> AsyncIterator[World]:
    """A freshly reset Telnyx sandbox whose messaging profile posts to the billing fixture's web role, and
    the SDK clients the assertions use."""
    web_url = billing.webhook_url.removesuffix("/webhooks/stripe")
    sandbox = billing.sandbox
    info = (await sandbox.get("/google/_control/service-account")).json()
    settings = billing.resources.settings
    credentials = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/admin.directory.user"]
    ).with_subject(settings.google_admin)
    directory = build(
        "admin",
        "directory_v1",
        credentials=credentials,
        static_discovery=True,
        client_options={"api_endpoint": f"{sandbox_server.url}/google/"},
    )
    async with telnyx.AsyncTelnyx(api_key=TELNYX_KEY, base_url=f"{sandbox_server.url}/telnyx/v2") as client:
        profile_id = await point_profile_at(client, f"{web_url}/webhooks/telnyx")
        yield World(billing, billing.resources, client, directory, sandbox, web_url, profile_id)


async def point_profile_at(client: telnyx.AsyncTelnyx, webhook_url: str) -> str:
    """Our messaging profile (made by an earlier module's provisioning, or now), its webhooks sent to this
    module's web role, as an operator would set it in Mission Control."""
    found = [p for p in (await client.messaging_profiles.list(filter={"name": PROFILE_NAME})).data if p.id]
    for profile in found:
        await client.messaging_profiles.update(str(profile.id), webhook_url=webhook_url)
    if found:
        return str(sorted(found, key=lambda p: str(p.created_at))[0].id)
    made = await client.messaging_profiles.create(
        name=PROFILE_NAME, whitelisted_destinations=["US"], webhook_url=webhook_url
    )
    assert made.data is not None and made.data.id
    return made.data.id


# --- helpers ----------------------------------------------------------------------------------------------


async def identity_of(w: World, user_id: uuid.UUID | str) -> Identity | None:
    async with w.resources.db.sessions() as session:
        return await identities.get(session, uuid.UUID(str(user_id)))


async def becomes(w: World, user_id: uuid.UUID | str, within: float = 20.0, **wanted: Any) -> Identity:
    """The identity once each of ``wanted``'s attributes has its value."""

    async def check() -> Identity | None:
        identity = await identity_of(w, user_id)
        if identity is not None and all(getattr(identity, k) == v for k, v in wanted.items()):
            return identity
        return None

    found: Identity = await eventually(check, within=within)
    return found


async def ready(w: World, user_id: uuid.UUID | str, within: float = 20.0) -> Identity:
    """Active, with Signal registered and its profile set: provisioning is over."""
    name = w.resources.settings.signal_profile_name
    return await becomes(
        w, user_id, within, status="active", signal_state="registered", signal_profile_name=name
    )


async def comp_user(w: World, *, start: bool = True) -> dict[str, Any]:
    """A registered user with a complimentary plan; ``start`` grants it as an operator does (its first
    activation defers provisioning), else only an active subscription row and the identity row exist, for
    a test to drive the steps itself."""
    user = await register(w.b.web)
    user_id = uuid.UUID(user["user_id"])
    async with w.resources.unit_of_work() as uow:
        if start:
            await billing_service.grant_complimentary(uow, user_id, "basic")
        else:
            uow.session.add(
                Subscription(
                    user_id=user_id,
                    stripe_subscription_id=f"{billing_service.COMP_PREFIX}{uuid.uuid4().hex}",
                    stripe_price_id=f"{billing_service.COMP_PREFIX}basic",
                    plan="basic",
                    status="active",
                )
            )
            await identities.ensure(uow.session, user_id)
        await uow.commit()
    user["id"] = user_id
    return user


async def run_steps(w: World, user_id: uuid.UUID, count: int) -> list[str]:
    """Run ``count`` provisioning steps as the job would, then stop (the worker "dies")."""
    ran = []
    p = await jobs.providers(w.resources.settings)
    while len(ran) < count:
        async with w.resources.unit_of_work() as uow:
            result = await lifecycle.provision_step(uow, p, user_id)
            await uow.commit()
        if result.progress is lifecycle.Progress.WAITING:
            await asyncio.sleep(0.05)
        else:
            ran.append(result.step)
    return ran


def ctx(w: World) -> dict[str, Any]:
    return {"resources": w.resources}


async def assert_one_of_each(w: World, identity: Identity) -> None:
    """Exactly one Workspace user at the identity's address, and exactly one number held for it, both the
    ones recorded."""
    assert identity.workspace_email is not None
    users = await w.workspace_users(identity.workspace_email)
    assert [u["id"] for u in users] == [identity.workspace_user_id]
    held = [n for n in await w.numbers_of(identity) if n.status in ("active", "purchase-pending")]
    assert [(n.id, n.phone_number) for n in held] == [(identity.phone_telnyx_id, identity.phone_number)]


async def telnyx_idle(w: World) -> None:
    async def idle() -> bool:
        return bool((await w.sandbox.get("/telnyx/_control/deliveries")).json()["idle"])

    await eventually(idle, within=10)


# --- the happy path ---------------------------------------------------------------------------------------


async def test_a_paid_subscription_ends_in_an_active_identity_with_mailbox_number_and_signal(
    world: World,
) -> None:
    w = world
    user = await subscribed(w.b)
    identity = await ready(w, user["user_id"])
    assert identity.workspace_email and identity.workspace_email.startswith("dex-")
    assert identity.workspace_email.endswith(f"@{w.resources.settings.google_workspace_domain}")
    [mailbox] = await w.workspace_users(identity.workspace_email)
    assert mailbox["suspended"] is False and mailbox["id"] == identity.workspace_user_id
    assert {"type": "custom", "customType": "poindexter_identity", "value": str(identity.id)} in mailbox[
        "externalIds"
    ]
    await assert_one_of_each(w, identity)
    assert identity.phone_telnyx_id is not None and identity.phone_number is not None
    number = (await w.telnyx.phone_numbers.retrieve(identity.phone_telnyx_id)).data
    assert number is not None and (number.status, number.messaging_profile_id) == ("active", w.profile_id)
    assert identity.phone_number in await w.signal_accounts()
    assert (await w.signal_state(identity.phone_number))["profile_name"] == "Dex"

    shown = (await w.b.web.get("/v1/identity", headers=bearer(user))).json()
    assert (shown["status"], shown["email"], shown["phone_number"]) == (
        "active",
        identity.workspace_email,
        identity.phone_number,
    )
    assert shown["pending"] == [] and shown["signal"] == "registered"
    # The code SMS completed the registration; it is not kept as an ordinary SMS.
    async with w.resources.db.sessions() as session:
        stored = await session.scalar(
            select(func.count()).select_from(IncomingSms).where(IncomingSms.identity_id == identity.id)
        )
    assert stored == 0


# --- Signal keep-alive ------------------------------------------------------------------------------------


async def test_the_keep_alive_stores_what_it_receives_once_in_order(world: World) -> None:
    w = world
    user = await comp_user(w)
    identity = await ready(w, user["id"])
    assert identity.phone_number
    friend = "+14155550188"
    await w.sandbox.post("/signal/_control/outside_users", json={"number": friend, "name": "Alice"})
    for text in ("first", "second"):
        sent = await w.sandbox.post(
            f"/signal/_control/outside_users/{friend}/messages",
            json={"recipient": identity.phone_number, "message": text},
        )
        assert sent.status_code == 201, sent.text
    await jobs.keep_signal_alive(ctx(w))
    await jobs.keep_signal_alive(ctx(w))  # nothing new: nothing stored twice

    async with w.resources.db.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(SignalMessage)
                    .where(SignalMessage.identity_id == identity.id)
                    .order_by(SignalMessage.id)
                )
            )
            .scalars()
            .all()
        )
    messages = [(m.kind, m.source, m.source_name, m.body) for m in rows if m.kind == "message"]
    assert messages == [("message", friend, "Alice", "first"), ("message", friend, "Alice", "second")]
    assert rows[0].id < rows[1].id and rows[0].signal_timestamp < rows[1].signal_timestamp
    # The inbox is empty now: signal-cli handed everything out, and we have it.
    assert (await w.signal_state(identity.phone_number))["inbox"] == 0

    async def counted() -> int:
        async with w.resources.db.sessions() as session:
            found = await session.scalar(
                select(func.count())
                .select_from(UsageEvent)
                .where(UsageEvent.user_id == user["id"], UsageEvent.event_type == "signal_received")
            )
        return int(found or 0)

    assert await eventually(lambda: _at_least(counted, 2)) and await counted() == 2


async def _at_least(count: Any, wanted: int) -> bool:
    return bool(await count() >= wanted)


async def test_a_comp_plan_activated_like_a_paid_one_provisions_too_and_the_job_is_idempotent(
    world: World,
) -> None:
    w = world
    user = await comp_user(w)
    identity = await ready(w, user["id"])
    assert await jobs.provision_identity(ctx(w), str(user["id"])) == "nothing to do"
    assert await jobs.register_signal(ctx(w), str(user["id"])) == "registered"
    again = await identity_of(w, user["id"])
    assert again is not None and again.updated_at == identity.updated_at
    await assert_one_of_each(w, identity)


# --- a worker killed anywhere -----------------------------------------------------------------------------

# The steps a new identity goes through (a mailbox to unsuspend is a returning subscriber's).
STEPS = [name for name, _, _ in lifecycle.PROVISION_STEPS if name != "unsuspend_mailbox"]


@pytest.mark.parametrize("completed", range(len(STEPS)), ids=lambda n: f"after-{n}-steps")
async def test_a_job_killed_after_any_step_resumes_with_one_mailbox_and_one_number(
    world: World, completed: int
) -> None:
    w = world
    user = await comp_user(w, start=False)
    assert await run_steps(w, user["id"], completed) == STEPS[:completed]
    await jobs.provision_identity(ctx(w), str(user["id"]))  # the job, run again after the "crash"
    identity = await ready(w, user["id"])
    await assert_one_of_each(w, identity)


async def test_a_mailbox_created_but_not_recorded_is_adopted_not_made_twice(world: World) -> None:
    w = world
    user = await comp_user(w, start=False)
    await run_steps(w, user["id"], 1)  # the address is reserved
    reserved = await identity_of(w, user["id"])
    assert reserved is not None and reserved.workspace_email and reserved.workspace_user_id is None
    # The worker dies between Google's answer and the commit: the user exists, our row does not say so.
    p = await jobs.providers(w.resources.settings)
    made = await p.google.create_user(reserved.workspace_email, "Dex", "x", str(reserved.id))
    await jobs.provision_identity(ctx(w), str(user["id"]))
    identity = await ready(w, user["id"])
    assert identity.workspace_user_id == made.id
    await assert_one_of_each(w, identity)


@pytest.mark.parametrize("settled", [True, False], ids=["order-done", "order-pending"])
async def test_a_number_ordered_but_not_recorded_is_adopted_not_bought_twice(
    world: World, settled: bool
) -> None:
    w = world
    user = await comp_user(w, start=False)
    await run_steps(w, user["id"], 2)  # the mailbox exists
    identity = await identity_of(w, user["id"])
    assert identity is not None and identity.phone_order_id is None
    await w.sandbox.post("/telnyx/_control/number_orders", json={"seconds": 0.05 if settled else 0.5})
    try:
        found = await w.telnyx.available_phone_numbers.list(filter={"features": ["sms"], "limit": 50})
        wanted = [n.phone_number for n in found.data or [] if n.phone_number][-1]
        order = await w.telnyx.number_orders.create(
            phone_numbers=[{"phone_number": wanted}], customer_reference=str(identity.id)
        )
        assert order.data is not None and order.data.status == "pending"
        if settled:
            await eventually(lambda: _order_done(w, order.data.id if order.data else ""))
        await jobs.provision_identity(ctx(w), str(user["id"]))
    finally:
        await w.sandbox.post("/telnyx/_control/number_orders", json={"seconds": 0.05})
    identity = await ready(w, user["id"])
    assert identity.phone_number == wanted
    await assert_one_of_each(w, identity)
    assert len(await w.orders_of(identity)) == 1


async def test_a_number_order_that_fails_on_the_wire_is_left_to_the_job_not_placed_again(
    world: World,
) -> None:
    """Telnyx dedupes no number order, so the adapter never repeats one: a repeat of an order whose answer
    was lost would find the number sold (to us) and buy another. The failure goes to the job instead, whose
    next attempt adopts what is held under the identity's reference (the test above)."""
    w = world
    p = await jobs.providers(w.resources.settings)
    reference = str(uuid.uuid4())
    [wanted, *_] = await p.telnyx.search_numbers(w.resources.settings.telnyx_number_country, None)
    fault = {"path": "/v2/number_orders", "method": "POST", "status": 500, "count": 1}
    assert (await w.sandbox.post("/telnyx/_control/faults", json=fault)).status_code == 200
    try:
        with pytest.raises(ProviderUnavailable):
            await p.telnyx.order_number(wanted, reference)
    finally:
        await w.sandbox.delete("/telnyx/_control/faults")
    placed = await w.telnyx.number_orders.list(filter={"customer_reference": reference})
    assert placed.data == []


async def _order_done(w: World, order_id: str) -> bool:
    order = (await w.telnyx.number_orders.retrieve(order_id)).data
    return order is not None and order.status == "success"


# --- permanent failures -----------------------------------------------------------------------------------


async def test_a_failed_number_order_leaves_a_visible_failed_identity_and_an_operator_retries_it(
    world: World, admin: dict[str, Any]
) -> None:
    w = world
    await w.sandbox.post("/telnyx/_control/number_orders", json={"outcome": "failure"})
    try:
        user = await comp_user(w)
        identity = await becomes(w, user["id"], status="failed")
        assert identity.failure_step == "await_number" and "failure" in (identity.failure_reason or "")
        assert identity.phone_number is None and identity.phone_order_id is None
        assert {n.status for n in await w.numbers_of(identity)} == {"purchase-failed"}
        assert identity.workspace_email and len(await w.workspace_users(identity.workspace_email)) == 1

        listed = (await w.b.web.get("/v1/admin/provisioning", headers=bearer(admin))).json()
        mine = [i for i in listed["issues"] if i["identity"]["user_id"] == str(user["id"])]
        assert [(i["problem"], i["identity"]["failure_step"]) for i in mine] == [("failed", "await_number")]
        shown = (await w.b.web.get("/v1/identity", headers=bearer(user))).json()
        assert shown["status"] == "failed" and "number" in shown["pending"]

        # A stray second run of the job changes nothing: no second order, nothing released.
        assert await jobs.provision_identity(ctx(w), str(user["id"])) == "nothing to do"
        assert len(await w.orders_of(identity)) == 1
    finally:
        await w.sandbox.post("/telnyx/_control/number_orders", json={"outcome": "success"})

    retried = await w.b.web.post(f"/v1/admin/provision/{user['id']}", headers=bearer(admin))
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "provisioning"
    identity = await ready(w, user["id"])
    await assert_one_of_each(w, identity)
    assert len(await w.orders_of(identity)) == 2
    listed = (await w.b.web.get("/v1/admin/provisioning", headers=bearer(admin))).json()
    assert str(user["id"]) not in {i["identity"]["user_id"] for i in listed["issues"]}


async def test_a_number_that_cannot_join_the_profile_is_released_once_and_the_identity_fails(
    world: World,
) -> None:
    w = world
    refusal = {"method": "PATCH", "path": "/v2/phone_numbers/*/messaging", "status": 422, "count": 3}
    assert (await w.sandbox.post("/telnyx/_control/faults", json=refusal)).status_code == 200
    try:
        user = await comp_user(w)
        identity = await becomes(w, user["id"], status="failed")
    finally:
        await w.sandbox.delete("/telnyx/_control/faults")
    assert identity.failure_step == "attach_number" and identity.phone_telnyx_id is None
    assert await jobs.provision_identity(ctx(w), str(user["id"])) == "nothing to do"
    [order] = await w.orders_of(identity)  # one number bought...
    bought = order.phone_numbers[0].phone_number
    assert await w.numbers_of(identity) == []  # ...and released: the account holds nothing for it
    on_sale = await w.telnyx.available_phone_numbers.list(
        filter={"phone_number": {"ends_with": bought[-4:]}, "limit": 100}
    )
    assert bought in {n.phone_number for n in on_sale.data or []}
    assert (await audit_actions(w.resources, str(user["id"]))).count("identity.number_released") == 1


async def test_operators_see_stuck_provisioning_and_provision_only_subscribers(
    world: World, admin: dict[str, Any]
) -> None:
    w = world
    stuck = await comp_user(w, start=False)  # its job died for good, long ago
    async with w.resources.db.sessions() as session:
        await session.execute(
            update(Identity)
            .where(Identity.user_id == stuck["id"])
            .values(status_changed_at=identities.now() - timedelta(minutes=20))
        )
        await session.commit()
    listed = (await w.b.web.get("/v1/admin/provisioning", headers=bearer(admin))).json()
    assert ("stuck", str(stuck["id"])) in {(i["problem"], i["identity"]["user_id"]) for i in listed["issues"]}
    assert (
        await w.b.web.post(f"/v1/admin/provision/{stuck['id']}", headers=bearer(admin))
    ).status_code == 202
    await ready(w, stuck["id"])
    listed = (await w.b.web.get("/v1/admin/provisioning", headers=bearer(admin))).json()
    assert str(stuck["id"]) not in {i["identity"]["user_id"] for i in listed["issues"]}

    user = await register(w.b.web)
    refused = await w.b.web.post(f"/v1/admin/provision/{user['user_id']}", headers=bearer(admin))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_provisionable"
    assert (await w.b.web.get("/v1/identity", headers=bearer(user))).status_code == 404
    not_admin = await w.b.web.get("/v1/admin/provisioning", headers=bearer(user))
    assert not_admin.status_code == 403


# --- Signal: captcha, retries, time limit -----------------------------------------------------------------


async def test_a_captcha_demand_waits_for_an_operator_who_completes_it_from_the_cli(
    world: World, admin: dict[str, Any]
) -> None:
    w = world
    user = await comp_user(w, start=False)
    await run_steps(w, user["id"], STEPS.index("start_signal"))  # the number is ours and in the profile
    identity = await identity_of(w, user["id"])
    assert identity is not None and identity.phone_number is not None
    demand = await w.sandbox.post("/signal/_control/captcha", json={"number": identity.phone_number})
    assert demand.status_code == 200
    await jobs.provision_identity(ctx(w), str(user["id"]))
    await becomes(w, user["id"], status="active", signal_state="captcha_required")
    assert identity.phone_number not in await w.signal_accounts()

    listed = (await w.b.web.get("/v1/admin/provisioning", headers=bearer(admin))).json()
    assert ("signal_captcha", str(user["id"])) in {
        (i["problem"], i["identity"]["user_id"]) for i in listed["issues"]
    }
    shown = await asyncio.to_thread(admin_cli, w.b.settings, "identity", "show", str(user["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "captcha_required" in shown.stdout and identity.phone_number in shown.stdout

    solved = await asyncio.to_thread(
        admin_cli, w.b.settings, "identity", "signal-captcha", str(user["id"]), CAPTCHA
    )
    assert solved.returncode == 0, solved.stderr
    await ready(w, user["id"])
    assert identity.phone_number in await w.signal_accounts()
    # The job that handed it over stored its payload; the token in it is sealed, never in the clear.
    async with w.resources.db.sessions() as session:
        payloads = (
            await session.execute(select(JobHistory.payload).where(JobHistory.job_type == "register_signal"))
        ).scalars()
        handed = [p["captcha"] for p in payloads if p.get("captcha")]
    assert len(handed) == 1 and CAPTCHA.split(".")[-1] not in handed[0]
    with pytest.raises(NotAwaitingCaptcha):
        async with w.resources.unit_of_work() as uow:
            await provisioning.submit_signal_captcha(uow, w.resources.settings, user["id"], CAPTCHA)


async def test_the_signal_profile_is_set_even_if_the_code_sms_job_dies_right_after_its_commit(
    world: World,
) -> None:
    w = world
    user = await comp_user(w, start=False)
    await run_steps(w, user["id"], STEPS.index("start_signal"))
    await w.sandbox.post("/telnyx/_control/webhooks", json={"mode": "hold"})  # the code SMS waits with Telnyx
    try:
        await jobs.provision_identity(ctx(w), str(user["id"]))
        identity = await becomes(w, user["id"], signal_state="awaiting_code")
        assert identity.phone_number is not None
        code = (await w.signal_state(identity.phone_number))["pending_code"]
        sms = json.loads(_inbound_event(identity.phone_number, f"Your Signal code: {code[:3]}-{code[3:]}"))
        # What process_telnyx_event's transaction does with that SMS; the job dies once it has committed.
        p = await jobs.providers(w.resources.settings)
        usage = UsageBuffer(w.resources.redis, stream_for(w.resources.settings.queue_name))
        async with w.resources.unit_of_work() as uow:
            assert await inbound.apply(uow, p, usage, "message.received", sms) == "signal code"
            await uow.commit()
        await ready(w, user["id"])  # registered, and its profile set by a job the commit asked for
    finally:
        await w.sandbox.post("/telnyx/_control/webhooks", json={"mode": "normal"})
        await w.sandbox.post("/telnyx/_control/webhooks/flush")  # an ordinary SMS by now


async def test_signal_rate_limits_are_retried_with_backoff_until_the_time_limit(world: World) -> None:
    w = world
    user = await comp_user(w, start=False)
    await run_steps(w, user["id"], STEPS.index("start_signal"))
    fault = {"kind": "rate_limit", "count": 2, "endpoint": "POST /v1/register/{number}"}
    assert (await w.sandbox.post("/signal/_control/faults", json=fault)).status_code == 200
    before = identities.now()
    await jobs.provision_identity(ctx(w), str(user["id"]))
    first = await becomes(w, user["id"], signal_state="retrying", signal_attempts=1)
    assert first.signal_next_attempt_at is not None and "rate limiting" in (first.signal_error or "")
    assert timedelta(seconds=29) < first.signal_next_attempt_at - before < timedelta(seconds=40)
    assert await jobs.register_signal(ctx(w), str(user["id"])) == "retrying"  # the cron's next run, when due
    second = await becomes(w, user["id"], signal_attempts=2)
    assert second.signal_next_attempt_at is not None
    assert second.signal_next_attempt_at - first.signal_next_attempt_at > timedelta(seconds=25)  # doubled
    assert await jobs.register_signal(ctx(w), str(user["id"])) == "awaiting code"
    await ready(w, user["id"])

    late = await comp_user(w, start=False)
    await run_steps(w, late["id"], STEPS.index("start_signal"))
    await w.sandbox.post("/signal/_control/faults", json={**fault, "count": 1})
    await jobs.provision_identity(ctx(w), str(late["id"]))
    await becomes(w, late["id"], signal_state="retrying")
    limit = timedelta(seconds=w.resources.settings.signal_registration_timeout_seconds)
    async with w.resources.db.sessions() as session:  # time passes: the registration started long ago
        await session.execute(
            update(Identity)
            .where(Identity.user_id == late["id"])
            .values(signal_started_at=identities.now() - limit - timedelta(minutes=1))
        )
        await session.commit()
    assert await jobs.register_signal(ctx(w), str(late["id"])) == "failed"
    failed = await becomes(w, late["id"], signal_state="failed", status="active")
    assert "did not finish" in (failed.signal_error or "")


# --- deprovisioning ---------------------------------------------------------------------------------------


async def test_deprovisioning_goes_in_reverse_order_and_twice_is_harmless(world: World) -> None:
    w = world
    user = await comp_user(w)
    identity = await ready(w, user["id"])
    number, email, number_id = identity.phone_number, identity.workspace_email, identity.phone_telnyx_id
    assert number and email and number_id
    deprovision = await asyncio.to_thread(admin_cli, w.b.settings, "identity", "deprovision", str(user["id"]))
    assert deprovision.returncode == 0, deprovision.stderr
    gone = await becomes(w, user["id"], status="deprovisioning", workspace_suspended=True)
    assert gone.phone_number is None and gone.signal_state == "unregistered"
    assert gone.workspace_delete_after is not None
    assert gone.workspace_delete_after - identities.now() > timedelta(days=29)
    assert number not in await w.signal_accounts()
    with pytest.raises(telnyx.NotFoundError):
        await w.telnyx.phone_numbers.retrieve(number_id)
    [mailbox] = await w.workspace_users(email)
    assert mailbox["suspended"] is True

    assert await jobs.deprovision_identity(ctx(w), str(user["id"])) == "nothing to do"  # the second time
    async with w.resources.db.sessions() as session:  # the retention period is over
        await session.execute(
            update(Identity)
            .where(Identity.user_id == user["id"])
            .values(workspace_delete_after=identities.now() - timedelta(seconds=1))
        )
        await session.commit()
    assert await jobs.advance_identities(ctx(w)) == {"ended": 0, "retention_over": 1, "resumed": 0}
    deleted = await becomes(w, user["id"], status="deleted")
    assert deleted.workspace_user_id is None and await w.workspace_users(email) == []
    assert await jobs.deprovision_identity(ctx(w), str(user["id"])) == "nothing to do"
    actions = await audit_actions(w.resources, str(user["id"]))
    assert [a for a in actions if a in ("identity.number_released", "identity.mailbox_deleted")] == [
        "identity.number_released",
        "identity.mailbox_deleted",
    ]

    # The subscriber comes back: the same address, a new number, Signal again.
    async with w.resources.unit_of_work() as uow:
        await provisioning.request_provisioning(uow, user["id"])
        await uow.commit()
    back = await ready(w, user["id"])
    assert back.workspace_email == email and back.phone_number is not None
    await assert_one_of_each(w, back)


async def test_cancellation_deprovisions_the_identity_once_the_grace_period_is_over(world: World) -> None:
    w = world
    user = await subscribed(w.b)
    identity = await ready(w, user["user_id"])
    await portal(w.b, user, action="cancel_now", subscription=user["subscription"])
    await status_becomes(w.b, user, "canceled")
    assert (await jobs.advance_identities(ctx(w)))["ended"] == 0  # within the grace period
    assert (await identity_of(w, user["user_id"])) is not None
    still = await becomes(w, user["user_id"], status="active")
    assert still.phone_number == identity.phone_number
    async with w.resources.db.sessions() as session:  # the grace period passes
        await session.execute(
            update(Subscription)
            .where(Subscription.user_id == uuid.UUID(user["user_id"]))
            .values(deprovision_after=identities.now() - timedelta(seconds=1))
        )
        await session.commit()
    assert (await jobs.advance_identities(ctx(w)))["ended"] == 1
    gone = await becomes(w, user["user_id"], status="deprovisioning", workspace_suspended=True)
    assert gone.phone_number is None and gone.signal_state == "unregistered"
    assert gone.deprovision_reason == "subscription ended"
    assert (await jobs.advance_identities(ctx(w)))["ended"] == 0  # asked once


async def test_a_failed_payment_suspends_the_identity_and_payment_resumes_it(world: World) -> None:
    w = world
    user = await subscribed(w.b)
    identity = await ready(w, user["user_id"])
    assert identity.workspace_email
    await portal(w.b, user, action="update_card", card_number=FAILING_CARD)
    await advance(w.b, user)
    await status_becomes(w.b, user, "suspended")
    suspended = await becomes(w, user["user_id"], status="suspended", workspace_suspended=True)
    [mailbox] = await w.workspace_users(identity.workspace_email)
    assert mailbox["suspended"] is True
    assert suspended.phone_number == identity.phone_number and suspended.signal_state == "registered"

    await portal(w.b, user, action="update_card", card_number=GOOD_CARD)
    await status_becomes(w.b, user, "active")
    await becomes(w, user["user_id"], status="active", workspace_suspended=False)
    [mailbox] = await w.workspace_users(identity.workspace_email)
    assert mailbox["suspended"] is False


async def test_deleting_the_account_deprovisions_everything_then_erases_it(world: World) -> None:
    w = world
    user = await comp_user(w)
    identity = await ready(w, user["id"])
    assert identity.workspace_email and identity.phone_number
    await w.sandbox.post(
        "/telnyx/_control/inbound", json={"from": OUTSIDER, "to": identity.phone_number, "text": "hello Dex"}
    )
    await eventually(lambda: _sms_count(w, identity.id))
    deleted = await w.b.web.request(
        "DELETE", "/v1/account/", json={"password": PASSWORD}, headers=bearer(user)
    )
    assert deleted.status_code == 202, deleted.text
    gone = await becomes(w, user["id"], status="deleted", workspace_email=None)
    assert gone.phone_number is None and gone.workspace_user_id is None
    assert identity.phone_number not in await w.signal_accounts()
    assert await w.workspace_users(identity.workspace_email) == []  # no retention for an erased account

    async def erased() -> bool:
        return "account.erased" in await audit_actions(w.resources, str(user["id"]))

    await eventually(erased)
    assert await _sms_count(w, identity.id) == 0
    async with w.resources.unit_of_work() as uow:
        with pytest.raises(NotProvisionable):
            await provisioning.request_provisioning(uow, user["id"])


async def _sms_count(w: World, identity_id: uuid.UUID) -> int:
    async with w.resources.db.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(IncomingSms).where(IncomingSms.identity_id == identity_id)
        )
    return int(count or 0)


# --- the Telnyx webhook -----------------------------------------------------------------------------------


async def _telnyx_events(w: World) -> int:
    async with w.resources.db.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(WebhookEvent).where(WebhookEvent.provider == "telnyx")
        )
    return int(count or 0)


def _inbound_event(to: str, text: str) -> str:
    message_id = str(uuid.uuid4())
    payload = {
        "record_type": "message",
        "direction": "inbound",
        "id": message_id,
        "type": "SMS",
        "from": {"phone_number": OUTSIDER, "carrier": "SANDBOX WIRELESS", "line_type": "Wireless"},
        "to": [{"phone_number": to, "status": "webhook_delivered"}],
        "text": text,
        "media": [],
        "received_at": "2026-12-01T12:00:00.000+00:00",
    }
    event = {
        "event_type": "message.received",
        "id": str(uuid.uuid4()),
        "payload": payload,
        "record_type": "event",
    }
    return json.dumps({"data": event, "meta": {"attempt": 1, "delivered_to": "x"}})


async def test_forged_or_stale_telnyx_webhooks_are_refused_and_nothing_is_stored(world: World) -> None:
    w = world
    user = await comp_user(w)
    identity = await ready(w, user["id"])
    assert identity.phone_number
    before_events, before_sms = await _telnyx_events(w), await _sms_count(w, identity.id)
    body = _inbound_event(identity.phone_number, "forged?")
    stranger = Ed25519PrivateKey.generate()
    stamp = str(int(time.time()))
    forged = {
        "telnyx-signature-ed25519": base64.b64encode(stranger.sign(f"{stamp}|{body}".encode())).decode(),
        "telnyx-timestamp": stamp,
    }
    attempts = [
        forged,
        sign(body, int(time.time()) - 301),  # the sandbox's own key, but too old
        {**sign(body), "telnyx-timestamp": str(int(time.time()) + 1)},  # a signature for another time
        {},
        sign(body.replace("forged?", "tampered")),
    ]
    for headers in attempts:
        refused = await w.b.web.post(
            "/webhooks/telnyx", content=body, headers={"content-type": "application/json", **headers}
        )
        assert refused.status_code == 400, headers
        assert refused.json()["error"]["code"] == "invalid_signature"
    assert (await _telnyx_events(w), await _sms_count(w, identity.id)) == (before_events, before_sms)

    good = await w.b.web.post(
        "/webhooks/telnyx", content=body, headers={"content-type": "application/json", **sign(body)}
    )
    assert good.status_code == 200 and good.json() == {"received": True, "duplicate": False}
    again = await w.b.web.post(
        "/webhooks/telnyx", content=body, headers={"content-type": "application/json", **sign(body)}
    )
    assert again.json() == {"received": True, "duplicate": True}
    await eventually(lambda: _sms_count(w, identity.id))
    assert await _telnyx_events(w) == before_events + 1


async def test_an_inbound_sms_is_stored_once_and_counted_as_usage(world: World) -> None:
    w = world
    user = await comp_user(w)
    identity = await ready(w, user["id"])
    assert identity.phone_number
    await w.sandbox.post("/telnyx/_control/webhooks", json={"mode": "duplicate"})
    try:
        sent = await w.sandbox.post(
            "/telnyx/_control/inbound",
            json={
                "from": OUTSIDER,
                "to": identity.phone_number,
                "text": "Your Signal code: 123-456 (not now)",
            },
        )
        assert sent.status_code == 200
        await telnyx_idle(w)
    finally:
        await w.sandbox.post("/telnyx/_control/webhooks", json={"mode": "normal"})
    await eventually(lambda: _sms_count(w, identity.id))
    message = sent.json()["data"]
    async with w.resources.db.sessions() as session:
        [sms] = (
            await session.execute(select(IncomingSms).where(IncomingSms.identity_id == identity.id))
        ).scalars()
        [event] = (
            await session.execute(
                select(WebhookEvent).where(
                    WebhookEvent.provider == "telnyx",
                    WebhookEvent.payload["data"]["payload"]["id"].astext == message["id"],
                )
            )
        ).scalars()
    assert (sms.from_number, sms.phone_number, sms.body) == (OUTSIDER, identity.phone_number, message["text"])
    assert sms.telnyx_message_id == message["id"]
    # Stored once, processed, and kept without the text (incoming_sms has it, where erasure finds it).
    assert event.processed_at is not None and event.payload["data"]["payload"]["text"] is None

    async def counted() -> int:
        async with w.resources.db.sessions() as session:
            found = await session.scalar(
                select(func.count())
                .select_from(UsageEvent)
                .where(UsageEvent.user_id == user["id"], UsageEvent.event_type == "sms_received")
            )
        return int(found or 0)

    assert await eventually(counted) == 1
    await asyncio.sleep(0.2)
    assert await counted() == 1 and await _sms_count(w, identity.id) == 1


# --- many at once -----------------------------------------------------------------------------------------


async def test_fifty_identities_provisioned_at_once_share_no_address_or_number(world: World) -> None:
    w = world
    async with w.resources.unit_of_work() as uow:
        # Accounts as registration makes them, minus 50 argon2 hashes (not what this test is about).
        users = [
            User(email=f"dex-fifty-{uuid.uuid4().hex}@example.com", password_hash="!") for _ in range(50)
        ]
        uow.session.add_all(users)
        await uow.commit()
    started = time.monotonic()
    async with w.resources.unit_of_work() as uow:  # all activated in one go
        for user in users:
            await billing_service.grant_complimentary(uow, user.id, "basic")
        await uow.commit()
    done = [await ready(w, user.id, within=60) for user in users]
    elapsed = time.monotonic() - started
    emails = [identity.workspace_email for identity in done]
    numbers = [identity.phone_number for identity in done]
    assert len(set(emails)) == len(set(numbers)) == 50 and None not in emails + numbers
    for identity in done[:10]:  # through the SDKs, spot-checked
        await assert_one_of_each(w, identity)
    held = [n async for n in await w.telnyx.phone_numbers.list(page_size=250)]
    mine = [n.phone_number for n in held if n.phone_number in set(numbers) and n.status != "purchase-failed"]
    assert sorted(mine) == sorted(numbers)  # each number once on the account
    accounts = await w.signal_accounts()
    assert set(numbers) <= set(accounts)
    assert elapsed < 30, elapsed


async def test_every_provisioning_job_and_telnyx_event_of_this_module_ended_without_errors(
    world: World,
) -> None:
    w = world
    kinds = (
        "provision_identity",
        "deprovision_identity",
        "register_signal",
        "suspend_identity",
        "resume_identity",
        "process_telnyx_event",
    )

    async def settled() -> list[tuple[str, str, str | None]]:
        async with w.resources.db.sessions() as session:
            rows = await session.execute(
                select(JobHistory.job_type, JobHistory.status, JobHistory.last_error).where(
                    JobHistory.job_type.in_(kinds)
                )
            )
        found = [(r[0], r[1], r[2]) for r in rows]
        return found if all(status in ("completed", "failed") for _, status, _ in found) else []

    jobs_run = await eventually(settled)
    assert {kind for kind, _, _ in jobs_run} >= set(kinds)
    assert [job for job in jobs_run if job[1] != "completed"] == []
    async with w.resources.db.sessions() as session:
        events = (
            await session.execute(select(WebhookEvent).where(WebhookEvent.provider == "telnyx"))
        ).scalars()
        assert [(e.event_id, e.last_error) for e in events if e.processed_at is None or e.last_error] == []
