"""The system a fault drill breaks: every role as its own ``python -m poindexter_cloud serve`` process, the
sandbox providers in a process of their own, and a PostgreSQL and a Valkey that belong to the drill alone
(embedded servers in the drill's temporary folder, on fixed ports, so they can be stopped and started again
without disturbing anybody else's tests).

Run as a script, this module is the sandbox's process: ``python drills_system.py sandbox PORT SMTP_PORT``
(its simulators keep their state in module globals, so a process of their own keeps the drill's Stripe,
Telnyx and Google apart from the test session's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from poindexter_cloud.core import migrations
from poindexter_cloud.core.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

HOST = "127.0.0.1"
ROLES = ("web", "proxy", "worker")
QUEUE_NAME = "drills"
STRIPE_WEBHOOK_SECRET = "whsec_faultdrills"
START_SECONDS = 40.0


class Child:
    """One process of the system: started, SIGKILLed and started again on the same port, its output kept in
    a log file beside the drill's data (shown when it fails to start)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {self.starts + 1} at {time.strftime('%X')} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    async def wait_ready(self, path: str = "/readyz", within: float = START_SECONDS) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}{path}")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} did not get ready; its log ends:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class DrillSystem:
    """Everything the drills run against, in ``root``; ``start`` brings it up, ``stop`` takes all of it down
    (also after a failure)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = EmbeddedPostgres(root / "pg", port=free_port(), durable=False)
        self.redis = EmbeddedRedis(root / "valkey", port=free_port())
        self.ports = {name: free_port() for name in (*ROLES, "sandbox", "smtp")}
        self.sandbox_url = f"http://{HOST}:{self.ports['sandbox']}"
        self.web_url = f"http://{HOST}:{self.ports['web']}"
        sandbox_env = {
            **os.environ,
            # The sandbox Stripe posts every event to our web role, signed with the endpoint's secret.
            "SANDBOX_STRIPE_WEBHOOK_URL": f"{self.web_url}/webhooks/stripe",
            "SANDBOX_STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        }
        sandbox_args = [
            sys.executable,
            __file__,
            "sandbox",
            str(self.ports["sandbox"]),
            str(self.ports["smtp"]),
        ]
        self.sandbox = Child(
            "sandbox", sandbox_args, sandbox_env, self.ports["sandbox"], root / "sandbox.log"
        )
        self.roles: dict[str, Child] = {}
        self.passed = False  # set by a drill that passed: its folder can go

    @property
    def web(self) -> Child:
        return self.roles["web"]

    @property
    def proxy(self) -> Child:
        return self.roles["proxy"]

    @property
    def worker(self) -> Child:
        return self.roles["worker"]

    def role_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ENVIRONMENT": "test",
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "QUEUE_NAME": QUEUE_NAME,
            "SANDBOX_URL": self.sandbox_url,
            "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
            "WEB_BASE_URL": self.web_url,
            "PROXY_BASE_URL": f"http://{HOST}:{self.ports['proxy']}",
            "SMTP_HOST": HOST,
            "SMTP_PORT": str(self.ports["smtp"]),
            "ACCESS_LOG": "false",
            # An upstream silent for 2 s is a time-out (the provider drill holds answers for longer).
            "PROXY_READ_TIMEOUT_SECONDS": "2",
        }

    async def start(self) -> None:
        await asyncio.gather(asyncio.to_thread(self.postgres.start), asyncio.to_thread(self.redis.start))
        self.sandbox.start()
        await asyncio.to_thread(migrations.upgrade, self.postgres.url)
        env = self.role_env()
        for role in ROLES:
            argv = [sys.executable, "-m", "poindexter_cloud", "serve", "--role", role]
            self.roles[role] = Child(
                role,
                [*argv, "--port", str(self.ports[role])],
                env,
                self.ports[role],
                self.root / f"{role}.log",
            )
            self.roles[role].start()
        await self.sandbox.wait_ready("/healthz")
        await asyncio.gather(*(child.wait_ready() for child in self.roles.values()))

    async def restart(self, child: Child) -> None:
        child.start()
        await child.wait_ready()

    def stop(self) -> None:
        try:
            for child in [*self.roles.values(), self.sandbox]:
                child.stop()
        finally:
            self.redis.stop()
            self.postgres.stop()

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the drill's database, read with a connection of our own."""
        async with await psycopg.AsyncConnection.connect(self.postgres.url, connect_timeout=3) as connection:
            cursor = await connection.execute(sql, params or None)
            return list(await cursor.fetchall())


def serve_sandbox(port: int, smtp_port: int) -> None:
    import uvicorn

    from poindexter_cloud.core.runner import uvicorn_config
    from poindexter_cloud.sandbox.app import create_sandbox_app
    from poindexter_cloud.sandbox.smtp import SmtpSandbox

    smtp = SmtpSandbox(HOST, smtp_port)  # the service's own mail (verification links) lands here
    smtp.start()
    try:
        uvicorn.Server(uvicorn_config(create_sandbox_app(), HOST, port)).run()
    finally:
        smtp.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["sandbox"]:
    serve_sandbox(int(sys.argv[2]), int(sys.argv[3]))
