"""Groups: ``POST /v1/groups/{number}`` creates one (signal-cli ``updateGroup`` without a group id), ``GET
/v1/groups/{number}`` lists the account's groups and ``GET /v1/groups/{number}/{groupid}`` shows one, both
with ``?expand=true`` for members as ``{number, uuid}``.

Ids: signal-cli's id is base64 of 32 random bytes (``internal_id``); the REST API's ``id`` is ``group.`` +
base64 of that text, which is also how ``POST /v2/send`` takes a group as recipient. Members are added at once
(every member has a profile key here) and each other member's signal-cli receives the group update. As in
signal-cli-rest-api 0.99, ``permissions.edit_group`` shows the send-messages permission."""

from __future__ import annotations

import base64
import secrets
from typing import Any, Final

from litestar import Request, Response, get, post

from .delivery import announce_group
from .recipients import resolve, rest_group_id
from .store import STATE, Group
from .wire import (
    INVALID_REQUEST,
    BadBody,
    Refused,
    answer,
    error,
    not_registered,
    required_body,
    strings_field,
    text_field,
)

PERMISSIONS: Final = {"every-member": "EVERY_MEMBER", "only-admins": "ONLY_ADMINS"}
LINK_STATES: Final = ("enabled", "enabled-with-approval", "disabled")
EXPAND_INVALID: Final = "Couldn't process request - expand parameter needs to be either 'true' or 'false'"

state = STATE


def _permission(body: dict[str, Any], name: str, label: str) -> str:
    permissions = body.get("permissions") or {}
    if not isinstance(permissions, dict):
        raise BadBody
    value = permissions.get(name) or ""
    if not isinstance(value, str):
        raise BadBody
    if value and value not in PERMISSIONS:
        raise Refused(f"Invalid {label} provided - only 'every-member' and 'only-admins' allowed!")
    return PERMISSIONS.get(value, "EVERY_MEMBER")


def _rest_permission(value: str) -> str:
    return {"EVERY_MEMBER": "every-member", "ONLY_ADMINS": "only-admins"}.get(value, "")


def _entry(group: Group, expand: bool) -> dict[str, Any]:
    def people(numbers: list[str]) -> list[Any]:
        if not expand:
            return list(numbers)
        return [{"number": number, "uuid": state.signal_users.get(number, "")} for number in numbers]

    return {
        "name": group.name,
        "description": group.description,
        "id": rest_group_id(group),
        "internal_id": group.id,
        "members": people(group.members),
        "blocked": False,
        "pending_invites": [],
        "pending_requests": [],
        "invite_link": group.invite_link,
        "admins": people(group.admins),
        "permissions": {
            "add_members": _rest_permission(group.add_members),
            "edit_group": _rest_permission(group.send_messages),
            "send_messages": _rest_permission(group.send_messages),
        },
    }


@post("/v1/groups/{number:str}", include_in_schema=False)
async def create_group(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    """``{"name", "members": [...], "description", "permissions": {"add_members", "edit_group",
    "send_messages"}, "group_link", "expiration_time"}`` (all optional) -> 201 ``{"id": "group...."}``."""
    try:
        body = await required_body(request)
        name = text_field(body, "name")
        members = strings_field(body, "members")
        description = text_field(body, "description")
        link = text_field(body, "group_link")
        expiration = body.get("expiration_time")
        if expiration is not None and (not isinstance(expiration, int) or isinstance(expiration, bool)):
            raise BadBody
        add_members = _permission(body, "add_members", "add members permission")
        _permission(body, "edit_group", "edit group permissions")  # checked; the REST API never shows it
        send_messages = _permission(body, "send_messages", "send messages permissions")
    except BadBody:
        return error(INVALID_REQUEST)
    except Refused as exc:
        return error(str(exc))
    if link and link not in LINK_STATES:
        return error(
            "Invalid group link provided - only 'enabled', 'enabled-with-approval' and 'disabled' allowed!"
        )
    creator = state.registered(number)
    if creator is None:
        return error(not_registered(number))
    try:
        people = [resolve(member) for member in members]
    except Refused as exc:
        return error(str(exc))
    numbers = list(dict.fromkeys([creator.number, *(person.number for person in people)]))
    group = Group(
        id=base64.b64encode(secrets.token_bytes(32)).decode(),
        name=name,
        description=description,
        members=numbers,
        admins=[creator.number],
        add_members=add_members,
        send_messages=send_messages,
        invite_link=f"https://signal.group/#{secrets.token_urlsafe(48)}"
        if link.startswith("enabled")
        else "",
        expiration_seconds=expiration or 0,
    )
    state.groups[group.id] = group
    announce_group(group, creator, state.timestamp())
    return answer({"id": rest_group_id(group)}, 201)


def _expand(request: Request[Any, Any, Any]) -> bool | None:
    value = request.query_params.get("expand", "false")
    return {"true": True, "false": False}.get(value)


@get("/v1/groups/{number:str}", include_in_schema=False)
async def list_groups(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    expand = _expand(request)
    if expand is None:
        return error(EXPAND_INVALID)
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    return answer([_entry(g, expand) for g in state.groups.values() if account.number in g.members])


@get("/v1/groups/{number:str}/{groupid:str}", include_in_schema=False)
async def get_group(request: Request[Any, Any, Any], number: str, groupid: str) -> Response[bytes]:
    expand = _expand(request)
    if expand is None:
        return error(EXPAND_INVALID)
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    for group in state.groups.values():
        if account.number in group.members and rest_group_id(group) == groupid:
            return answer(_entry(group, expand))
    return error("No group with that id found", 404)


HANDLERS = [create_group, list_groups, get_group]
