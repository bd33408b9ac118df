"""Schemathesis against the web role's own OpenAPI schema: a bounded number of generated requests per
operation, as a signed-in subscriber would send them (and as anyone else would, for the auth checks). No
answer is a 5xx, every error has the one documented shape, and a rejected request writes nothing.

The web role runs as its own process (`serve --role web`) on the session's database, since Hypothesis drives
the calls synchronously."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from conftest import QUEUE_NAME
from poindexter_cloud.core.embedded import free_port
from poindexter_cloud.core.settings import Settings

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 12
# Operations that end the fuzzing user's access (then every later case would only test 401) or that an
# attacker cannot reach without a secret we do not give out here.
EXCLUDED = {("DELETE", "/v1/account"), ("POST", "/v1/auth/logout")}
# Tables a rejected request may write to by design: the audit log (a failed login is audited) and the
# job outbox it may defer into (none today, kept for clarity).
MAY_WRITE_WHEN_REJECTED = {"audit_events", "alembic_version"}


class WebRole:
    def __init__(self, url: str, database_url: str, token: str) -> None:
        self.url = url
        self.database_url = database_url
        self.token = token


SANDBOX = (
    "import sys, uvicorn;"
    "from poindexter_cloud.core.runner import uvicorn_config;"
    "from poindexter_cloud.sandbox.app import create_sandbox_app;"
    "uvicorn.Server(uvicorn_config(create_sandbox_app(), '127.0.0.1', int(sys.argv[1]))).run()"
)


def wait_until_up(url: str, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def web_role(settings: Settings) -> Iterator[WebRole]:
    """The web role and the sandbox providers it calls, each a process of its own: the test's event loop
    is not running while Hypothesis calls, so in-process servers of the session could not answer."""
    port, sandbox_port = free_port(), free_port()
    database_url = settings.database_url.replace("+psycopg", "")
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.redis_url,
        "QUEUE_NAME": QUEUE_NAME,
        "SANDBOX_URL": sandbox_url,
        "SMTP_PORT": str(settings.smtp_port),
        "ACCESS_LOG": "false",
        "LOGIN_ATTEMPTS_PER_IP": "100000",
    }
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen([sys.executable, "-c", SANDBOX, str(sandbox_port)], **quiet),
        subprocess.Popen(
            [sys.executable, "-m", "poindexter_cloud", "serve", "--role", "web", "--port", str(port)], **quiet
        ),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{sandbox_url}/healthz", "the sandbox")
        wait_until_up(f"{url}/readyz", "the web role")
        subprocess.run(
            [sys.executable, "-m", "poindexter_cloud", "admin", "stripe", "sync"], check=True, **quiet
        )
        registered = httpx.post(
            f"{url}/v1/auth/register",
            json={"email": f"fuzz-{uuid.uuid4().hex[:10]}@example.com", "password": "a fuzzing passphrase"},
        )
        assert registered.status_code == 201, registered.text
        yield WebRole(url, database_url, registered.json()["access_token"])
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def table_counts(database_url: str) -> dict[str, int]:
    """Rows per table (one statement): what a rejected request must leave unchanged."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        counts = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables)
        return {name: int(count) for name, count in connection.execute(counts)}


def error_shape(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    error = body["error"]
    return (
        isinstance(error.get("code"), str)
        and bool(error["code"])
        and isinstance(error.get("message"), str)
        and "request_id" in error
    )


def operations(web_role: WebRole) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{web_role.url}/docs/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if (op.method.upper(), op.path) not in EXCLUDED]


def test_generated_requests_get_no_5xx_a_documented_error_and_change_nothing_when_refused(
    web_role: WebRole,
) -> None:
    """Every operation, EXAMPLES_PER_OPERATION generated cases each, signed in unless the case sets its own
    headers (then as whoever those make it)."""
    checked = operations(web_role)
    assert len(checked) > 20
    for operation in checked:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exercise(case: Any) -> None:
            call(web_role, case)

        exercise()


def call(web_role: WebRole, case: Any) -> None:
    where = f"{case.method} {case.formatted_path}"
    headers = {"Authorization": f"Bearer {web_role.token}"}
    before = table_counts(web_role.database_url)
    response = case.call(base_url=web_role.url, headers={**headers, **(case.headers or {})}, timeout=10)
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert error_shape(response.json()), f"{where}: {response.status_code} {response.text[:500]}"
        after = table_counts(web_role.database_url)
        changed = {t for t in after if after[t] != before.get(t)} - MAY_WRITE_WHEN_REJECTED
        assert not changed, f"{where} -> {response.status_code} wrote {changed}"
