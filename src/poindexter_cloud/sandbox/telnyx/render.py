"""Records as Telnyx's JSON objects (the shapes telnyx-python 4.x models)."""

from __future__ import annotations

import math
from typing import Any, Final

from .inventory import Available
from .store import ORGANIZATION_ID, Message, MessagingProfile, NumberOrder, PhoneNumber, State

# What the sandbox charges per SMS part (rate + carrier fee), in USD.
RATE_PER_PART: Final = "0.0040"
CARRIER_FEE_PER_PART: Final = "0.0030"
# The GSM 03.38 basic character set (and the escape-table characters, which count twice): texts made of
# these go out as GSM-7, anything else as UCS-2.
_GSM7: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED: Final = frozenset("^{}\\[~]|€\f")


def available(entry: Available) -> dict[str, Any]:
    return {
        "record_type": "available_phone_number",
        "phone_number": entry.phone_number,
        "vanity_format": "",
        "best_effort": False,
        "quickship": True,
        "reservable": True,
        "region_information": [
            {"region_type": "rate_center", "region_name": entry.area.rate_center},
            {"region_type": "location", "region_name": entry.area.locality},
            {"region_type": "state", "region_name": entry.area.state},
            {"region_type": "country_code", "region_name": "US"},
        ],
        "cost_information": {"upfront_cost": "1.00", "monthly_cost": "1.00", "currency": "USD"},
        "features": [{"name": name} for name in entry.features],
    }


def phone_number(state: State, number: PhoneNumber) -> dict[str, Any]:
    profile = state.profiles.get(number.messaging_profile_id or "")
    return {
        "id": number.id,
        "record_type": "phone_number",
        "phone_number": number.phone_number,
        "status": number.status,
        "tags": list(number.tags),
        "external_pin": number.external_pin,
        "connection_id": number.connection_id,
        "connection_name": None,
        "customer_reference": number.customer_reference,
        "messaging_profile_id": number.messaging_profile_id,
        "messaging_profile_name": profile.name if profile is not None else None,
        "billing_group_id": number.billing_group_id,
        "emergency_enabled": False,
        "emergency_address_id": None,
        "emergency_status": "disabled",
        "call_forwarding_enabled": True,
        "cnam_listing_enabled": False,
        "caller_id_name_enabled": False,
        "call_recording_enabled": False,
        "t38_fax_gateway_enabled": False,
        "hd_voice_enabled": number.hd_voice_enabled,
        "inbound_call_screening": "disabled",
        "deletion_lock_enabled": False,
        "phone_number_type": "local",
        "country_iso_alpha2": "US",
        "source_type": "number_order",
        "purchased_at": number.purchased_at,
        "activated_at": number.activated_at,
        "created_at": number.created_at,
        "updated_at": number.updated_at,
    }


def messaging_settings(number: PhoneNumber) -> dict[str, Any]:
    feature = {"domestic_two_way": True, "international_inbound": True, "international_outbound": True}
    return {
        "id": number.id,
        "record_type": "messaging_settings",
        "phone_number": number.phone_number,
        "messaging_profile_id": number.messaging_profile_id,
        "messaging_product": "P2P",
        "eligible_messaging_products": ["A2P", "P2P"],
        "traffic_type": "P2P",
        "type": "long-code",
        "country_code": "US",
        "features": {"sms": feature, "mms": feature},
        "health": None,
        "organization_id": ORGANIZATION_ID,
        "tags": list(number.tags),
        "created_at": number.created_at,
        "updated_at": number.updated_at,
    }


def number_order(order: NumberOrder) -> dict[str, Any]:
    return {
        "id": order.id,
        "record_type": "number_order",
        "status": order.status,
        "phone_numbers_count": len(order.phone_numbers),
        "phone_numbers": [
            {
                "id": entry.id,
                "record_type": "number_order_phone_number",
                "phone_number": entry.phone_number,
                "status": entry.status,
                "regulatory_requirements": [],
                "requirements_met": True,
                "country_code": "US",
                "phone_number_type": "local",
            }
            for entry in order.phone_numbers
        ],
        "sub_number_orders_ids": [],
        "requirements_met": True,
        "connection_id": order.connection_id,
        "messaging_profile_id": order.messaging_profile_id,
        "billing_group_id": order.billing_group_id,
        "customer_reference": order.customer_reference,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def messaging_profile(profile: MessagingProfile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "record_type": "messaging_profile",
        "name": profile.name,
        "enabled": profile.enabled,
        "webhook_url": profile.webhook_url,
        "webhook_failover_url": profile.webhook_failover_url,
        "webhook_api_version": profile.webhook_api_version,
        "whitelisted_destinations": list(profile.whitelisted_destinations),
        "organization_id": ORGANIZATION_ID,
        "v1_secret": profile.v1_secret,
        "alpha_sender": None,
        "daily_spend_limit": "0.00",
        "daily_spend_limit_enabled": False,
        "mms_fall_back_to_sms": False,
        "mms_transcoding": False,
        "mobile_only": False,
        "smart_encoding": False,
        "number_pool_settings": None,
        "url_shortener_settings": None,
        "health_webhook_url": None,
        "ai_assistant_id": None,
        "resource_group_id": None,
        "redaction_enabled": False,
        "redaction_level": 0,
        **profile.settings,
        "created_at": profile.created_at,
        "updated_at": profile.updated_at,
    }


def encoding(text: str) -> str:
    return "GSM-7" if all(c in _GSM7 or c in _GSM7_EXTENDED for c in text) else "UCS-2"


def parts(text: str | None) -> int:
    """SMS segments: 160 GSM-7 characters (153 per part when concatenated), or 70 UCS-2 ones (67)."""
    if not text:
        return 1
    if encoding(text) == "GSM-7":
        size = sum(2 if c in _GSM7_EXTENDED else 1 for c in text)
        return 1 if size <= 160 else math.ceil(size / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def _money(value: float) -> dict[str, str]:
    return {"amount": f"{value:.4f}", "currency": "USD"}


def message(msg: Message) -> dict[str, Any]:
    count = parts(msg.text)
    inbound = msg.direction == "inbound"
    rate = 0.0 if inbound else float(RATE_PER_PART) * count
    fee = 0.0 if inbound else float(CARRIER_FEE_PER_PART) * count
    sender: dict[str, Any] = {
        "phone_number": msg.sender.phone_number,
        "carrier": msg.sender.carrier,
        "line_type": msg.sender.line_type,
    }
    return {
        "record_type": "message",
        "direction": msg.direction,
        "id": msg.id,
        "type": msg.type,
        "messaging_profile_id": msg.messaging_profile_id,
        "organization_id": ORGANIZATION_ID,
        "from": sender,
        "to": [
            {
                "phone_number": msg.recipient.phone_number,
                "status": msg.status,
                "carrier": msg.recipient.carrier,
                "line_type": msg.recipient.line_type,
            }
        ],
        "cc": [],
        "text": msg.text,
        "subject": msg.subject,
        "media": [{"url": url, "content_type": None, "sha256": None, "size": None} for url in msg.media_urls],
        "webhook_url": msg.webhook_url,
        "webhook_failover_url": msg.webhook_failover_url,
        "encoding": encoding(msg.text or ""),
        "parts": count,
        "tags": list(msg.tags),
        "cost": _money(rate + fee),
        "cost_breakdown": {"rate": _money(rate), "carrier_fee": _money(fee)},
        "tcr_campaign_id": None,
        "tcr_campaign_billable": False,
        "tcr_campaign_registered": None,
        "received_at": msg.received_at,
        "sent_at": msg.sent_at,
        "completed_at": msg.completed_at,
        "valid_until": None,
        "errors": list(msg.errors),
    }
