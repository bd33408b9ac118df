"""ASGI factories for uvicorn (`--factory poindexter_cloud.asgi:web`); each reads settings from env."""

from __future__ import annotations

from poindexter_cloud.core import logs
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.observe import Observed, configure_tracing
from poindexter_cloud.core.runner import freeze_startup_objects
from poindexter_cloud.core.settings import Role, load_or_raise


def _app(role: Role) -> Observed:
    settings = load_or_raise(role)
    logs.configure(settings.log_level)
    configure_tracing(settings.otel_traces_exporter, settings.otel_exporter_otlp_endpoint)
    app = create_app(role, settings)
    freeze_startup_objects()  # every module of the role is imported by now
    return app


def web() -> Observed:
    return _app(Role.WEB)


def proxy() -> Observed:
    return _app(Role.PROXY)
