"""Billing meters, meter events (v1 and v2) and meter event summaries."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from . import billing, render
from .api import (
    Call,
    api,
    get_meter,
    newest,
    state,
)
from .errors import StripeError, invalid, missing
from .forms import Params
from .store import (
    Meter,
    MeterEvent,
    MeterEventSession,
    new_id,
    real_now,
)

METER_EVENT_PAST: Final = 35 * 86400
METER_EVENT_FUTURE: Final = 300

# ---------------------------------------------------------------------------------------------- meters


@api("POST", "/v1/billing/meters")
def create_meter(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    display_name = p.req("display_name", 250)
    event_name = p.req("event_name", 100)
    aggregation = p.obj("default_aggregation", required=True)
    assert aggregation is not None
    formula = aggregation.enum("formula", ("count", "last", "sum"), required=True)
    aggregation.finish()
    mapping = p.obj("customer_mapping")
    customer_key = "stripe_customer_id"
    if mapping is not None:
        customer_key = mapping.req("event_payload_key", 100)
        mapping.enum("type", ("by_id",), required=True)
        mapping.finish()
    settings = p.obj("value_settings")
    value_key = "value"
    if settings is not None:
        value_key = settings.req("event_payload_key", 100)
        settings.finish()
    window = p.enum("event_time_window", ("day", "hour"))
    paths = p.expand()
    p.finish()
    if any(m.event_name == event_name and m.status == "active" for m in state.meters.values()):
        raise invalid(
            "event_name",
            f"An active meter with event_name `{event_name}` already exists.",
            "resource_already_exists",
        )
    now = real_now()
    assert formula is not None
    meter = Meter(
        new_id("mtr_test_", 32), now, now, display_name, event_name, formula, customer_key, value_key
    )
    meter.event_time_window = window
    state.meters[meter.id] = meter
    state.emit("billing.meter.created", render.meter(meter))
    return render.expand(state, render.meter(meter), paths, version=call.version)


@api("GET", "/v1/billing/meters/{id}")
def retrieve_meter(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return call.out(render.meter(get_meter(m.group(1))))


@api("POST", "/v1/billing/meters/{id}")
def update_meter(call: Call, m: re.Match[str]) -> dict[str, Any]:
    meter = get_meter(m.group(1))
    p = call.params
    display_name = p.string("display_name", max_length=250)
    paths = p.expand()
    p.finish()
    if display_name:
        previous = {"display_name": meter.display_name}
        meter.display_name = display_name
        meter.updated = real_now()
        state.emit("billing.meter.updated", render.meter(meter), previous=previous)
    return render.expand(state, render.meter(meter), paths, version=call.version)


def _set_meter_status(call: Call, m: re.Match[str], status: str) -> dict[str, Any]:
    meter = get_meter(m.group(1))
    paths = call.params.expand()
    call.params.finish()
    if meter.status == status:
        raise StripeError(400, f"This meter is already {status}.", param="id")
    if status == "active" and any(
        x.event_name == meter.event_name and x.status == "active" for x in state.meters.values()
    ):
        raise invalid("id", f"An active meter with event_name `{meter.event_name}` already exists.")
    now = real_now()
    meter.status = status
    meter.deactivated_at = now if status == "inactive" else None
    meter.updated = now
    kind = "billing.meter.deactivated" if status == "inactive" else "billing.meter.reactivated"
    state.emit(kind, render.meter(meter))
    return render.expand(state, render.meter(meter), paths, version=call.version)


@api("POST", "/v1/billing/meters/{id}/deactivate")
def deactivate_meter(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return _set_meter_status(call, m, "inactive")


@api("POST", "/v1/billing/meters/{id}/reactivate")
def reactivate_meter(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return _set_meter_status(call, m, "active")


@api("GET", "/v1/billing/meters")
def list_meters(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    status = p.enum("status", ("active", "inactive"))
    records = [x for x in newest(state.meters.values()) if status is None or x.status == status]
    return call.out(render.paginate(p, records, lambda x: x.id, render.meter, "/v1/billing/meters", "meter"))


@api("GET", "/v1/billing/meters/{id}/event_summaries")
def meter_event_summaries(call: Call, m: re.Match[str]) -> dict[str, Any]:
    meter = get_meter(m.group(1))
    p = call.params
    customer_id = p.req("customer")
    start = p.integer("start_time", required=True, minimum=0)
    end = p.integer("end_time", required=True, minimum=0)
    window = p.enum("value_grouping_window", ("day", "hour"))
    assert start is not None and end is not None
    for key, value in (("start_time", start), ("end_time", end)):
        if value % 60:
            raise invalid(key, f"{key} must be aligned with minute boundaries.")
    if end <= start:
        raise invalid("end_time", "end_time must be after start_time.")
    step = {"day": 86400, "hour": 3600}.get(window or "", end - start)
    windows: list[tuple[int, int]] = []
    cursor = start
    while cursor < end:
        windows.append((cursor, min(end, cursor - cursor % step + step) if window else end))
        cursor = windows[-1][1]

    def summary(bounds: tuple[int, int]) -> dict[str, Any]:
        value = billing.usage(state, meter.id, customer_id, *bounds)
        digest = hashlib.sha256(f"{meter.id}:{customer_id}:{bounds}".encode()).hexdigest()[:24]
        number = int(value) if value == value.to_integral_value() else float(value)
        return {
            "id": f"mtrusg_{digest}",
            "object": "billing.meter_event_summary",
            "aggregated_value": number,
            "end_time": bounds[1],
            "livemode": False,
            "meter": meter.id,
            "start_time": bounds[0],
        }

    url = f"/v1/billing/meters/{meter.id}/event_summaries"
    page = render.paginate(p, windows, lambda b: summary(b)["id"], summary, url, "meter_event_summary")
    return call.out(page)


def _record_meter_event(
    param: Callable[[str], str],
    event_name: str,
    payload: dict[str, Any],
    identifier: str | None,
    timestamp: int | None,
) -> MeterEvent:
    """Validate and store one meter event (v1 and v2). Errors are those Stripe answers synchronously."""
    meter = next(
        (x for x in state.meters.values() if x.event_name == event_name and x.status == "active"), None
    )
    if meter is None:
        raise StripeError(
            400,
            f'No active meter found for event name "{event_name}".',
            code="resource_missing",
            param=param("event_name"),
        )
    customer_id = payload.get(meter.customer_key)
    if not isinstance(customer_id, str) or not customer_id:
        raise missing(param(f"payload[{meter.customer_key}]"))
    raw_value = payload.get(meter.value_key)
    if meter.formula == "count" and raw_value is None:
        raw_value = "1"
    if raw_value is None:
        raise missing(param(f"payload[{meter.value_key}]"))
    try:
        value = Decimal(str(raw_value))
        if not value.is_finite():
            raise ValueError(raw_value)
    except (ArithmeticError, ValueError):
        raise invalid(
            param(f"payload[{meter.value_key}]"), f"Invalid meter event value: {raw_value}."
        ) from None
    now = real_now()
    customer = state.customers.get(customer_id)
    if timestamp is None:
        timestamp = now
    references = [now]
    clock = state.clock_of(customer)
    if clock is not None:
        references.append(clock.frozen_time)
    if not any(ref - METER_EVENT_PAST <= timestamp <= ref + METER_EVENT_FUTURE for ref in references):
        raise invalid(
            param("timestamp"),
            "Timestamp must be within the past 35 calendar days and no more than 5 minutes in the future.",
            "timestamp_out_of_range",
        )
    if identifier is not None and state.identifier_seen(identifier):
        raise StripeError(400, f"An event already exists with identifier {identifier}.", should_retry=False)
    identifier = identifier or new_id("mev_", 24)
    state.identifiers[identifier] = float(now)
    event = MeterEvent(
        event_name,
        identifier,
        {str(k): str(v) for k, v in payload.items()},
        timestamp,
        now,
        meter.id,
        customer_id,
        value,
    )
    state.meter_events.append(event)
    return event


@api("POST", "/v1/billing/meter_events")
def create_meter_event(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    event_name = p.req("event_name", 100)
    payload = p.obj("payload", required=True)
    assert payload is not None
    payload.seen.update(payload.data)
    identifier = p.string("identifier", max_length=100)
    timestamp = p.integer("timestamp", minimum=0)
    paths = p.expand()
    p.finish()
    for key, value in payload.data.items():
        if not isinstance(value, str):
            raise invalid(f"payload[{key}]", "Invalid payload: values must be strings.")
    event = _record_meter_event(p.name, event_name, payload.data, identifier or None, timestamp)
    return render.expand(state, render.meter_event(event), paths, version=call.version)


# -- v2 meter events (JSON bodies, RFC 3339 times)


def iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: Any, param: str) -> int:
    if not isinstance(value, str):
        raise invalid(param, f"Invalid timestamp: {value!r}")
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise invalid(param, f"Invalid timestamp: {value}") from None


def _v2_event(p: Params) -> tuple[str, dict[str, Any], str | None, int | None]:
    event_name = p.req("event_name", 100)
    payload = p.obj("payload", required=True)
    assert payload is not None
    payload.seen.update(payload.data)
    identifier = p.string("identifier", max_length=100)
    raw_time = p.raw("timestamp")
    timestamp = parse_iso(raw_time, p.name("timestamp")) if raw_time is not None else None
    p.finish()
    return event_name, payload.data, identifier or None, timestamp


def v2_meter_event(event: MeterEvent) -> dict[str, Any]:
    return {
        "object": "v2.billing.meter_event",
        "created": iso(event.created),
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": False,
        "payload": event.payload,
        "timestamp": iso(event.timestamp),
    }


@api("POST", "/v2/billing/meter_events")
def create_v2_meter_event(call: Call, _: re.Match[str]) -> dict[str, Any]:
    event_name, payload, identifier, timestamp = _v2_event(call.params)
    return v2_meter_event(_record_meter_event(call.params.name, event_name, payload, identifier, timestamp))


@api("POST", "/v2/billing/meter_event_session")
def create_meter_event_session(call: Call, _: re.Match[str]) -> dict[str, Any]:
    call.params.finish()
    now = real_now()
    session = MeterEventSession(new_id("mes_"), new_id("mes_tkn_", 40), now, now + 15 * 60)
    state.meter_event_sessions[session.token] = session
    return {
        "id": session.id,
        "object": "v2.billing.meter_event_session",
        "authentication_token": session.token,
        "created": iso(session.created),
        "expires_at": iso(session.expires_at),
        "livemode": False,
    }


@api("POST", "/v2/billing/meter_event_stream")
def meter_event_stream(call: Call, _: re.Match[str]) -> dict[str, Any]:
    session = state.meter_event_sessions.get(call.token)
    if session is None or session.expires_at <= real_now():
        raise StripeError(
            401,
            "The meter event session has expired; create a new one.",
            kind="temporary_session_expired",
            code="billing_meter_event_session_expired",
        )
    events = call.params.objects("events")
    call.params.finish()
    if not events:
        raise missing("events")
    if len(events) > 100:
        raise invalid("events", "At most 100 events can be sent in one request.")
    for item in events:
        event_name, payload, identifier, timestamp = _v2_event(item)
        _record_meter_event(item.name, event_name, payload, identifier, timestamp)
    return {}
