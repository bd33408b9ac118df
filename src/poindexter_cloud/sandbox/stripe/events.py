"""Events and webhook endpoints."""

from __future__ import annotations

import re
from typing import Any, Final

from . import render
from .api import (
    Call,
    api,
    created_filter,
    newest,
    state,
)
from .errors import invalid, missing, no_such
from .forms import Params, apply_metadata
from .store import (
    WebhookEndpoint,
    new_id,
    real_now,
)
from .webhooks import new_secret

# ---------------------------------------------------------------------------------------------- events


@api("GET", "/v1/events/{id}")
def retrieve_event(call: Call, m: re.Match[str]) -> dict[str, Any]:
    found = state.events.get(m.group(1))
    if found is None:
        raise no_such("event", m.group(1))
    return call.out(render.event(found))


def _type_matches(pattern: str, kind: str) -> bool:
    return kind.startswith(pattern[:-1]) if pattern.endswith("*") else kind == pattern


@api("GET", "/v1/events")
def list_events(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    kind = p.string("type")
    kinds = p.strings("types")
    delivery_success = p.boolean("delivery_success")
    created = created_filter(p)
    records = [
        e
        for e in newest(state.events.values())
        if (kind is None or _type_matches(kind, e.type))
        and (kinds is None or e.type in kinds)
        and (delivery_success is None or (e.pending_webhooks == 0) == delivery_success)
        and created(e.created)
    ]
    return call.out(render.paginate(p, records, lambda e: e.id, render.event, "/v1/events", "event"))


# ---------------------------------------------------------------------------------------- webhook endpoints

_EVENT_TYPE_RE: Final = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)+)$")


def _enabled_events(p: Params, required: bool) -> list[str] | None:
    events = p.strings("enabled_events")
    if events is None:
        if required:
            raise missing("enabled_events")
        return None
    if not events:
        raise missing("enabled_events")
    for index, name in enumerate(events):
        if not _EVENT_TYPE_RE.match(name):
            raise invalid(f"enabled_events[{index}]", f"Invalid enabled_events[{index}]: {name}")
    return events


@api("POST", "/v1/webhook_endpoints")
def create_webhook_endpoint(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("connect",))
    url = p.req("url")
    events = _enabled_events(p, True)
    description = p.string("description")
    api_version = p.string("api_version")
    metadata = apply_metadata({}, p.metadata())
    paths = p.expand()
    p.finish()
    if not url.startswith(("http://", "https://")):
        raise invalid("url", "Invalid URL: URL must be publicly accessible and use http:// or https://.")
    assert events is not None
    endpoint = WebhookEndpoint(
        new_id("we_"), real_now(), url, events, new_secret(), description or None, metadata
    )
    endpoint.api_version = api_version or None
    state.webhook_endpoints[endpoint.id] = endpoint
    return render.expand(
        state, render.webhook_endpoint(endpoint, with_secret=True), paths, version=call.version
    )


def get_endpoint(endpoint_id: str) -> WebhookEndpoint:
    found = state.webhook_endpoints.get(endpoint_id)
    if found is None or not found.listed:
        raise no_such("webhook_endpoint", endpoint_id)
    return found


@api("GET", "/v1/webhook_endpoints/{id}")
def retrieve_webhook_endpoint(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return call.out(render.webhook_endpoint(get_endpoint(m.group(1))))


@api("POST", "/v1/webhook_endpoints/{id}")
def update_webhook_endpoint(call: Call, m: re.Match[str]) -> dict[str, Any]:
    endpoint = get_endpoint(m.group(1))
    p = call.params
    url = p.string("url")
    events = _enabled_events(p, False)
    disabled = p.boolean("disabled")
    given, description = p.nullable_str("description")
    metadata = p.metadata()
    paths = p.expand()
    p.finish()
    if url:
        endpoint.url = url
    if events is not None:
        endpoint.enabled_events = events
    if disabled is not None:
        endpoint.status = "disabled" if disabled else "enabled"
    if given:
        endpoint.description = description
    endpoint.metadata = apply_metadata(endpoint.metadata, metadata)
    return render.expand(state, render.webhook_endpoint(endpoint), paths, version=call.version)


@api("DELETE", "/v1/webhook_endpoints/{id}")
def delete_webhook_endpoint(call: Call, m: re.Match[str]) -> dict[str, Any]:
    endpoint = get_endpoint(m.group(1))
    call.params.finish()
    del state.webhook_endpoints[endpoint.id]
    return render.deleted(endpoint.id, "webhook_endpoint")


@api("GET", "/v1/webhook_endpoints")
def list_webhook_endpoints(call: Call, _: re.Match[str]) -> dict[str, Any]:
    records = [w for w in newest(state.webhook_endpoints.values()) if w.listed]
    page = render.paginate(
        call.params,
        records,
        lambda w: w.id,
        render.webhook_endpoint,
        "/v1/webhook_endpoints",
        "webhook_endpoint",
    )
    return call.out(page)
