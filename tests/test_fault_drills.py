"""Fault drills: the real processes under a bounded load, broken in turn, then audited for anything lost.

The system (``drills_system.DrillSystem``) is every role as a ``python -m poindexter_cloud serve`` process,
the sandbox providers in a process of their own, and a PostgreSQL and a Valkey belonging to the drills
alone. Three subscribers who paid through the sandbox's Stripe Checkout keep AI requests going through the
proxy (the anthropic SDK, and streams over httpx) for the whole run, and each drill has new subscribers pay
through Checkout (Stripe's webhooks, then provisioning, whose Signal code comes back as Telnyx's webhook)
around its fault: Redis stopped for ten seconds, PostgreSQL for a minute, SIGKILL of the proxy, the worker
and the web role (each started again at once, as a supervisor would), the sandbox providers answering 500s
and timing out. Nobody helps the system recover. The audit then compares what the clients saw with what
was stored:

* every AI request a client saw complete (status 200, by its ``request-id``) is metered exactly once in
  usage_events;
* every event the sandbox Stripe emitted was taken by the web role (a 2xx in the sandbox's deliveries), and
  every event either provider delivered (Stripe's, Telnyx's ``message.received``) is stored in
  webhook_events, marked processed, with exactly one processing job, completed;
* every subscriber who paid has one identity, active with Signal registered, with exactly one Workspace
  user and one held Telnyx number as the sandbox's Directory and Telnyx APIs list them, and no user or
  number there is nobody's.

A drill is "back" once every role answers ``/readyz`` again, and "settled" once its own clients' work is
all stored and done. The next drill starts once the last one is back, so a drill's settling may go on
through the next drill's fault (Redis goes first: its outbox leftovers wait for the once-a-minute sweep).
Stripe retries webhooks for days; the sandbox's schedule is set to outlast the outages, as Stripe's would.
Telnyx tries a URL three times, then gives up (here 2 s, then 4 s apart); an SMS it gave up on is listed,
not counted as lost: no receiver can take what is not sent again (a Signal code is asked for again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import psycopg
import pytest
import telnyx
from google.oauth2 import service_account
from googleapiclient.discovery import build

from conftest import google_call
from drills_system import DrillSystem
from poindexter_cloud.billing import catalog
from poindexter_cloud.billing.stripe_adapter import StripeAdapter

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MODEL = "claude-sonnet-4-5"
GOOD_CARD = "4242424242424242"
PASSWORD = "correct horse battery"
TELNYX_KEY = "KEYsandbox"
WORKSPACE_DOMAIN = "dex.sandbox.test"  # the sandbox Workspace's default domain, and ours
IDENTITY_EXTERNAL_ID = "poindexter_identity"
HELD_NUMBER = ("active", "purchase-pending")

AI_CLIENTS = 3
AI_HEADERS = {"x-sandbox-latency-ms": "20"}
AI_PAUSE_SECONDS = 0.1  # each client's pause between requests: the load is bounded
REDIS_OUTAGE_SECONDS = 10.0
POSTGRES_OUTAGE_SECONDS = 60.0
BACK_SECONDS = 60.0  # the longest the roles may take to answer /readyz again
# The longest a drill's own work may take to settle once it is back. The next drill starts at once, so a
# drill's recovery can sit out the next one's fault (Redis' work waits for the PostgreSQL minute), then the
# minute crons that resume provisioning and Signal registrations, on a machine that may run at a third of
# its speed.
SETTLE_SECONDS = 240.0
QUIET_SECONDS = 45.0  # the longest the providers' last deliveries (Telnyx: up to 30 s of retries) may take
PATIENCE_SECONDS = 150.0  # a client retries a failing step this long

# Stripe retries a failed delivery for days; the sandbox's default gives up after 7 s. These attempts,
# 1 s doubling (1, 2, 4 ... 128 s apart), outlast the one-minute outage.
STRIPE_RETRIES = {"mode": "normal", "retry_base_seconds": 1, "max_attempts": 9}
# Telnyx tries a URL three times; spaced 8 s and 16 s apart they outlast a web role's restart, which takes
# 4 s on a quiet machine and three times that on a busy one.
TELNYX_RETRIES = {"mode": "normal", "retry_base_seconds": 8}

BASELINE = "baseline"  # the drill with no fault: the subscribers and AI load the others start from

# The webhooks the audit follows: provider -> the event types we act on (None: all).
WEBHOOKS: dict[str, frozenset[str] | None] = {"stripe": None, "telnyx": frozenset({"message.received"})}
Event = tuple[str, str]  # (provider, event id)


# --- what the clients saw --------------------------------------------------------------------------------


@dataclasses.dataclass
class AiCall:
    request_id: str | None
    status: int | None  # None: the connection failed
    completed: bool  # a 200 whose whole answer (a stream: to message_stop) reached the client


@dataclasses.dataclass
class Subscriber:
    email: str
    user_id: str = ""
    key: str = ""
    ready_to_pay: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    paid: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


@dataclasses.dataclass
class Drill:
    name: str
    injected: str
    calls: list[AiCall] = dataclasses.field(default_factory=list)
    subscribers: list[Subscriber] = dataclasses.field(default_factory=list)
    checkouts: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    events: set[Event] = dataclasses.field(default_factory=set)  # webhooks first sent meanwhile
    back_after: float | None = None  # seconds from the fault's end until every role was ready
    settled_after: float | None = None  # ... until the drill's own work was stored and done
    waiting_for: str | None = None  # what of it was outstanding when last looked at

    @property
    def faulted(self) -> bool:
        return self.name != BASELINE

    def completed(self) -> list[str]:
        """The request ids of the AI requests its clients saw complete."""
        return [call.request_id for call in self.calls if call.completed and call.request_id]


class Load:
    """The clients: AI requests through the proxy, and subscribers paying through Checkout. Each outcome
    is recorded on the drill running when it began."""

    def __init__(self, system: DrillSystem, web: httpx.AsyncClient, sandbox: httpx.AsyncClient) -> None:
        self.system = system
        self.web = web
        self.sandbox = sandbox
        self.drills: list[Drill] = []
        self.stopping = asyncio.Event()

    @property
    def drill(self) -> Drill:
        return self.drills[-1]

    async def ai_client(self, key: str, stream: bool) -> None:
        proxy = self.system.proxy.url
        async with (
            anthropic.AsyncAnthropic(base_url=proxy, api_key=key, max_retries=0, timeout=10) as sdk,
            httpx.AsyncClient(base_url=proxy, timeout=10) as http,
        ):
            while not self.stopping.is_set():
                drill = self.drill
                call = await (self.stream_once(http, key) if stream else self.ask_once(sdk))
                drill.calls.append(call)
                await asyncio.sleep(AI_PAUSE_SECONDS)

    async def ask_once(self, sdk: anthropic.AsyncAnthropic) -> AiCall:
        try:
            raw = await sdk.messages.with_raw_response.create(
                model=MODEL,
                max_tokens=12,
                messages=[{"role": "user", "content": "count this request once"}],
                extra_headers=AI_HEADERS,
            )
        except anthropic.APIStatusError as error:
            return AiCall(error.response.headers.get("request-id"), error.status_code, False)
        except anthropic.APIConnectionError:
            return AiCall(None, None, False)
        message = await raw.parse()
        return AiCall(raw.headers.get("request-id"), raw.status_code, bool(message.content))

    async def stream_once(self, http: httpx.AsyncClient, key: str) -> AiCall:
        body = {
            "model": MODEL,
            "max_tokens": 12,
            "stream": True,
            "messages": [{"role": "user", "content": "stream this request once"}],
        }
        headers = {**AI_HEADERS, "x-api-key": key, "anthropic-version": "2023-06-01"}
        try:
            async with http.stream("POST", "/v1/messages", json=body, headers=headers) as response:
                text = await response.aread()
        except httpx.HTTPError:
            return AiCall(None, None, False)
        completed = response.status_code == 200 and b"event: message_stop" in text
        return AiCall(response.headers.get("request-id"), response.status_code, completed)

    def checkout(self, plan: str = "basic", pay_when: asyncio.Event | None = None) -> Subscriber:
        """A new subscriber signs up and pays through Checkout, in the background; ``pay_when`` holds the
        payment (on the sandbox's hosted page) until it is set."""
        subscriber = Subscriber(f"drill.{uuid.uuid4().hex[:10]}@example.com")
        self.drill.subscribers.append(subscriber)
        self.drill.checkouts.append(asyncio.create_task(self.subscribe(subscriber, plan, pay_when)))
        return subscriber

    async def subscribe(self, subscriber: Subscriber, plan: str, pay_when: asyncio.Event | None) -> None:
        credentials = {"email": subscriber.email, "password": PASSWORD}
        tokens = await patiently(lambda: self.web.post("/v1/auth/register", json=credentials), 201, 409)
        if tokens.status_code == 409:  # our earlier try was taken but its answer lost
            tokens = await patiently(lambda: self.web.post("/v1/auth/login", json=credentials), 200)
        subscriber.user_id = tokens.json()["user_id"]
        bearer = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        key = await patiently(
            lambda: self.web.post("/v1/api-keys/", json={"name": "dex"}, headers=bearer), 201
        )
        subscriber.key = key.json()["key"]
        started = await patiently(
            lambda: self.web.post("/v1/billing/subscribe", json={"plan": plan}, headers=bearer), 200
        )
        subscriber.ready_to_pay.set()
        if pay_when is not None:
            await pay_when.wait()
        url = started.json()["url"]
        await patiently(lambda: self.sandbox.post(url, data={"card_number": GOOD_CARD}), 303)
        subscriber.paid.set()


async def patiently(
    send: Callable[[], Awaitable[httpx.Response]], *wanted: int, within: float = PATIENCE_SECONDS
) -> httpx.Response:
    """What a client does while the service is down: try again until one of the ``wanted`` answers."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = await send()
            if response.status_code in wanted:
                return response
            assert response.status_code >= 500 or response.status_code == 429, response.text
        assert time.monotonic() < deadline, "the service did not come back for a client"
        await asyncio.sleep(0.5)


# --- what was stored, and what the providers say happened --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Processing:
    processed: bool  # processed_at is set
    jobs: int  # its processing jobs in job_history
    completed: int  # ... of which completed

    @property
    def done(self) -> bool:
        return self.processed and self.completed > 0


NOT_STORED = Processing(False, 0, 0)


class Ledger:
    """What the system stored (read from its database) and what the sandbox's providers say happened."""

    def __init__(self, system: DrillSystem, sandbox: httpx.AsyncClient, tx: telnyx.AsyncTelnyx) -> None:
        self.system = system
        self.sandbox = sandbox
        self.telnyx = tx
        self.directory: Any = None

    async def metered(self, request_ids: list[str]) -> Counter[str]:
        """request id -> its usage_events rows with status 200."""
        rows = await self.system.query(
            "SELECT request_id FROM usage_events WHERE status = 200 AND request_id = ANY(%s)", request_ids
        )
        return Counter(row[0] for row in rows)

    async def deliveries(self) -> tuple[set[Event], set[Event]]:
        """(the webhook events the sandbox's providers tried to deliver, those the web role took with a
        2xx), from the sandbox's own delivery logs."""
        tried: set[Event] = set()
        taken: set[Event] = set()
        for provider, types in WEBHOOKS.items():
            log = (await self.sandbox.get(f"/{provider}/_control/deliveries")).json()["deliveries"]
            for delivery in log:
                if types is None or delivery["type"] in types:
                    tried.add((provider, delivery["event"]))
                    if delivery["status"] is not None and 200 <= delivery["status"] < 300:
                        taken.add((provider, delivery["event"]))
        return tried, taken

    async def quiet(self) -> bool:
        """Neither provider has a delivery queued or waiting for a retry."""
        for provider in WEBHOOKS:
            if not (await self.sandbox.get(f"/{provider}/_control/deliveries")).json()["idle"]:
                return False
        return True

    async def processing(self) -> dict[Event, Processing]:
        """Every stored webhook event: processed or not, and its jobs (``process_<provider>_event``)."""
        rows = await self.system.query(
            """
            SELECT w.provider, w.event_id, w.processed_at IS NOT NULL, count(j.id),
                   count(j.id) FILTER (WHERE j.status = 'completed')
            FROM webhook_events w
            LEFT JOIN job_history j
              ON j.job_type = 'process_' || w.provider || '_event' AND j.payload ->> 'event_id' = w.event_id
            GROUP BY 1, 2, 3
            """
        )
        return {(row[0], row[1]): Processing(row[2], row[3], row[4]) for row in rows}

    async def identities(self) -> dict[str, dict[str, Any]]:
        """user id -> its identity."""
        rows = await self.system.query("SELECT user_id::text, id::text, status, signal_state FROM identities")
        return {row[0]: {"id": row[1], "status": row[2], "signal": row[3]} for row in rows}

    async def workspace_users(self) -> Counter[str]:
        """identity id -> the Workspace users carrying it, as the sandbox's Directory API lists them."""
        if self.directory is None:
            info = (await self.sandbox.get("/google/_control/service-account")).json()
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=["https://www.googleapis.com/auth/admin.directory.user"]
            ).with_subject(f"admin@{WORKSPACE_DOMAIN}")
            self.directory = build(
                "admin",
                "directory_v1",
                credentials=credentials,
                static_discovery=True,
                client_options={"api_endpoint": f"{self.system.sandbox_url}/google/"},
            )
        request = self.directory.users().list(domain=WORKSPACE_DOMAIN, maxResults=500)
        page = await google_call(request)
        assert not page.get("nextPageToken"), "more Workspace users than one page"
        return Counter(
            external["value"]
            for user in page.get("users", [])
            for external in user.get("externalIds", [])
            if external.get("customType") == IDENTITY_EXTERNAL_ID
        )

    async def held_numbers(self) -> Counter[str]:
        """identity id (the customer reference) -> the numbers held under it, as the Telnyx API lists them."""
        held: Counter[str] = Counter()
        async for number in self.telnyx.phone_numbers.list(page_size=250):
            if number.status in HELD_NUMBER:
                held[str(number.customer_reference)] += 1
        return held


def provisioned(identity: dict[str, Any] | None) -> bool:
    return identity is not None and identity["status"] == "active" and identity["signal"] == "registered"


async def outstanding(drill: Drill, ledger: Ledger) -> str | None:
    """What of the drill's own work is not stored and done yet (None: it has settled): its checkouts paid,
    its completed AI requests metered, its webhooks taken (Stripe's) and processed, its subscribers
    provisioned."""
    if not all(task.done() for task in drill.checkouts):
        return "checkouts"
    if failed := [t.exception() for t in drill.checkouts if not t.cancelled() and t.exception()]:
        return f"a checkout that failed: {failed[0]!r}"
    try:
        metered = await ledger.metered(drill.completed())
        if unmetered := [r for r in drill.completed() if metered[r] == 0]:
            return f"{len(unmetered)} AI requests to meter"
        _, taken = await ledger.deliveries()
        if untaken := [e for e in drill.events if e[0] == "stripe" and e not in taken]:
            return f"{len(untaken)} Stripe events to deliver"
        processing = await ledger.processing()
        if unprocessed := [e for e in drill.events & taken if not processing.get(e, NOT_STORED).done]:
            return f"{len(unprocessed)} webhook events to process"
        identities = await ledger.identities()
    except psycopg.OperationalError:
        return "the database"
    if unready := [s for s in drill.subscribers if not provisioned(identities.get(s.user_id))]:
        return f"{len(unready)} identities to provision"
    return None


@dataclasses.dataclass
class Found:
    """One drill's audit: what its clients saw against what was stored."""

    ai_completed: int = 0
    ai_lost: int = 0
    ai_twice: int = 0
    events: int = 0
    events_lost: int = 0
    events_twice: int = 0
    given_up: int = 0  # Telnyx deliveries that never got a 2xx (Telnyx does not send them again)
    identities: int = 0
    identities_missing: int = 0
    identities_twice: int = 0
    details: list[str] = dataclasses.field(default_factory=list)  # what exactly was lost or doubled

    @property
    def lost(self) -> int:
        return self.ai_lost + self.events_lost + self.identities_missing

    @property
    def twice(self) -> int:
        return self.ai_twice + self.events_twice + self.identities_twice


async def audit(drill: Drill, ledger: Ledger, stored: dict[str, Any]) -> Found:
    """Count what the drill's clients saw but the system lost, or counted twice."""
    found = Found(ai_completed=len(drill.completed()), events=len(drill.events))
    metered = await ledger.metered(drill.completed())
    for request_id in drill.completed():
        if metered[request_id] != 1:
            found.ai_lost += int(metered[request_id] == 0)
            found.ai_twice += int(metered[request_id] > 1)
            found.details.append(f"AI request {request_id} metered {metered[request_id]} times")
    for provider, event_id in sorted(drill.events):
        processing = stored["processing"].get((provider, event_id), NOT_STORED)
        taken = (provider, event_id) in stored["taken"]
        if not taken and provider == "telnyx":
            found.given_up += 1
            found.details.append(f"telnyx {event_id}: Telnyx gave up on it (not counted as lost)")
        elif not taken or not processing.done:
            found.events_lost += 1
            found.details.append(f"{provider} {event_id}: taken {taken}, {processing}")
        elif processing.jobs > 1:
            found.events_twice += 1
            found.details.append(f"{provider} {event_id}: {processing}")
    for subscriber in drill.subscribers:
        found.identities += 1
        identity = stored["identities"].get(subscriber.user_id)
        made = (stored["users"][identity["id"]], stored["numbers"][identity["id"]]) if identity else (0, 0)
        found.identities_missing += int(not provisioned(identity) or 0 in made)
        found.identities_twice += int(max(made) > 1)
        if not provisioned(identity) or made != (1, 1):
            found.details.append(
                f"{subscriber.email}: identity {identity}, Workspace users {made[0]}, numbers {made[1]}"
            )
    return found


def table(drills: list[Drill], results: list[Found], orphans: int) -> str:
    head = (
        f"{'drill':<15} {'injected':<66} {'back':>6} {'settled':>8} "
        f"{'AI 200s':>8} {'events':>7} {'ids':>4} {'lost':>5} {'twice':>6}"
    )
    rule = "-" * len(head)
    lines = ["", "fault drills: what was injected, and what was lost", head, rule]

    def seconds(drill: Drill, value: float | None) -> str:
        if drill.faulted:
            return "never" if value is None else f"{value:.1f}s"
        return "-"

    for drill, r in zip(drills, results, strict=True):
        lines.append(
            f"{drill.name:<15} {drill.injected:<66} {seconds(drill, drill.back_after):>6} "
            f"{seconds(drill, drill.settled_after):>8} {r.ai_completed:>8} {r.events:>7} "
            f"{r.identities:>4} {r.lost:>5} {r.twice:>6}"
        )
    lines.append(rule)
    lines += [f"  {d.name}: never settled, waiting for {d.waiting_for}" for d in drills if d.waiting_for]
    lines += [f"  {d.name}: {detail}" for d, r in zip(drills, results, strict=True) for detail in r.details]
    lines += [
        f"lost: {sum(r.lost for r in results)} (AI requests {sum(r.ai_lost for r in results)}, webhook "
        f"events {sum(r.events_lost for r in results)}, identities "
        f"{sum(r.identities_missing for r in results)})",
        f"counted or made twice: {sum(r.twice for r in results)}; Workspace users or numbers nobody owns: "
        f"{orphans}; Telnyx deliveries given up on (not lost): {sum(r.given_up for r in results)}",
    ]
    return "\n".join(lines)


# --- the drills -------------------------------------------------------------------------------------------


class Drills:
    """Runs the drills in turn over one running system and one load."""

    def __init__(self, system: DrillSystem, load: Load, ledger: Ledger) -> None:
        self.system = system
        self.load = load
        self.ledger = ledger
        self.watchers: list[asyncio.Task[None]] = []

    def begin(self, name: str, injected: str) -> Drill:
        drill = Drill(name, injected)
        self.load.drills.append(drill)
        return drill

    async def assign_events(self, drill: Drill) -> None:
        """The webhooks first sent while ``drill`` was the current one are its."""
        tried, _ = await self.ledger.deliveries()
        drill.events |= tried - set().union(*(d.events for d in self.load.drills))

    async def run(self, name: str, injected: str, inject: Callable[[], Awaitable[None]]) -> None:
        await self.assign_events(self.load.drill)
        drill = self.begin(name, injected)
        await inject()
        cleared = time.monotonic()
        await asyncio.gather(*(child.wait_ready(within=BACK_SECONDS) for child in self.system.roles.values()))
        drill.back_after = time.monotonic() - cleared
        self.watchers.append(asyncio.create_task(self.watch(drill, cleared)))

    async def watch(self, drill: Drill, cleared: float) -> None:
        while time.monotonic() < cleared + SETTLE_SECONDS:
            if drill is self.load.drill:
                await self.assign_events(drill)
            drill.waiting_for = await outstanding(drill, self.ledger)
            if drill.waiting_for is None:
                drill.settled_after = time.monotonic() - cleared
                return
            await asyncio.sleep(0.5)

    # The faults.

    async def outage(self, stop: Callable[[], None], start: Callable[[], None], seconds: float) -> None:
        """Stop a server just after a payment (its webhooks and provisioning in flight), have a subscriber
        pay on Stripe's page and another sign up while it is down, start it again after ``seconds``."""
        held = asyncio.Event()
        paying, before = self.load.checkout(pay_when=held), self.load.checkout()
        await asyncio.gather(paying.ready_to_pay.wait(), before.paid.wait())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(stop)
        self.load.checkout()  # signs up during the outage: its client retries until it is over
        await asyncio.sleep(2)
        held.set()  # Stripe's webhooks for this payment arrive during the outage
        await asyncio.sleep(seconds - 2)
        await asyncio.to_thread(start)

    async def redis_outage(self) -> None:
        await self.outage(self.system.redis.stop, self.system.redis.start, REDIS_OUTAGE_SECONDS)

    async def postgres_outage(self) -> None:
        await self.outage(self.system.postgres.stop, self.system.postgres.start, POSTGRES_OUTAGE_SECONDS)

    async def kill_proxy(self) -> None:
        self.load.checkout()
        await asyncio.sleep(1.5)  # mid-burst
        self.system.proxy.kill()
        await self.system.restart(self.system.proxy)

    async def kill_worker(self) -> None:
        subscriber = self.load.checkout()
        await subscriber.paid.wait()
        deadline = time.monotonic() + 20
        while subscriber.user_id not in await self.ledger.identities():  # provisioning has begun
            assert time.monotonic() < deadline, "no provisioning began"
            await asyncio.sleep(0.05)
        self.system.worker.kill()  # its webhook jobs and provisioning in flight
        await asyncio.sleep(1)
        await self.system.restart(self.system.worker)

    async def kill_web(self) -> None:
        go = asyncio.Event()
        subscribers = [self.load.checkout(pay_when=go), self.load.checkout(pay_when=go)]
        await asyncio.gather(*(s.ready_to_pay.wait() for s in subscribers))
        go.set()
        await asyncio.gather(*(s.paid.wait() for s in subscribers))
        await asyncio.sleep(0.2)  # Stripe's webhooks in flight
        self.system.web.kill()
        await asyncio.sleep(1)
        await self.system.restart(self.system.web)

    async def providers_fail(self) -> None:
        """Each provider's next calls fail (the Stripe sandbox has no API faults: its webhooks come twice)."""
        sandbox = self.load.sandbox
        ai_faults = [
            {"status": 500, "count": 4},
            {"status": 529, "count": 2},
            {"delay_ms": 3000, "count": 2},  # past PROXY_READ_TIMEOUT_SECONDS: a time-out
            {"status": 500, "error_after_events": 2, "count": 1},  # a stream breaking half-way
        ]
        armed = [
            ("/anthropic/_control/faults", ai_faults),
            ("/google/_control/faults", {"api": "directory", "status": 503, "count": 1}),
            # The provider adapters give up on a call after 20 s: this one times out.
            ("/google/_control/faults", {"api": "directory", "delay_seconds": 21, "count": 1}),
            ("/telnyx/_control/faults", {"path": "/v2/number_orders", "method": "POST", "status": 500}),
            ("/stripe/_control/webhooks", {**STRIPE_RETRIES, "mode": "duplicate"}),
        ]
        for path, body in armed:
            assert (await sandbox.post(path, json=body)).status_code == 200, path
        subscribers = [self.load.checkout(), self.load.checkout()]
        await asyncio.gather(*(s.paid.wait() for s in subscribers))
        await asyncio.sleep(3)
        assert (await sandbox.post("/stripe/_control/webhooks", json=STRIPE_RETRIES)).status_code == 200

    async def faults_left(self) -> dict[str, Any]:
        """Injected faults nobody met (each drill's load should have met all of its own)."""
        left = {}
        for provider in ("anthropic", "google", "telnyx"):
            pending = (await self.load.sandbox.get(f"/{provider}/_control/faults")).json()["faults"]
            if pending:
                left[provider] = pending
        return left


# --- the test ---------------------------------------------------------------------------------------------


@pytest.fixture
async def system() -> AsyncIterator[DrillSystem]:
    """The system, in a folder of its own outside pytest's: a pytest session starting elsewhere on the
    machine resets the permissions of pytest's temporary tree, and PostgreSQL (run as another user when we
    are root) would lose its data directory. Kept after a failure, for the processes' logs."""
    running = DrillSystem(Path(tempfile.mkdtemp(prefix="poindexter-drills-")))
    try:
        await running.start()
        yield running
    finally:
        running.stop()
    if running.passed:
        shutil.rmtree(running.root, ignore_errors=True)


async def run_drills(drills: Drills) -> None:
    load = drills.load
    baseline = drills.begin(BASELINE, "none: three subscribers pay, AI load begins")
    users = [load.checkout(plan="pro") for _ in range(AI_CLIENTS)]
    await asyncio.gather(*baseline.checkouts)
    clients = [asyncio.create_task(load.ai_client(u.key, stream=i % 2 == 1)) for i, u in enumerate(users)]
    try:
        await asyncio.sleep(1)
        await drills.run("redis-stop", f"Redis stopped {REDIS_OUTAGE_SECONDS:.0f} s", drills.redis_outage)
        await drills.run(
            "postgres-stop", f"PostgreSQL stopped {POSTGRES_OUTAGE_SECONDS:.0f} s", drills.postgres_outage
        )
        await drills.run("proxy-kill", "SIGKILL proxy mid-burst, restarted", drills.kill_proxy)
        await drills.run(
            "worker-kill", "SIGKILL worker with webhooks/provisioning in flight", drills.kill_worker
        )
        await drills.run("web-kill", "SIGKILL web with Stripe webhooks in flight", drills.kill_web)
        await drills.run(
            "providers-fail",
            "AI 500/529/time-out/broken stream, Google 503/time-out, Telnyx 500",
            drills.providers_fail,
        )
        await asyncio.gather(*drills.watchers)
        for _ in range(int(QUIET_SECONDS / 0.5)):  # then the providers' last deliveries
            if await drills.ledger.quiet():
                break
            await asyncio.sleep(0.5)
    finally:
        load.stopping.set()
        await asyncio.gather(*clients, return_exceptions=True)
        for task in [*drills.watchers, *(t for d in load.drills for t in d.checkouts)]:
            task.cancel()
    await drills.assign_events(load.drill)
    baseline.waiting_for = await outstanding(baseline, drills.ledger)


async def test_fault_drills_lose_nothing_and_count_nothing_twice(
    system: DrillSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        StripeAdapter("sk_test_sandbox", f"{system.sandbox_url}/stripe") as stripe,
        httpx.AsyncClient(base_url=system.web_url, timeout=10) as web,
        httpx.AsyncClient(base_url=system.sandbox_url, timeout=30) as sandbox,
        telnyx.AsyncTelnyx(api_key=TELNYX_KEY, base_url=f"{system.sandbox_url}/telnyx/v2") as tx,
    ):
        await catalog.sync_catalog(stripe)
        assert (await sandbox.post("/stripe/_control/webhooks", json=STRIPE_RETRIES)).status_code == 200
        assert (await sandbox.post("/telnyx/_control/webhooks", json=TELNYX_RETRIES)).status_code == 200
        ledger = Ledger(system, sandbox, tx)
        drills = Drills(system, Load(system, web, sandbox), ledger)
        await run_drills(drills)

        _, taken = await ledger.deliveries()
        stored = {
            "taken": taken,
            "processing": await ledger.processing(),
            "identities": await ledger.identities(),
            "users": await ledger.workspace_users(),
            "numbers": await ledger.held_numbers(),
        }
        results = [await audit(drill, ledger, stored) for drill in drills.load.drills]
        ours = {identity["id"] for identity in stored["identities"].values()}
        orphans = len((set(stored["users"]) | set(stored["numbers"])) - ours)
        report = table(drills.load.drills, results, orphans)
        with capsys.disabled():
            print(report)
        left = await drills.faults_left()

    where = f"\n(the processes' logs: {system.root})"
    assert sum(r.lost for r in results) == 0, report + where
    assert sum(r.twice for r in results) == 0 and orphans == 0, report + where
    assert all(d.waiting_for is None for d in drills.load.drills), report + where
    assert left == {}, f"faults the load never met: {left}"
    idle = [d.name for d in drills.load.drills[1:] if not d.completed()]
    assert not idle, f"drills whose clients saw no AI request complete: {idle}"
    system.passed = True
