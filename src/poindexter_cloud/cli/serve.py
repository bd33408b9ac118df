"""`serve --role web|proxy|worker|all`: run one role of the service (or all of them, for development)."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile

import uvicorn

from poindexter_cloud.cli.common import Subcommands, add_role_argument, settings_or_exit
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.metrics import MULTIPROCESS_ENV
from poindexter_cloud.core.observe import configure_tracing
from poindexter_cloud.core.runner import Service, run_together, uvicorn_config
from poindexter_cloud.core.settings import Role, Settings
from poindexter_cloud.core.worker import build_worker

DEFAULT_PORTS = {Role.WEB: 8000, Role.PROXY: 8001, Role.WORKER: 8003, Role.ALL: 8000}


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("serve", help="run a role: web, proxy, worker, or all in one process")
    add_role_argument(parser, tuple(Role), required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        help="port (default web 8000, proxy 8001, worker 8003; with all: web on PORT, proxy on PORT+1)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes for web or proxy (default 1)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    role: Role = args.role
    settings = settings_or_exit(role)
    configure_tracing(settings.otel_traces_exporter, settings.otel_exporter_otlp_endpoint)
    port = args.port or DEFAULT_PORTS[role]
    if role in (Role.WEB, Role.PROXY):
        if args.workers > 1 and not os.environ.get(MULTIPROCESS_ENV):
            # Each process writes its metrics to files here; /metrics in any of them sums them all.
            os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="poindexter-metrics-")
        config = uvicorn_config(f"poindexter_cloud.asgi:{role.value}", args.host, port, args.workers)
        config.factory = True
        uvicorn.Server(config).run()
        return 0
    return asyncio.run(serve_in_process(role, settings, args.host, port))


async def serve_in_process(role: Role, settings: Settings, host: str, port: int) -> int:
    """The worker (with a health and metrics endpoint), or every role together."""
    if role is Role.WORKER:
        services = [Service("worker", create_app(Role.WORKER, settings), host, port)]
    else:
        services = [
            Service("web", create_app(Role.WEB, settings), host, port),
            Service("proxy", create_app(Role.PROXY, settings), host, port + 1),
        ]
    return await run_together(services, [build_worker(settings)])
