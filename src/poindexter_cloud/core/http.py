"""One Litestar app factory for every role.

A role is a set of domain modules; each module contributes the route handlers in its ``routes.py`` as
``ROUTES``. Every app gets the same health, metrics and error handling, and is wrapped in ``Observed``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ControllerRouterHandler
from sqlalchemy import text

from poindexter_cloud import __version__
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.errors import (
    DEPENDENCY_DOWN,
    DEPENDENCY_RETRY_AFTER_SECONDS,
    AppError,
    ErrorBody,
    ErrorResponse,
    outage_text,
)
from poindexter_cloud.core.logs import request_id_var
from poindexter_cloud.core.metrics import ERRORS, cached, exposition
from poindexter_cloud.core.observe import Observed
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role, Settings

log = logging.getLogger(__name__)

# The modules whose routes each HTTP role serves, in order.
ROLE_MODULES: dict[Role, tuple[str, ...]] = {
    Role.WEB: ("accounts", "identity", "billing", "provisioning", "admin", "webhooks", "console"),
    Role.PROXY: ("proxy",),
    Role.WORKER: (),  # health and metrics only
}

READY_TIMEOUT_SECONDS = 2.0


@dataclass
class ModuleParts:
    """What the routes.py of a role's modules contribute: ``ROUTES``, and optionally ``DEPENDENCIES``
    (named providers every handler may ask for) and ``LIFESPAN`` (per-process services, started after the
    shared resources)."""

    routes: list[ControllerRouterHandler] = field(default_factory=list)
    # Exact paths served by raw ASGI callables before Litestar sees the request (the proxy's hot path).
    asgi_routes: dict[str, Any] = field(default_factory=dict)
    dependencies: dict[str, Provide] = field(default_factory=dict)
    lifespans: list[Any] = field(default_factory=list)


def module_parts(modules: Sequence[str]) -> ModuleParts:
    parts = ModuleParts()
    for name in modules:
        try:
            routes = importlib.import_module(f"poindexter_cloud.{name}.routes")
        except ModuleNotFoundError as exc:
            if exc.name != f"poindexter_cloud.{name}.routes":
                raise
            continue
        parts.routes.extend(routes.ROUTES)
        parts.asgi_routes.update(getattr(routes, "ASGI_ROUTES", {}))
        parts.dependencies.update(getattr(routes, "DEPENDENCIES", {}))
        for lifespan in getattr(routes, "LIFESPAN", []):
            if lifespan not in parts.lifespans:
                parts.lifespans.append(lifespan)
    return parts


async def provide_uow(state: State) -> AsyncIterator[UnitOfWork]:
    """The request's one transaction; handlers commit it once."""
    resources: Resources = state.resources
    async with resources.unit_of_work() as uow:
        yield uow


def provide_resources(state: State) -> Resources:
    resources: Resources = state.resources
    return resources


CORE_DEPENDENCIES = {
    "uow": Provide(provide_uow),
    "resources": Provide(provide_resources, sync_to_thread=False),
}


_error_series = cached(ERRORS)


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response[ErrorResponse]:
    body = ErrorResponse(ErrorBody(code, message, request_id_var.get(), details))
    _error_series(status, code).inc()
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)


def _app_error(_: Request[Any, Any, Any], exc: AppError) -> Response[ErrorResponse]:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorResponse]:
    return error_response(400, "invalid_request", "The request is not valid.", exc.extra or None)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    status = exc.status_code
    code = _HTTP_CODES.get(status, "error" if status < 500 else "internal_error")
    message = exc.detail if status < 500 else "Internal server error."
    return error_response(status, code, message, headers=exc.headers)


def _dependency_down(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    log.warning("a dependency is unavailable (%s)", outage_text(exc))
    return error_response(
        HTTP_503_SERVICE_UNAVAILABLE,
        "unavailable",
        "The service is briefly unavailable. Try again in a few seconds.",
        headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
    )


def _unhandled(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    log.exception("unhandled error", exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "Internal server error.")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    AppError: _app_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    **dict.fromkeys(DEPENDENCY_DOWN, _dependency_down),
    Exception: _unhandled,
}


@get("/healthz", include_in_schema=False, sync_to_thread=False)
def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    import asyncio

    try:
        await asyncio.wait_for(probe(), READY_TIMEOUT_SECONDS)
    except Exception as exc:
        return name, f"down: {type(exc).__name__}"
    return name, "ok"


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """PostgreSQL and Redis are reachable; 503 names whichever is not."""
    resources: Resources = state.resources

    async def postgres() -> None:
        async with resources.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def redis() -> None:
        await resources.redis.ping()

    checks = dict([await _check("postgres", postgres), await _check("redis", redis)])
    down = [name for name, outcome in checks.items() if outcome != "ok"]
    status = 503 if down else 200
    body: dict[str, Any] = {"status": "unavailable" if down else "ok", "checks": checks}
    if down:
        body["down"] = down
    return Response(body, status_code=status)


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics() -> Response[bytes]:
    body, content_type = exposition()
    return Response(body, media_type=content_type)


def create_app(role: Role, settings: Settings, resources: Resources | None = None) -> Observed:
    """The ASGI app of one HTTP role. Without ``resources`` the app opens and closes its own."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owned = resources is None
        app.state.resources = resources if resources is not None else await Resources.open(settings)
        app.state.settings = settings
        try:
            yield
        finally:
            if owned:
                await app.state.resources.close()

    openapi = None
    if role is Role.WEB:
        openapi = OpenAPIConfig(
            title="Poindexter Cloud API",
            version=__version__,
            path="/docs",
            render_plugins=[ScalarRenderPlugin()],
        )
    parts = module_parts(ROLE_MODULES[role])
    app = Litestar(
        route_handlers=[healthz, readyz, metrics, *parts.routes],
        dependencies={**CORE_DEPENDENCIES, **parts.dependencies},
        lifespan=[lifespan, *parts.lifespans],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        state=State({"role": role.value}),
        logging_config=None,  # core.logs owns logging
        debug=False,
    )
    asgi: Any = FastRoutes(app, parts.asgi_routes) if parts.asgi_routes else app
    return Observed(asgi, role.value, access_log=settings.access_log)


class FastRoutes:
    """Serves a few exact paths with raw ASGI callables and everything else with Litestar.

    Litestar's routing, dependency and exception layers cost tens of microseconds a request; the proxy's
    handlers parse nothing they do not need and answer every error themselves, so they skip them.
    """

    def __init__(self, app: Litestar, routes: dict[str, Any]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope["litestar_app"] = self.app
        scope["path_template"] = scope["path"]
        await handler(scope, receive, send)
