"""Who a message goes to. signal-cli-rest-api sorts each recipient into a number (a ``+`` number or an ACI), a
group (``group.`` + base64 of signal-cli's base64 group id, which decodes to 32 bytes) or a username; then
signal-cli resolves numbers and usernames to Signal accounts and group ids to the groups it knows."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field
from typing import Final

from .store import STATE, Account, Group, OutsideUser
from .wire import Refused, recipient_not_registered

GROUP_PREFIX: Final = "group."


@dataclass(slots=True)
class Recipients:
    numbers: list[str] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)  # signal-cli's ids (decoded once)
    usernames: list[str] = field(default_factory=list)


def rest_group_id(group: Group) -> str:
    return GROUP_PREFIX + base64.b64encode(group.id.encode()).decode()


def _decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_phone_number(text: str) -> bool:
    """signal-cli-rest-api's test: a ``+`` then digits and spaces."""
    return text.startswith("+") and all(char.isdigit() or char == " " for char in text[1:])


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def classify(values: list[str]) -> Recipients:
    """Sort the recipients of ``POST /v2/send`` and refuse the mixes signal-cli-rest-api refuses."""
    sorted_out = Recipients()
    for value in values:
        if value.startswith(GROUP_PREFIX):
            encoded = value.removeprefix(GROUP_PREFIX)
            once = _decode(encoded)
            twice = _decode(once.decode("latin-1")) if once is not None else None
            if twice is not None and len(twice) != 32:
                raise Refused(f"Invalid Signal group size ({len(twice)}")
            if twice is not None and once is not None:
                sorted_out.group_ids.append(once.decode("latin-1"))
            elif once is None and len(encoded) <= 10:
                sorted_out.usernames.append(value)
            else:
                raise Refused(f"Invalid identifier {value}")
        elif _is_phone_number(value) or _is_uuid(value):
            sorted_out.numbers.append(value)
        else:
            sorted_out.usernames.append(value)
    numbers, groups, usernames = sorted_out.numbers, sorted_out.group_ids, sorted_out.usernames
    if numbers and groups:
        raise Refused(
            "Signal Messenger Groups and phone numbers cannot be specified together in one request! Please "
            "split them up into multiple REST API calls."
        )
    if usernames and groups:
        raise Refused(
            "Signal Messenger Groups and usernames cannot be specified together in one request! Please split "
            "them up into multiple REST API calls."
        )
    if numbers and usernames:
        raise Refused(
            "Signal Messenger phone numbers and usernames cannot be specified together in one request! "
            "Please split them up into multiple REST API calls."
        )
    if len(groups) > 1:
        raise Refused(
            "A signal message cannot be sent to more than one group at once! Please use multiple REST API "
            "calls for that."
        )
    return sorted_out


def resolve(identifier: str) -> Account | OutsideUser:
    """A number, ACI or username to whoever has that Signal account (the sandbox has no usernames)."""
    found = STATE.party(identifier)
    if found is None:
        raise Refused(recipient_not_registered(identifier))
    return found


def group_for(account: Account, group_id: str, *, sending: bool) -> Group:
    """The group signal-cli finds for ``account`` under its id, with signal-cli's refusals."""
    group = STATE.groups.get(group_id)
    if group is None:
        raise Refused(f"Group not found: {group_id}\n")
    if account.number not in group.members:
        raise Refused(f"User is not a member in group: {group.name} ({group.id})\n")
    if sending and group.send_messages == "ONLY_ADMINS" and account.number not in group.admins:
        raise Refused(f"User is not allowed to send message to group: {group.name} ({group.id})\n")
    return group
