"""The subscriber console in a real browser: Debian's Chromium driven by Playwright, against the web role,
the proxy, the sandbox's Stripe (hosted Checkout, signed webhooks) and the worker, all in this event loop.

Screenshots of every page go to $CONSOLE_SCREENSHOTS, or to a folder of this test run (printed at the end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import telnyx
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from sqlalchemy import select

from conftest import LateApp, RunningServer, eventually
from poindexter_cloud.accounts.models import User
from poindexter_cloud.accounts.service import Accounts, Client
from poindexter_cloud.billing import catalog
from poindexter_cloud.billing import service as billing
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role, Settings
from poindexter_cloud.identity import service as identities
from test_accounts import PASSWORD, link_in_mail, new_email, rotated_a_minute_ago
from test_billing import FAILING_CARD, GOOD_CARD
from test_provisioning import TELNYX_KEY, point_profile_at

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Playwright's own browser download cannot work here: Debian's chromium (.ci/run installs it).
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="needs Debian's chromium: apt-get install chromium"
    ),
]
# Without the background-networking flags Chromium's own connections are refused on this closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
MODEL = "claude-sonnet-4-5"


# --- fixtures ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Console:
    url: str
    settings: Settings  # the web role's: its own URL, the proxy's, and the Stripe endpoint's secret
    resources: Resources  # the web role's
    proxy_url: str
    sandbox: httpx.AsyncClient  # the simulators' controls


@pytest.fixture(scope="module")
async def console(
    settings: Settings,
    stripe: StripeAdapter,
    sandbox_server: RunningServer,
    proxy_server: RunningServer,
    worker: Any,
) -> AsyncIterator[Console]:
    """A web role whose public URL is its own (Checkout comes back to it), receiving the sandbox's Stripe
    webhooks, with the catalog synced, and the sandbox Telnyx's inbound SMS (Signal's codes among them); the
    session's worker applies the webhooks and provisions identities. (The shared ``billing`` fixture's web
    role keeps the default public URL, which a browser coming back from Checkout would miss.)"""
    await catalog.sync_catalog(stripe)
    async with httpx.AsyncClient(base_url=sandbox_server.url) as control:
        assert (await control.post("/stripe/_control/webhooks", json={"mode": "normal"})).status_code == 200
    late = LateApp()
    server = RunningServer(late)
    async with telnyx.AsyncTelnyx(api_key=TELNYX_KEY, base_url=f"{sandbox_server.url}/telnyx/v2") as client:
        await point_profile_at(client, f"{server.url}/webhooks/telnyx")
    endpoint = await stripe.sdk.v1.webhook_endpoints.create_async(
        {"url": f"{server.url}/webhooks/stripe", "enabled_events": ["*"]}
    )
    assert endpoint.secret
    web_settings = dataclasses.replace(
        settings,
        stripe_webhook_secret=endpoint.secret,
        web_base_url=server.url,
        proxy_base_url=proxy_server.url,
    )
    web_resources = await Resources.open(web_settings)
    late.app = create_app(Role.WEB, web_settings, web_resources)
    try:
        async with server, httpx.AsyncClient(base_url=sandbox_server.url) as sandbox:
            yield Console(server.url, web_settings, web_resources, proxy_server.url, sandbox)
    finally:
        await stripe.sdk.v1.webhook_endpoints.delete_async(endpoint.id)
        await web_resources.close()


@pytest.fixture(scope="module")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path_factory.mktemp("console-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nconsole screenshots: {folder}")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@dataclasses.dataclass
class Visit:
    """One browser profile (a context) and its tab, with what went wrong in it: CSP violations and script
    errors are failures of the page, whatever the test checks."""

    context: BrowserContext
    page: Page
    folder: Path
    problems: list[str]

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=self.folder / f"{name}.png", full_page=True)


async def open_visit(browser: Browser, console: Console, folder: Path, **options: Any) -> Visit:
    context = await browser.new_context(base_url=console.url, **options)
    context.set_default_timeout(10_000)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("dialog", lambda dialog: dialog.accept())
    return Visit(context, page, folder, problems)


@pytest.fixture
async def visit(browser: Browser, console: Console, screenshots: Path) -> AsyncIterator[Visit]:
    opened = await open_visit(browser, console, screenshots)
    yield opened
    await opened.context.close()
    assert opened.problems == []


@pytest.fixture
async def phone(browser: Browser, console: Console, screenshots: Path) -> AsyncIterator[Visit]:
    opened = await open_visit(browser, console, screenshots, viewport=PHONE, is_mobile=True, has_touch=True)
    yield opened
    await opened.context.close()
    assert opened.problems == []


# --- helpers ----------------------------------------------------------------------------------------------


async def sign_up(page: Page, email: str | None = None, password: str = PASSWORD) -> str:
    address = email or new_email()
    await page.goto("/signup")
    await page.get_by_label("Name").fill("Ada Lovelace")
    await page.get_by_label("Email").fill(address)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url("**/console/plans")
    return address.lower()


async def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.goto("/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()


async def user_id_of(console: Console, email: str) -> uuid.UUID:
    async with console.resources.db.sessions() as session:
        user = await Accounts(console.settings).find_user(session, email)
    return user.id


async def pay(visit: Visit, plan: str, card: str) -> None:
    """From the plans page, through the sandbox's hosted Checkout page, with this card."""
    page = visit.page
    await page.get_by_role("button", name=f"Choose {plan}").click()
    await page.wait_for_url(re.compile(r".*/stripe/checkout/cs_.*"))
    await page.get_by_label("Card number").fill(card)
    await visit.shot(f"checkout-{plan.lower()}")
    await page.get_by_role("button", name="Pay").click()


async def create_key(page: Page, name: str) -> str:
    await page.goto("/console/keys")
    await page.get_by_label("Name").fill(name)
    await page.get_by_role("button", name="Create key").click()
    secret = (await page.locator("#new-key").inner_text()).strip()
    assert secret.startswith("pk_test_")
    return secret


@contextlib.asynccontextmanager
async def signal_codes_held(console: Console) -> AsyncIterator[None]:
    """The sandbox Telnyx keeps its webhooks, Signal's verification SMS among them, until the block ends."""
    assert (await console.sandbox.post("/telnyx/_control/webhooks", json={"mode": "hold"})).status_code == 200
    try:
        yield
    finally:
        await console.sandbox.post("/telnyx/_control/webhooks", json={"mode": "normal"})
        await console.sandbox.post("/telnyx/_control/webhooks/flush")


@contextlib.asynccontextmanager
async def number_orders_failing(console: Console) -> AsyncIterator[None]:
    """The sandbox Telnyx's number orders end in ``failure`` until the block ends."""
    failing = await console.sandbox.post("/telnyx/_control/number_orders", json={"outcome": "failure"})
    assert failing.status_code == 200
    try:
        yield
    finally:
        await console.sandbox.post("/telnyx/_control/number_orders", json={"outcome": "success"})


async def mark_document(page: Page) -> None:
    await page.evaluate("() => { window.sameDocument = true; }")


async def same_document(page: Page) -> bool:
    """The page was not reloaded nor left since ``mark_document``."""
    return bool(await page.evaluate("() => window.sameDocument === true"))


def part(page: Page, name: str) -> Any:
    """A part of the identity (mailbox, number, messaging, signal) as the identity pages show it."""
    return page.locator(f"[data-part={name}]")


async def cookie_value(context: BrowserContext, name: str) -> str | None:
    return next((c["value"] for c in await context.cookies() if c["name"] == name), None)


async def operator_visit(browser: Browser, console: Console, folder: Path) -> Visit:
    """A new operator, logged in in a browser profile of their own (the caller closes its context)."""
    operator = new_email().lower()
    async with console.resources.unit_of_work() as uow:
        await Accounts(console.settings).make_admin(uow, operator, PASSWORD, Client("127.0.0.1", "test"))
        await uow.commit()
    admin = await open_visit(browser, console, folder)
    await log_in(admin.page, operator)
    await expect(admin.page).to_have_url(re.compile(r"/console$"))
    return admin


async def ask_claude(console: Console, key: str) -> anthropic.types.Message:
    """What a Dex does with its key: the official SDK, pointed at our proxy."""
    client = anthropic.AsyncAnthropic(base_url=console.proxy_url, api_key=key, max_retries=0)
    return await client.messages.create(
        model=MODEL, max_tokens=30, messages=[{"role": "user", "content": "Hello, Dex here."}]
    )


# --- the front door ---------------------------------------------------------------------------------------


async def test_a_new_visitor_subscribes_makes_a_key_and_sees_its_usage(
    phone: Visit, console: Console
) -> None:
    page = phone.page
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login$"))
    await phone.shot("login")
    await page.get_by_role("link", name="Create an account").click()
    await phone.shot("signup")
    email = await sign_up(page)

    plans = page.locator(".plan")
    await expect(plans.filter(has_text="Basic")).to_contain_text("$50.00/month")
    await expect(plans.filter(has_text="Basic")).to_contain_text("5M tokens")
    await expect(plans.filter(has_text="Pro")).to_contain_text("$250.00/month")
    await expect(plans.filter(has_text="Pro")).to_contain_text("30M tokens")
    await phone.shot("plans")

    async with signal_codes_held(console):  # Signal's code SMS waits: provisioning is seen under way
        await pay(phone, "Pro", GOOD_CARD)
        await page.wait_for_url("**/console/billing?checkout=success*")
        # The webhook reaches the worker in its own time; the page turns to the active plan by itself.
        await expect(page.locator(".status")).to_have_text("Active", timeout=20_000)
        await expect(page.locator(".facts")).to_contain_text("Pro")
        await expect(page.locator(".facts")).to_contain_text("Next invoice")
        await phone.shot("billing")

        await page.get_by_role("link", name="Overview").click()
        await page.get_by_role("link", name="See its progress").click()
        await expect(page).to_have_url(re.compile(r"/console/identity$"))
        await mark_document(page)
        headline = page.locator(".identity .headline .status")
        await expect(headline).to_have_text("Provisioning")
        await expect(part(page, "signal")).to_contain_text("Waiting for Signal's code by SMS", timeout=15_000)
        await expect(part(page, "mailbox")).to_contain_text("Created")
        await expect(part(page, "number")).to_contain_text("Bought")
        await expect(page.locator(".identity")).to_contain_text("Still to do: Signal.")
        await phone.shot("identity-provisioning")
    await expect(headline).to_have_text("Active", timeout=15_000)  # the code arrived: Signal is registered
    await expect(part(page, "signal")).to_have_text(re.compile(r"Signal\s+Registered"))
    await expect(page.locator(".identity")).not_to_contain_text("Still to do")
    assert await same_document(page)
    async with console.resources.db.sessions() as session:
        identity = await identities.get(session, await user_id_of(console, email))
    assert identity is not None and identity.workspace_email and identity.phone_number
    await expect(page.locator("#identity-mailbox")).to_have_text(identity.workspace_email)
    await expect(page.locator("#identity-number")).to_have_text(identity.phone_number)
    await phone.shot("identity")

    secret = await create_key(page, "dex at home")
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await phone.shot("key-created")
    await page.goto("/console/keys")
    await expect(page.locator("#new-key")).to_have_count(0)  # shown once
    await expect(page.locator(".key")).to_contain_text("dex at home")

    reply = await ask_claude(console, secret)
    assert reply.content and reply.usage.input_tokens > 0

    await page.goto("/console/usage")

    async def request_shown() -> bool:
        await page.reload()
        return await page.locator("table tbody tr", has_text=MODEL).count() == 1

    await eventually(request_shown, within=15, interval=0.5)
    row = page.locator("table tbody tr", has_text=MODEL)
    await expect(row.locator("td").nth(1)).to_have_text("1")
    await expect(row.locator("td").nth(2)).to_have_text(f"{reply.usage.input_tokens:,}")
    await expect(row.locator("td").nth(3)).to_have_text(f"{reply.usage.output_tokens:,}")
    used = reply.usage.input_tokens + reply.usage.output_tokens
    await expect(page.locator("svg.bar rect.seg-input")).to_have_count(1)
    today = page.locator("svg.days g", has=page.locator("rect.seg-input"))
    await expect(today).to_have_count(1)  # one day with requests; the period's other days are empty
    await expect(today.locator("title")).to_have_text(
        f"{datetime.now(UTC).date().isoformat()}: {used:,} tokens, 1 request"
    )
    await expect(page.locator("main")).to_contain_text(f"{used:,} of 30,000,000 used")
    await phone.shot("usage")

    await page.goto("/console/connect")
    settings = page.locator(".settings")
    await expect(settings).to_contain_text(console.proxy_url)
    await expect(settings).to_contain_text(console.url)
    await expect(settings).to_contain_text("dex at home")

    async def connection_confirmed() -> bool:
        await page.get_by_role("button", name="Check the connection").click()
        return await page.locator(".check-ok").count() == 4

    await eventually(connection_confirmed, within=15, interval=0.5)  # last use is recorded every few seconds
    await expect(page.locator(".checks")).to_contain_text("Pro is active")
    await phone.shot("connect")

    await page.goto("/console")
    await expect(page.locator(".steps .done")).to_have_count(4)
    await phone.shot("overview")

    await page.goto("/console/billing")
    await page.get_by_role("button", name="Cancel subscription").click()  # on Stripe's Customer Portal
    await page.wait_for_url(re.compile(r".*/stripe/portal/.*"))
    await phone.shot("portal")
    await page.get_by_role("button", name="Cancel at end of period").click()
    await page.wait_for_url("**/console/billing")

    async def cancellation_shown() -> bool:
        await page.reload()
        return "no further invoice" in await page.locator(".facts").inner_text()

    await eventually(cancellation_shown, within=15, interval=0.5)
    await expect(page.locator(".status")).to_have_text("Active")  # until the period ends
    await phone.shot("billing-cancelling")

    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(re.compile(r"/login\?notice=signed_out$"))
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/login\?next="))


async def test_a_declined_card_says_so_and_grants_nothing(visit: Visit, console: Console) -> None:
    page = visit.page
    email = await sign_up(page)
    await pay(visit, "Basic", FAILING_CARD)
    await expect(page.get_by_role("alert")).to_have_text("Your card was declined.")
    await visit.shot("checkout-declined")
    await page.get_by_role("link", name="Back").click()
    await page.wait_for_url("**/console/billing?checkout=cancelled")
    await expect(page.get_by_role("alert")).to_contain_text("No payment was taken")
    await expect(page.get_by_role("alert")).to_contain_text("card was declined")
    await expect(page.locator("main")).to_contain_text("No plan yet")
    await visit.shot("billing-declined")

    async with console.resources.db.sessions() as session:
        state = await billing.subscription_state(session, await user_id_of(console, email))
    assert state.status == "none"
    with pytest.raises(anthropic.APIStatusError) as refused:
        await ask_claude(console, await create_key(page, "dex"))
    assert refused.value.status_code == 402


async def test_a_key_is_rotated_with_a_grace_period_and_revoked_at_once(
    visit: Visit, console: Console
) -> None:
    page = visit.page
    await sign_up(page)
    old = await create_key(page, "dex")
    await page.get_by_role("button", name="Rotate").click()  # the confirmation dialog is accepted
    new = (await page.locator("#new-key").inner_text()).strip()
    assert new.startswith("pk_test_") and new != old
    await expect(page.locator(".secret")).to_contain_text("The key it replaces keeps working until")
    await expect(page.locator(".key")).to_have_count(2)
    rotated = page.locator(".key", has_text="works until")
    await expect(rotated).to_contain_text(old[:12])
    await visit.shot("key-rotated")

    await rotated.get_by_role("button", name="Revoke").click()
    await expect(page.get_by_role("status")).to_have_text(
        "The key was revoked. Requests with it are refused from now on."
    )
    await expect(page.locator(".key")).to_have_count(1)
    with pytest.raises(anthropic.AuthenticationError):
        await ask_claude(console, old)
    with pytest.raises(anthropic.APIStatusError) as no_plan:  # the new key is good; the account has no plan
        await ask_claude(console, new)
    assert no_plan.value.status_code == 402


# --- accounts ---------------------------------------------------------------------------------------------


async def test_email_links_verify_and_reset_and_a_taken_address_is_refused(
    visit: Visit, console: Console
) -> None:
    page = visit.page
    email = await sign_up(page)
    token = await link_in_mail(email, "/console/verify-email")
    await page.goto(f"/console/verify-email?token={token}")
    await page.get_by_role("button", name="Confirm my address").click()
    await expect(page.get_by_role("status")).to_contain_text("your address is confirmed")
    await visit.shot("email-verified")
    await page.get_by_role("button", name="Log out").click()
    await page.goto("/signup")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("another long passphrase")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("alert")).to_have_text("An account with that email already exists.")

    await page.goto("/login")
    await page.get_by_role("link", name="Forgot your password?").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_role("button", name="Email me a link").click()
    await expect(page.get_by_role("status")).to_contain_text("is on its way")
    await visit.shot("forgot-password")
    token = await link_in_mail(email, "/console/reset-password")
    await page.goto(f"/console/reset-password?token={token}")
    await page.get_by_label("New password").fill("a brand new passphrase")
    await visit.shot("reset-password")
    await page.get_by_role("button", name="Set the new password").click()
    await expect(page.get_by_role("status")).to_contain_text("Your password was changed")

    await log_in(page, email)  # the old one
    await expect(page.get_by_role("alert")).to_have_text("The email or password is not right.")
    await log_in(page, email, "a brand new passphrase")
    await expect(page).to_have_url(re.compile(r"/console$"))


async def test_logins_are_throttled_like_the_api(visit: Visit, console: Console) -> None:
    page = visit.page
    email = await sign_up(page)
    await page.get_by_role("button", name="Log out").click()
    for _ in range(console.settings.login_attempts_per_account):
        await log_in(page, email, "not the password")
        await expect(page.get_by_role("alert")).to_have_text("The email or password is not right.")
    async with page.expect_response(
        lambda r: r.url.endswith("/login") and r.request.method == "POST"
    ) as sent:
        await log_in(page, email)
    refused = await sent.value
    assert refused.status == 429 and int(refused.headers["retry-after"]) > 0
    await expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
    await visit.shot("login-throttled")
    await console.resources.redis.delete("poindexter:login-failures:ip:127.0.0.1")


async def test_the_session_is_the_apis_refreshed_once_and_ended_by_reuse_or_logout(
    visit: Visit, console: Console
) -> None:
    page, context = visit.page, visit.context

    async def cookie(name: str) -> str | None:
        return await cookie_value(context, name)

    async def put_back(name: str, value: str) -> None:
        await context.add_cookies([{"name": name, "value": value, "url": console.url}])

    email = await sign_up(page)
    first_refresh = await cookie("pdx_refresh")
    assert first_refresh
    await context.clear_cookies(name="pdx_access")  # as the browser does when the access token's time is up
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/console/keys$"))
    renewed = await cookie("pdx_refresh")
    assert await cookie("pdx_access") and renewed not in (None, first_refresh)  # rotated

    await context.clear_cookies(name="pdx_access")
    async with console.resources.db.sessions() as session:
        user_id = (await session.execute(select(User.id).where(User.email == email))).scalar_one()
    await rotated_a_minute_ago(console.resources, str(user_id))
    await put_back("pdx_refresh", first_refresh)  # a used refresh token, replayed: the whole session ends
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/login\?next=%2Fconsole%2Fkeys$"))
    assert renewed
    await put_back("pdx_refresh", renewed)
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/login\?next="))

    await log_in(page, email)
    await expect(page).to_have_url(re.compile(r"/console$"))
    access = await cookie("pdx_access")
    assert access
    await page.get_by_role("button", name="Log out").click()
    await put_back("pdx_access", access)  # logout ends the session at once, not when the token expires
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/login\?next="))


async def test_a_page_that_polls_keeps_the_session_it_renews(visit: Visit, console: Console) -> None:
    page, context = visit.page, visit.context
    await sign_up(page)
    await page.goto("/console/billing?checkout=success")  # no plan yet: it polls for Stripe's confirmation
    first_refresh = await cookie_value(context, "pdx_refresh")
    await context.clear_cookies(name="pdx_access")  # the access token's time is up between two polls

    async def renewed() -> bool:  # by a poll's answer, or the next poll would present a used refresh token
        return await cookie_value(context, "pdx_refresh") not in (None, first_refresh)

    await eventually(renewed, within=5, interval=0.1)
    async with page.expect_response(lambda r: r.url.endswith("/console/billing/status")) as polled:
        pass
    assert (await polled.value).status == 200
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/console/keys$"))


async def test_an_error_page_keeps_the_session_it_renews(visit: Visit, console: Console) -> None:
    page, context = visit.page, visit.context
    await sign_up(page)
    await page.goto("/console/keys")
    token = await page.locator("input[name=_csrf_token]").first.get_attribute("value")
    assert token

    for refused_with, ask in (
        (404, lambda: page.request.post(f"/console/keys/{uuid.uuid4()}/revoke", form={"_csrf_token": token})),
        (403, lambda: page.request.get("/console/admin/users")),
    ):
        used = await cookie_value(context, "pdx_refresh")
        await context.clear_cookies(name="pdx_access")  # its time is up: this request renews the session
        assert (await ask()).status == refused_with
        assert await cookie_value(context, "pdx_refresh") not in (None, used)
    await page.goto("/console/keys")  # had the renewal been dropped, this would present a used refresh token
    await expect(page).to_have_url(re.compile(r"/console/keys$"))


# --- security ---------------------------------------------------------------------------------------------


async def test_a_form_posted_without_its_csrf_token_is_refused(visit: Visit, console: Console) -> None:
    page = visit.page
    await sign_up(page)
    await page.goto("/console/keys")
    token = await page.locator("input[name=_csrf_token]").first.get_attribute("value")
    assert token

    for form in ({"name": "forged"}, {"name": "forged", "_csrf_token": "0" * 128}):
        refused = await page.request.post("/console/keys", form=form, max_redirects=0)
        assert refused.status == 403
        assert "This form could not be accepted" in await refused.text()
        assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]
    accepted = await page.request.post("/console/keys", form={"name": "genuine", "_csrf_token": token})
    assert accepted.status == 201

    await page.goto("/console/keys")
    await expect(page.locator(".key")).to_have_count(1)
    await expect(page.locator(".key")).to_contain_text("genuine")
    await page.evaluate(
        """() => { const form = document.querySelector("form[action='/console/keys']");
                   form.querySelector("input[name=_csrf_token]").remove(); form.submit(); }"""
    )
    await expect(page.locator("h1")).to_have_text("This form could not be accepted")
    await visit.shot("csrf-refused")


async def test_pages_forbid_framing_and_inline_script(visit: Visit, console: Console) -> None:
    page = visit.page
    response = await page.goto("/login")
    assert response is not None
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert await page.locator("script:not([src])").count() == 0
    missing = await page.goto("/console/no-such-page")
    assert missing is not None and missing.status == 404
    await expect(page.locator("h1")).to_have_text("Not found")

    await sign_up(page)
    cookies = {c["name"]: c for c in await visit.context.cookies()}
    for name in ("pdx_access", "pdx_refresh", "pdx_csrf"):
        assert cookies[name]["httpOnly"] and cookies[name]["sameSite"] == "Lax"
        assert not cookies[name]["secure"]  # plain HTTP in tests; Secure (and __Host-) in production

    framing = await visit.context.new_page()
    await framing.set_content(f'<iframe src="{console.url}/login"></iframe>')
    frame = framing.frames[-1]
    assert await frame.locator("input[name=password]").count() == 0


async def test_admin_pages_are_for_operators_only(
    visit: Visit, browser: Browser, console: Console, screenshots: Path
) -> None:
    page = visit.page
    member = await sign_up(page)
    member_id = await user_id_of(console, member)
    admin_pages = ("users", f"users/{member_id}", "audit", "provisioning")
    for path in admin_pages:
        response = await page.goto(f"/console/admin/{path}")
        assert response is not None and response.status == 403
        await expect(page.locator("main")).to_contain_text("These pages are for operators only.")
    await visit.shot("admin-forbidden")
    await page.goto("/console/keys")
    token = await page.locator("input[name=_csrf_token]").first.get_attribute("value")
    assert token
    retry = await page.request.post(
        f"/console/admin/provisioning/{member_id}/retry", form={"_csrf_token": token}, max_redirects=0
    )
    assert retry.status == 403
    await expect(page.get_by_role("link", name="Admin")).to_have_count(0)

    admin = await operator_visit(browser, console, screenshots)
    try:
        await admin.page.get_by_role("link", name="Admin").click()
        await admin.page.get_by_label("Search email or name").fill(member.split("@")[0])
        await admin.page.get_by_role("button", name="Search").click()
        await expect(admin.page.locator("tbody tr")).to_have_count(1)
        await admin.shot("admin-users")
        await admin.page.get_by_role("link", name=member).click()
        await expect(admin.page.locator("h1")).to_have_text(member)
        await expect(admin.page.locator("main")).to_contain_text("auth.registered")
        await admin.shot("admin-user")
        await admin.page.get_by_role("link", name="The whole audit log").click()
        await expect(admin.page.locator("tbody")).to_contain_text("auth.login")
        await admin.shot("admin-audit")
        for listing in ("users", "audit"):  # a page past PostgreSQL's bigint offset: refused, not a 500
            assert (await admin.page.request.get(f"/console/admin/{listing}?page={10**18}")).status == 400
        assert admin.problems == []
    finally:
        await admin.context.close()


async def test_an_operator_retries_a_failed_provisioning_from_the_console_and_it_ends_active(
    visit: Visit, browser: Browser, console: Console, screenshots: Path
) -> None:
    page = visit.page
    member = await sign_up(page)
    member_id = await user_id_of(console, member)
    await page.goto("/console/identity")
    await expect(page.locator(".identity .headline .status")).to_have_text("Not started")
    await expect(page.get_by_role("link", name="Choose a plan")).to_be_visible()
    await visit.shot("identity-no-plan")

    async with number_orders_failing(console):
        async with console.resources.unit_of_work() as uow:  # as an operator grants a plan from the CLI
            await billing.grant_complimentary(uow, member_id, "basic")
            await uow.commit()
        await page.reload()
        await expect(page.locator(".identity .headline .status")).to_have_text("Failed", timeout=15_000)
    await expect(page.locator(".identity .next")).to_contain_text("Our team has been alerted and will retry")
    await expect(part(page, "number")).to_contain_text("Failed")
    await expect(part(page, "mailbox")).to_contain_text("Created")
    await visit.shot("identity-failed")

    admin = await operator_visit(browser, console, screenshots)
    try:
        operator_id = await user_id_of(console, await admin.page.locator(".who").inner_text())
        await admin.page.get_by_role("link", name="Admin").click()
        await admin.page.get_by_role("link", name="Provisioning").click()
        row = admin.page.locator(f"tr[data-user='{member_id}']")
        await expect(row).to_contain_text(member)
        await expect(row).to_contain_text("Failed at await_number")
        await admin.shot("admin-provisioning")
        await row.get_by_role("button", name="Retry").click()
        await expect(admin.page.get_by_role("status")).to_contain_text("Provisioning starts again")
        await expect(row).to_have_count(0)  # under way again: nothing to look at

        await admin.page.goto(f"/console/admin/users/{member_id}")

        async def active() -> bool:
            await admin.page.reload()
            return await admin.page.locator(".headline .status").first.inner_text() == "Active"

        await eventually(active, within=20, interval=0.5)
        await expect(part(admin.page, "signal")).to_contain_text("Registered")
        retried = admin.page.locator("tbody tr", has_text="identity.provisioning_requested")
        await expect(retried).to_have_count(2)  # the plan's grant, then the operator's retry
        await expect(retried.filter(has=admin.page.locator(f"a[href$='{operator_id}']"))).to_have_count(1)
        await admin.shot("admin-user-identity")
        assert admin.problems == []
    finally:
        await admin.context.close()
    await page.reload()
    await expect(page.locator(".identity .headline .status")).to_have_text("Active")
