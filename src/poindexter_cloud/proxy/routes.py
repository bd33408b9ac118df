"""The proxy role's routes: raw ASGI handlers, so the hot path skips request parsing it does not need."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, asgi

from poindexter_cloud.accounts.auth import accounts_lifespan
from poindexter_cloud.proxy.errors import ProxyError
from poindexter_cloud.proxy.service import Call, ProxyRuntime, Receive, Send
from poindexter_cloud.proxy.upstreams import Endpoint


def _runtime(scope: dict[str, Any]) -> ProxyRuntime:
    runtime: ProxyRuntime = scope["litestar_app"].state.proxy
    return runtime


def _post_handler(path: str, endpoint: Endpoint) -> Any:
    async def handle(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        runtime = _runtime(scope)
        if scope["method"] != "POST":
            call = Call(runtime, endpoint, scope, receive, send)
            await call.fail(ProxyError(405, "method_not_allowed", f"{path} takes POST."))
            return
        await runtime.serve(endpoint, scope, receive, send)

    handle.__name__ = f"proxy_{endpoint}"
    handle.__doc__ = f"POST {path}"
    return handle


@asgi("/v1/models", is_mount=False, copy_scope=False)
async def models(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """GET /v1/models, in the caller's API family's format."""
    call = Call(_runtime(scope), "messages", scope, receive, send)
    try:
        await call.list_models()
    except ProxyError as error:
        await call.fail(error)


@asynccontextmanager
async def proxy_lifespan(app: Litestar) -> AsyncIterator[None]:
    runtime = ProxyRuntime(app.state.resources, app.state.api_key_verifier)
    app.state.proxy = runtime
    try:
        yield
    finally:
        await runtime.stop()


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
# Served before Litestar (core/http.py FastRoutes): the hot path.
ASGI_ROUTES = {path: _post_handler(path, endpoint) for path, endpoint in ENDPOINTS.items()}
ROUTES = [models]
LIFESPAN = [accounts_lifespan, proxy_lifespan]
