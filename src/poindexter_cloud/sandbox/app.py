"""The sandbox providers' ASGI app: one Litestar app, one router per simulated provider."""

from __future__ import annotations

from litestar import Litestar, Router, get

from poindexter_cloud.sandbox import anthropic, google, openai, signal, smtp, stripe, telnyx

# Each simulator module exposes `router` (a Litestar Router mounted at its path prefix); listed here as
# providers are added.
PROVIDER_ROUTERS: tuple[Router, ...] = (
    smtp.router,
    anthropic.router,
    openai.router,
    stripe.router,
    google.router,
    telnyx.router,
    signal.router,
)


@get("/", sync_to_thread=False)
def index() -> dict[str, list[str]]:
    """The simulated providers and where they are mounted."""
    return {"providers": [router.path for router in PROVIDER_ROUTERS]}


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_sandbox_app() -> Litestar:
    return Litestar(route_handlers=[index, healthz, *PROVIDER_ROUTERS], logging_config=None, debug=False)
