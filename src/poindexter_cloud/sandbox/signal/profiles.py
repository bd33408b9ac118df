"""The account's own profile (``PUT /v1/profiles/{number}``) and its contacts (``GET|PUT
/v1/contacts/{number}``, ``GET /v1/contacts/{number}/{uuid}``).

Contacts are the people the account has exchanged messages with plus those set with ``PUT``, each with the
Signal profile the sandbox knows for them under ``profile``. As with the real pairing of
signal-cli-rest-api 0.99 and signal-cli 0.14, ``profile_name``, ``blocked`` and ``message_expiration`` are
always empty: the REST API reads ``profileName``, ``blocked`` and ``messageExpiration``, which signal-cli's
``listContacts`` JSON does not have (it writes ``profile.givenName``, ``isBlocked``,
``messageExpirationTime``)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, put

from .store import STATE, Account, Contact, now_ms
from .wire import (
    INVALID_REQUEST,
    BadBody,
    answer,
    decode_base64,
    empty,
    error,
    not_registered,
    recipient_not_registered,
    required_body,
    text_field,
)

state = STATE


@put("/v1/profiles/{number:str}", include_in_schema=False)
async def update_profile(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    """``{"name": "...", "base64_avatar": "..."?, "about": "..."?}``; without an avatar the avatar is removed,
    without ``about`` the about text stays."""
    try:
        body = await required_body(request)
        name = text_field(body, "name")
        avatar_b64 = text_field(body, "base64_avatar")
        about = body.get("about")
        if about is not None and not isinstance(about, str):
            raise BadBody
    except BadBody:
        return error(INVALID_REQUEST)
    if not name:
        return error("Couldn't process request - profile name missing")
    avatar: bytes | None = None
    if avatar_b64:
        try:
            avatar = decode_base64(avatar_b64)
        except ValueError as exc:
            return error(f"Couldn't decode base64 encoded avatar: {exc}")
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    account.profile_name = name
    account.avatar = avatar
    if about is not None:
        account.about = about
    account.profile_updated_at = now_ms()
    return empty(204)


def _profile(number: str) -> dict[str, Any]:
    """The Signal profile of whoever has this number, as the account's signal-cli fetched it."""
    given, about, has_avatar, updated = "", "", False, 0
    other = state.registered(number)
    outsider = state.outsiders.get(number)
    if other is not None:
        given, about = other.profile_name, other.about
        has_avatar, updated = other.avatar is not None, other.profile_updated_at
    elif outsider is not None:
        given = outsider.name
    return {
        "given_name": given,
        "lastname": "",
        "about": about,
        "has_avatar": has_avatar,
        "last_updated_timestamp": updated,
    }


def _entry(account: Account, number: str) -> dict[str, Any]:
    contact = account.contacts.get(number, Contact())
    return {
        "number": number,
        "uuid": account.known.get(number) or state.signal_users.get(number, ""),
        "name": contact.name,
        "profile_name": "",
        "username": "",
        "color": "",
        "blocked": False,
        "message_expiration": "",
        "note": "",
        "profile": _profile(number),
        "given_name": contact.name,
        "nickname": {"name": "", "given_name": "", "family_name": ""},
    }


def _contacts(account: Account) -> list[dict[str, Any]]:
    return [_entry(account, number) for number in dict.fromkeys([*account.contacts, *account.known])]


def _all_recipients_flag(request: Request[Any, Any, Any]) -> Response[bytes] | None:
    if request.query_params.get("all_recipients", "false") not in ("true", "false"):
        return error(
            "Couldn't process request - all_recipients parameter needs to be either 'true' or 'false'"
        )
    return None


@get("/v1/contacts/{number:str}", include_in_schema=False)
async def list_contacts(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    refused = _all_recipients_flag(request)
    if refused is not None:
        return refused
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    return answer(_contacts(account))


@get("/v1/contacts/{number:str}/{identifier:str}", include_in_schema=False)
async def get_contact(request: Request[Any, Any, Any], number: str, identifier: str) -> Response[bytes]:
    """One contact by number or ACI."""
    refused = _all_recipients_flag(request)
    if refused is not None:
        return refused
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    for entry in _contacts(account):
        if identifier in (entry["number"], entry["uuid"]):
            return answer(entry)
    return error(f"No user with that id ({identifier}) found", 404)


@put("/v1/contacts/{number:str}", include_in_schema=False)
async def update_contact(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    """``{"recipient": "+1...", "name": "..."?, "expiration_in_seconds": 0?}``: the name this account gives
    the contact, and the disappearing-message timer of their conversation."""
    try:
        body = await required_body(request)
        recipient = text_field(body, "recipient")
        name = body.get("name")
        expiration = body.get("expiration_in_seconds")
        if (name is not None and not isinstance(name, str)) or (
            expiration is not None and (not isinstance(expiration, int) or isinstance(expiration, bool))
        ):
            raise BadBody
    except BadBody:
        return error(INVALID_REQUEST)
    if not recipient:
        return error("Couldn't process request - recipient missing")
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    other = state.party(recipient)
    if other is None:
        return error(recipient_not_registered(recipient))
    contact = account.contacts.setdefault(other.number, Contact())
    if name is not None:
        contact.name = name
    if expiration is not None:
        contact.expiration_seconds = expiration
    return empty(204)


HANDLERS = [update_profile, list_contacts, get_contact, update_contact]
