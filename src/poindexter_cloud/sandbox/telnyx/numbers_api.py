"""Numbers: search the inventory, order numbers, manage and release the account's numbers and their messaging
settings.

An order answers ``pending`` with its numbers ``purchase-pending`` (listed in ``/v2/phone_numbers``, not yet
able to send or receive); ``order_seconds`` later it ends ``success`` (numbers ``active``) or, when the
sandbox's order outcome is ``failure`` (``POST /telnyx/_control/number_orders``), ``failure`` (numbers
``purchase-failed`` and back on sale). The outcome is fixed when the order is placed."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from . import inventory, network, render
from .api import Call, api, e164, page
from .errors import invalid, missing, missing_association, not_available, not_found
from .store import STATE, NumberOrder, OrderedNumber, PhoneNumber, iso, new_numeric_id, new_uuid

state = STATE


def get_number(key: str) -> PhoneNumber:
    found = state.number(key)
    if found is None:
        raise not_found()
    return found


def profile_reference(call: Call) -> str | None:
    profile_id = call.text("messaging_profile_id")
    if profile_id and profile_id not in state.profiles:
        raise missing_association(
            "messaging_profile_id", f"The messaging profile '{profile_id}' does not exist."
        )
    return profile_id or None


# ---------------------------------------------------------------------------------------------- search


@api("GET", "/v2/available_phone_numbers")
def search(call: Call, _: re.Match[str]) -> dict[str, Any]:
    found, total = inventory.search(state, call.filters())
    return {
        "data": [render.available(entry) for entry in found],
        "metadata": {"total_results": total, "best_effort_results": 0},
    }


# ---------------------------------------------------------------------------------------------- orders


@api("POST", "/v2/number_orders")
def create_order(call: Call, _: re.Match[str]) -> dict[str, Any]:
    entries = call.body.get("phone_numbers")
    if not entries:
        raise missing("phone_numbers")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise invalid("phone_numbers", "phone_numbers must be an array of objects with a phone_number.")
    wanted: list[str] = []
    for index, entry in enumerate(entries):
        number = e164(entry.get("phone_number"), f"phone_numbers/{index}/phone_number")
        if inventory.lookup(number) is None or state.held(number) is not None or number in wanted:
            raise not_available(number, f"/phone_numbers/{index}/phone_number")
        wanted.append(number)
    profile_id = profile_reference(call)
    now = iso()
    order = NumberOrder(
        id=new_uuid(),
        created_at=now,
        updated_at=now,
        phone_numbers=[],
        messaging_profile_id=profile_id,
        connection_id=call.text("connection_id") or None,
        billing_group_id=call.text("billing_group_id") or None,
        customer_reference=call.text("customer_reference") or None,
    )
    for number in wanted:
        record = PhoneNumber(
            id=new_numeric_id(),
            phone_number=number,
            created_at=now,
            purchased_at=now,
            updated_at=now,
            messaging_profile_id=profile_id,
            connection_id=order.connection_id,
            billing_group_id=order.billing_group_id,
            customer_reference=order.customer_reference,
        )
        state.numbers[record.id] = record
        order.phone_numbers.append(OrderedNumber(new_uuid(), number, record.id))
    state.orders[order.id] = order
    outcome = state.settings.order_outcome
    network.after(state.settings.order_seconds, lambda: _complete(order, outcome))
    return {"data": render.number_order(order)}


def _complete(order: NumberOrder, outcome: str) -> None:
    """The order's numbers are provisioned (``success``) or not (``failure``)."""
    now = iso()
    order.status, order.updated_at = outcome, now
    for entry in order.phone_numbers:
        entry.status = outcome
        number = state.numbers[entry.phone_number_id]
        if number.status != "purchase-pending":
            continue  # released meanwhile
        number.status = "active" if outcome == "success" else "purchase-failed"
        number.updated_at = now
        if outcome == "success":
            number.activated_at = now


@api("GET", "/v2/number_orders/{id}")
def get_order(call: Call, match: re.Match[str]) -> dict[str, Any]:
    order = state.orders.get(match[1])
    if order is None:
        raise not_found()
    return {"data": render.number_order(order)}


@api("GET", "/v2/number_orders")
def list_orders(call: Call, _: re.Match[str]) -> dict[str, Any]:
    """Newest first; ``filter[status]``, ``filter[customer_reference]``."""
    filters = call.filters()
    status, reference = filters.get("status"), filters.get("customer_reference")
    orders = [
        o
        for o in state.orders.values()
        if (not status or o.status == status) and (not reference or o.customer_reference == reference)
    ]
    orders.sort(key=lambda o: o.created_at, reverse=True)
    return page(call, orders, render.number_order)


# ---------------------------------------------------------------------------------------------- numbers


SORT_KEYS: Final[dict[str, Callable[[PhoneNumber], str]]] = {
    "purchased_at": lambda n: n.purchased_at,
    "phone_number": lambda n: n.phone_number,
    "connection_name": lambda n: "",
    "usage_payment_method": lambda n: "",
}
EXACT_FILTERS: Final = ("status", "customer_reference", "connection_id", "billing_group_id")


def _digits_match(pattern: Any, number: PhoneNumber) -> bool:
    """``filter[phone_number]``: digits found in the number. As documented, anything but digits (a ``+``
    included) matches nothing."""
    text = str(pattern)
    return text.isdigit() and text in number.phone_number


@api("GET", "/v2/phone_numbers")
def list_numbers(call: Call, _: re.Match[str]) -> dict[str, Any]:
    """Newest first unless ``sort``; ``filter[phone_number]`` (digits), ``filter[tag]``, ``filter[status]``,
    ``filter[customer_reference]``, ``filter[connection_id]``, ``filter[billing_group_id]``."""
    filters = call.filters()
    pattern, tag = filters.get("phone_number"), filters.get("tag")
    exact = {name: filters[name] for name in EXACT_FILTERS if filters.get(name)}
    numbers = [
        n
        for n in state.numbers.values()
        if n.status != "deleted"
        and (not pattern or _digits_match(pattern, n))
        and (not tag or tag in n.tags)
        and all(getattr(n, name) == value for name, value in exact.items())
    ]
    sort = call.query.get("sort")
    if sort is None:
        numbers.sort(key=lambda n: n.created_at, reverse=True)
    elif isinstance(sort, str) and sort in SORT_KEYS:
        numbers.sort(key=SORT_KEYS[sort])
    else:
        raise invalid("sort", f"sort must be one of {', '.join(SORT_KEYS)}.")
    return page(call, numbers, lambda n: render.phone_number(state, n))


@api("GET", "/v2/phone_numbers/{id}")
def get_phone_number(call: Call, match: re.Match[str]) -> dict[str, Any]:
    return {"data": render.phone_number(state, get_number(match[1]))}


@api("PATCH", "/v2/phone_numbers/{id}")
def update_phone_number(call: Call, match: re.Match[str]) -> dict[str, Any]:
    number = get_number(match[1])
    for name in ("customer_reference", "connection_id", "billing_group_id", "external_pin", "address_id"):
        if name in call.body:
            setattr(number, name, call.text(name) or None)
    tags = call.strings("tags")
    if tags is not None:
        number.tags = tags
    hd_voice = call.flag("hd_voice_enabled")
    if hd_voice is not None:
        number.hd_voice_enabled = hd_voice
    number.updated_at = iso()
    return {"data": render.phone_number(state, number)}


@api("DELETE", "/v2/phone_numbers/{id}")
def release_phone_number(call: Call, match: re.Match[str]) -> dict[str, Any]:
    """Release the number: it leaves the account (and its messaging profile) and goes back on sale."""
    number = get_number(match[1])
    number.status, number.updated_at = "deleted", iso()
    rendered = render.phone_number(state, number)
    number.messaging_profile_id = None
    return {"data": rendered}


@api("GET", "/v2/phone_numbers/{id}/messaging")
def get_messaging_settings(call: Call, match: re.Match[str]) -> dict[str, Any]:
    return {"data": render.messaging_settings(get_number(match[1]))}


@api("PATCH", "/v2/phone_numbers/{id}/messaging")
def update_messaging_settings(call: Call, match: re.Match[str]) -> dict[str, Any]:
    """``messaging_profile_id``: a profile's id assigns the number to it, ``""`` unassigns it, absent or
    null keeps it."""
    number = get_number(match[1])
    if call.body.get("messaging_profile_id") is not None:
        number.messaging_profile_id = profile_reference(call)
    tags = call.strings("tags")
    if tags is not None:
        number.tags = tags
    number.updated_at = iso()
    return {"data": render.messaging_settings(number)}
