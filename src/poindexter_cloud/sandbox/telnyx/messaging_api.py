"""Messaging: messaging profiles (where a number's webhooks go) and messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from . import network, render
from .api import E164, Call, api, e164, page
from .errors import (
    invalid,
    invalid_from,
    invalid_to,
    message_too_large,
    missing,
    missing_association,
    not_found,
    resource_in_use,
)
from .store import STATE, MessagingProfile, iso, new_uuid

state = STATE

# Profile settings the simulator stores and echoes back without acting on them.
PASSIVE_SETTINGS: Final = (
    "alpha_sender",
    "daily_spend_limit",
    "daily_spend_limit_enabled",
    "mms_fall_back_to_sms",
    "mms_transcoding",
    "mobile_only",
    "number_pool_settings",
    "url_shortener_settings",
    "health_webhook_url",
    "ai_assistant_id",
    "resource_group_id",
    "smart_encoding",
    "features",
    "redaction_enabled",
    "redaction_level",
)
WEBHOOK_API_VERSIONS: Final = ("1", "2", "2010-04-01")
# Carriers take concatenated SMS of at most 10 parts (1,530 GSM-7 or 670 UCS-2 characters); Telnyx refuses a
# longer one with 40302 unless the profile chunks it (``auto_chunk_long_messages``, not simulated).
MAX_SMS_PARTS: Final = 10


def get_profile(profile_id: str) -> MessagingProfile:
    found = state.profiles.get(profile_id)
    if found is None:
        raise not_found()
    return found


def _apply(profile: MessagingProfile, call: Call) -> None:
    if "name" in call.body:
        profile.name = call.text("name", required=True) or ""
    destinations = call.strings("whitelisted_destinations")
    if destinations is not None:
        profile.whitelisted_destinations = [d.upper() for d in destinations]
    if "webhook_url" in call.body:
        profile.webhook_url = call.url("webhook_url")
    if "webhook_failover_url" in call.body:
        profile.webhook_failover_url = call.url("webhook_failover_url")
    version = call.text("webhook_api_version")
    if version is not None:
        if version not in WEBHOOK_API_VERSIONS:
            raise invalid("webhook_api_version", "webhook_api_version must be one of 1, 2, 2010-04-01.")
        profile.webhook_api_version = version
    enabled = call.flag("enabled")
    if enabled is not None:
        profile.enabled = enabled
    for name in PASSIVE_SETTINGS:
        if name in call.body:
            profile.settings[name] = call.body[name]
    profile.updated_at = iso()


# ---------------------------------------------------------------------------------------------- profiles


@api("POST", "/v2/messaging_profiles")
def create_profile(call: Call, _: re.Match[str]) -> dict[str, Any]:
    name = call.text("name", required=True) or ""
    destinations = call.strings("whitelisted_destinations", required=True) or []
    now = iso()
    profile = MessagingProfile(new_uuid(), now, now, name, destinations)
    _apply(profile, call)
    state.profiles[profile.id] = profile
    return {"data": render.messaging_profile(profile)}


def _name_filter(value: Any) -> Callable[[str], bool]:
    """``filter[name]=x`` or ``filter[name][eq]=x`` (exact), ``filter[name][contains]=x``."""
    if isinstance(value, dict):
        eq, contains = value.get("eq"), value.get("contains")
        return lambda name: (eq is None or name == eq) and (contains is None or str(contains) in name)
    return lambda name: value is None or name == value


@api("GET", "/v2/messaging_profiles")
def list_profiles(call: Call, _: re.Match[str]) -> dict[str, Any]:
    """Newest first; ``filter[name]``, ``filter[name][eq]``, ``filter[name][contains]``."""
    wanted = _name_filter(call.filters().get("name"))
    profiles = [p for p in state.profiles.values() if wanted(p.name)]
    profiles.sort(key=lambda p: p.created_at, reverse=True)
    return page(call, profiles, render.messaging_profile)


@api("GET", "/v2/messaging_profiles/{id}")
def get_profile_route(call: Call, match: re.Match[str]) -> dict[str, Any]:
    return {"data": render.messaging_profile(get_profile(match[1]))}


@api("PATCH", "/v2/messaging_profiles/{id}")
def update_profile(call: Call, match: re.Match[str]) -> dict[str, Any]:
    profile = get_profile(match[1])
    _apply(profile, call)
    return {"data": render.messaging_profile(profile)}


@api("DELETE", "/v2/messaging_profiles/{id}")
def delete_profile(call: Call, match: re.Match[str]) -> dict[str, Any]:
    profile = get_profile(match[1])
    if any(n.messaging_profile_id == profile.id and n.status != "deleted" for n in state.numbers.values()):
        raise resource_in_use()
    del state.profiles[profile.id]
    return {"data": render.messaging_profile(profile)}


@api("GET", "/v2/messaging_profiles/{id}/phone_numbers")
def profile_numbers(call: Call, match: re.Match[str]) -> dict[str, Any]:
    profile = get_profile(match[1])
    numbers = [
        n for n in state.numbers.values() if n.messaging_profile_id == profile.id and n.status != "deleted"
    ]
    return page(call, numbers, render.messaging_settings)


# ---------------------------------------------------------------------------------------------- messages


def _destination(call: Call) -> str:
    to = call.body.get("to")
    if to is None or to == "":
        raise missing("to")
    if isinstance(to, list) and len(to) == 1:
        to = to[0]
    if not isinstance(to, str) or not E164.match(to):
        raise invalid_to()
    return to


@api("POST", "/v2/messages", idempotent=True)
@api("POST", "/v2/messages/long_code", idempotent=True)
@api("POST", "/v2/messages/number_pool", idempotent=True)
def send_message(call: Call, _: re.Match[str]) -> dict[str, Any]:
    """From ``from`` (an active number of the account, in a messaging profile); or, on ``/v2/messages`` and
    ``/v2/messages/number_pool``, from one of ``messaging_profile_id``'s numbers."""
    to = _destination(call)
    text = call.text("text")
    media_urls = call.strings("media_urls") or []
    if not text and not media_urls:
        raise missing("text")
    if not media_urls and (parts := render.parts(text)) > MAX_SMS_PARTS:
        raise message_too_large(parts, MAX_SMS_PARTS)
    sender = call.text("from")
    profile_id = call.text("messaging_profile_id")
    if sender:
        e164(sender, "from")
        number = state.owned(sender)
        if number is None:
            raise invalid_from(f"The 'from' address {sender} is not a phone number on your account.")
    elif profile_id and call.path != "/v2/messages/long_code":
        if profile_id not in state.profiles:
            raise missing_association(
                "messaging_profile_id", f"The messaging profile '{profile_id}' does not exist."
            )
        pool = [
            n for n in state.numbers.values() if n.messaging_profile_id == profile_id and n.status == "active"
        ]
        if not pool:
            raise invalid_from(f"The messaging profile '{profile_id}' has no phone numbers to send from.")
        number = pool[0]
    else:
        raise missing("from")
    profile = state.profiles.get(number.messaging_profile_id or "")
    if profile is None:
        raise invalid_from(
            f"The 'from' address {number.phone_number} is not assigned to a messaging profile."
        )
    if not profile.enabled:
        raise invalid_from(f"The messaging profile of {number.phone_number} is disabled.")
    use_profile_webhooks = call.flag("use_profile_webhooks")
    message = network.send(
        number,
        profile,
        to,
        text,
        media_urls,
        subject=call.text("subject"),
        webhook_url=call.url("webhook_url"),
        webhook_failover_url=call.url("webhook_failover_url"),
        use_profile_webhooks=True if use_profile_webhooks is None else use_profile_webhooks,
        tags=call.strings("tags") or (),
    )
    return {"data": render.message(message)}


@api("GET", "/v2/messages/{id}")
def get_message(call: Call, match: re.Match[str]) -> dict[str, Any]:
    message = state.messages.get(match[1])
    if message is None:
        raise not_found()
    return {"data": render.message(message)}
