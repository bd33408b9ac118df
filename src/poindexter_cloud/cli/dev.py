"""`dev`: the whole system on one machine, from nothing, in one command.

With no DATABASE_URL / REDIS_URL it starts an embedded PostgreSQL and an embedded Redis-compatible server
(Valkey) from pip packages, keeping their data in the state folder so a second start finds it again. Then
it migrates, starts the sandbox providers and every role in this process, and prints the URLs. Ctrl-C
stops the roles first, then the embedded servers, and leaves no process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from contextlib import ExitStack
from pathlib import Path

from poindexter_cloud.cli.common import Subcommands, settings_or_exit
from poindexter_cloud.core import migrations
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.runner import Service, run_together
from poindexter_cloud.core.settings import Role, Settings
from poindexter_cloud.core.worker import build_worker
from poindexter_cloud.sandbox.smtp import SmtpSandbox

HOST = "127.0.0.1"
WEB_PORT, PROXY_PORT, SANDBOX_PORT, SMTP_PORT = 8000, 8001, 8002, 1025


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("dev", help="run everything locally: embedded databases, sandbox, all roles")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".poindexter"),
        help="where embedded data lives (default .poindexter/ in the working directory)",
    )
    parser.add_argument("--web-port", type=int, default=WEB_PORT)
    parser.add_argument("--proxy-port", type=int, default=PROXY_PORT)
    parser.add_argument("--sandbox-port", type=int, default=SANDBOX_PORT)
    parser.add_argument("--smtp-port", type=int, default=SMTP_PORT, help="the sandbox SMTP server's port")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from poindexter_cloud.core.embedded import EmbeddedPostgres, EmbeddedRedis

    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if not os.environ.get("DATABASE_URL"):
            postgres = stack.enter_context(EmbeddedPostgres(state_dir / "postgres"))
            os.environ["DATABASE_URL"] = postgres.url
        if not os.environ.get("REDIS_URL"):
            redis = stack.enter_context(EmbeddedRedis(state_dir / "valkey"))
            os.environ["REDIS_URL"] = redis.url
        os.environ.setdefault("SANDBOX_URL", f"http://{HOST}:{args.sandbox_port}")
        # The sandbox Stripe posts its signed webhooks to our web role, as a Stripe endpoint would.
        os.environ.setdefault("SANDBOX_STRIPE_WEBHOOK_URL", f"http://{HOST}:{args.web_port}/webhooks/stripe")
        os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_sandbox")
        os.environ.setdefault("SANDBOX_STRIPE_WEBHOOK_SECRET", os.environ["STRIPE_WEBHOOK_SECRET"])
        os.environ.setdefault("SMTP_HOST", HOST)
        os.environ.setdefault("SMTP_PORT", str(args.smtp_port))
        os.environ.setdefault("WEB_BASE_URL", f"http://{HOST}:{args.web_port}")
        # The sandbox's Workspace serves the domain mailboxes are made in (the sandbox reads these when it is
        # imported, in run_dev). Signal's codes reach the web role through the sandbox Telnyx's messaging
        # profile, made on first use with WEB_BASE_URL's webhook: provisioning needs nothing else here.
        if os.environ.get("GOOGLE_WORKSPACE_DOMAIN"):
            os.environ.setdefault("SANDBOX_GOOGLE_DOMAIN", os.environ["GOOGLE_WORKSPACE_DOMAIN"])
        if os.environ.get("GOOGLE_ADMIN_EMAIL"):
            os.environ.setdefault("SANDBOX_GOOGLE_ADMIN", os.environ["GOOGLE_ADMIN_EMAIL"])
        os.environ.setdefault("PROXY_BASE_URL", f"http://{HOST}:{args.proxy_port}")
        settings = settings_or_exit(Role.ALL)
        migrations.upgrade(settings.database_url)
        smtp = SmtpSandbox(HOST, args.smtp_port)
        smtp.start()
        stack.callback(smtp.stop)
        return asyncio.run(run_dev(settings, args))


async def run_dev(settings: Settings, args: argparse.Namespace) -> int:
    from poindexter_cloud.sandbox.app import create_sandbox_app

    services = [
        Service("web", create_app(Role.WEB, settings), HOST, args.web_port),
        Service("proxy", create_app(Role.PROXY, settings), HOST, args.proxy_port),
        Service("sandbox", create_sandbox_app(), HOST, args.sandbox_port),
    ]

    from poindexter_cloud.billing.catalog import sync_catalog
    from poindexter_cloud.billing.stripe_adapter import StripeAdapter

    async def announce() -> None:
        async with StripeAdapter.from_settings(settings) as stripe:
            await sync_catalog(stripe)  # the plans' products, prices and meters exist in the sandbox Stripe
        print("\nPoindexter Cloud is running (Ctrl-C stops everything):", flush=True)
        for service in services:
            print(f"  {service.name:<8} {service.url}", flush=True)
        print(f"  {'docs':<8} {services[0].url}/docs", flush=True)
        print(f"  {'mail':<8} {services[2].url}/smtp/messages", flush=True)
        print(f"  {'postgres':<8} {os.environ['DATABASE_URL']}", flush=True)
        print(f"  {'redis':<8} {os.environ['REDIS_URL']}", flush=True)
        print(f"  state    {args.state_dir.resolve()}", flush=True)

    return await run_together(services, [build_worker(settings)], on_ready=announce)
