"""Test infrastructure: real PostgreSQL and Redis (the machine's, or embedded ones), real HTTP servers.

Each test session gets a database of its own, migrated to head, and a Redis database it flushes first.
TEST_DATABASE_URL / TEST_REDIS_URL name servers to use; without them the local default ports are tried,
and failing that an embedded PostgreSQL and Valkey are started in a temporary folder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import google_auth_httplib2
import httplib2
import httpx
import psycopg
import pytest

from poindexter_cloud.billing import catalog
from poindexter_cloud.billing.models import Subscription
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.core import migrations
from poindexter_cloud.core.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.logs import JsonFormatter
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.runner import ManagedServer, uvicorn_config
from poindexter_cloud.core.settings import Role, Settings, load_or_raise
from poindexter_cloud.sandbox.smtp import SmtpSandbox

TEST_REDIS_DB = 15
QUEUE_NAME = f"test-{uuid.uuid4().hex[:8]}"  # concurrent test runs sharing a Redis never share jobs


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(admin PostgreSQL URL, Redis base URL) of real servers."""
    embedded: list[Any] = []
    pg_url = os.environ.get("TEST_DATABASE_URL")
    if not pg_url and _listening("127.0.0.1", 5432):
        pg_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    if not pg_url:
        postgres = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", durable=False)
        postgres.start()
        embedded.append(postgres)
        pg_url = postgres.url
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url and _listening("127.0.0.1", 6379):
        redis_url = "redis://127.0.0.1:6379"
    if not redis_url:
        redis = EmbeddedRedis(tmp_path_factory.mktemp("valkey"))
        redis.start()
        embedded.append(redis)
        redis_url = redis.url
    try:
        yield pg_url, redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    finally:
        for server in reversed(embedded):
            server.stop()


def with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


def create_database(admin_url: str) -> str:
    name = f"pdx_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(server_urls: tuple[str, str]) -> Iterator[str]:
    """A fresh database for this test session, migrated to head."""
    admin_url = server_urls[0]
    url = create_database(admin_url)
    migrations.upgrade(url)
    yield url
    drop_database(admin_url, url)


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> str:
    url = f"{server_urls[1]}/{TEST_REDIS_DB}"
    return url


def make_settings(database_url: str, redis_url: str, **env: str) -> Settings:
    return load_or_raise(
        Role.ALL,
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ACCESS_LOG": "true",
            "JOB_RETRY_DELAY_SECONDS": "0.05",
            "QUEUE_NAME": QUEUE_NAME,
            **env,
        },
    )


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log line of the test, as the JSON the service writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(scope="session")
def smtp_sandbox() -> Iterator[SmtpSandbox]:
    """The sandbox SMTP server the service's own mail goes to."""
    sandbox = SmtpSandbox("127.0.0.1", free_port())
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="session")
async def sandbox_server() -> AsyncIterator[RunningServer]:
    """The simulated providers (Anthropic, OpenAI, ...) on a port of their own."""
    from poindexter_cloud.sandbox.app import create_sandbox_app

    async with RunningServer(create_sandbox_app()) as server:
        yield server


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, smtp_sandbox: SmtpSandbox, sandbox_server: RunningServer
) -> Settings:
    return make_settings(
        database_url, redis_url, SMTP_PORT=str(smtp_sandbox.controller.port), SANDBOX_URL=sandbox_server.url
    )


@pytest.fixture(scope="session")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    opened = await Resources.open(settings)
    yield opened
    await opened.close()


class RunningServer:
    """A real uvicorn server on a free port, in this event loop."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ManagedServer(uvicorn_config(app, "127.0.0.1", self.port))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningServer:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


@pytest.fixture(scope="session")
async def web_server(settings: Settings, resources: Resources) -> AsyncIterator[RunningServer]:
    async with RunningServer(create_app(Role.WEB, settings, resources)) as server:
        yield server


@pytest.fixture(scope="session")
async def proxy_server(settings: Settings, resources: Resources) -> AsyncIterator[RunningServer]:
    async with RunningServer(create_app(Role.PROXY, settings, resources)) as server:
        yield server


@pytest.fixture
async def web(web_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web_server.url, timeout=10) as client:
        yield client


@pytest.fixture
async def proxy(proxy_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=proxy_server.url, timeout=10) as client:
        yield client


SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="session")
async def worker(settings: Settings, resources: Resources) -> AsyncIterator[Any]:
    """The real worker, running every registered job in this event loop."""
    from poindexter_cloud.core.worker import build_worker

    running = build_worker(settings, resources, timers={"schedule": 1, "sweep": 5})
    running.SIGNALS = []
    task = asyncio.create_task(running.start())
    yield running
    await running.stop()
    await task


async def add_subscription(
    resources: Resources, user_id: uuid.UUID, plan: str = "basic", status: str = "active"
) -> None:
    """A subscription row in the given Stripe status, as the Stripe webhooks would have left it."""
    async with resources.unit_of_work() as uow:
        uow.session.add(
            Subscription(
                user_id=user_id,
                stripe_subscription_id=f"sub_{uuid.uuid4().hex}",
                stripe_price_id="price_test",
                plan=plan,
                status=status,
            )
        )
        await uow.commit()


async def eventually(check: Any, within: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async ``check`` until it returns something truthy, or fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(interval)


# --- billing: the web role receiving the sandbox Stripe's webhooks -------------------------------------


async def google_call(request: Any) -> Any:
    """Runs a google-api-python-client request on a connection of its own, as our adapter does.

    A built service shares one ``httplib2.Http``, which is not thread-safe and keeps its connection
    alive between calls; the sandbox closes idle connections, so a later call could write to a socket
    the server had just closed (BrokenPipeError) on a slow machine.
    """
    shared = request.http
    if isinstance(shared, google_auth_httplib2.AuthorizedHttp):
        fresh = httplib2.Http(timeout=shared.http.timeout)
        http: Any = google_auth_httplib2.AuthorizedHttp(shared.credentials, http=fresh)
    else:
        http = httplib2.Http(timeout=shared.timeout)
    return await asyncio.to_thread(request.execute, http=http)


class LateApp:
    """An ASGI app set after the server's port is known: the webhook endpoint needs the URL, and the web
    role's settings need the endpoint's secret."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@dataclasses.dataclass
class Billing:
    web: httpx.AsyncClient
    proxy: httpx.AsyncClient
    sandbox: httpx.AsyncClient  # the simulator's hosted pages and controls
    stripe: StripeAdapter
    resources: Resources
    settings: Settings  # the web role's: STRIPE_WEBHOOK_SECRET is the endpoint's
    webhook_url: str


@pytest.fixture(scope="module")
async def stripe(settings: Settings) -> AsyncIterator[StripeAdapter]:
    async with StripeAdapter.from_settings(settings) as adapter:
        yield adapter


@pytest.fixture(scope="module")
async def billing(
    settings: Settings,
    resources: Resources,
    stripe: StripeAdapter,
    sandbox_server: RunningServer,
    proxy_server: RunningServer,
    worker: Any,
) -> AsyncIterator[Billing]:
    """A web role receiving the simulator's webhooks (an endpoint registered through the SDK, its secret in
    the web role's settings), the session's worker and proxy, and the catalog synced."""
    await catalog.sync_catalog(stripe)
    async with httpx.AsyncClient(base_url=sandbox_server.url) as control:
        assert (await control.post("/stripe/_control/webhooks", json={"mode": "normal"})).status_code == 200
    late = LateApp()
    server = RunningServer(late)
    webhook_url = f"{server.url}/webhooks/stripe"
    endpoint = await stripe.sdk.v1.webhook_endpoints.create_async(
        {"url": webhook_url, "enabled_events": ["*"]}
    )
    assert endpoint.secret and endpoint.secret.startswith("whsec_")
    web_settings = dataclasses.replace(settings, stripe_webhook_secret=endpoint.secret)
    web_resources = await Resources.open(web_settings)
    late.app = create_app(Role.WEB, web_settings, web_resources)
    try:
        async with (
            server,
            httpx.AsyncClient(base_url=server.url, timeout=20) as web,
            httpx.AsyncClient(base_url=proxy_server.url, timeout=20) as proxy,
            httpx.AsyncClient(base_url=sandbox_server.url, timeout=20) as sandbox,
        ):
            yield Billing(web, proxy, sandbox, stripe, resources, web_settings, webhook_url)
    finally:
        await stripe.sdk.v1.webhook_endpoints.delete_async(endpoint.id)
        await web_resources.close()
