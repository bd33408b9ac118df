"""Admin SDK Directory API, ``users`` (``/admin/directory/v1/users...``), acting for an administrator of the
sandbox domain. Inserting a user sets up their mailbox and primary calendar; deleting removes them."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Callable
from typing import Any, Final

from litestar import Request, Response, delete, get, patch, post, put

from .auth import DIRECTORY_LIST, DIRECTORY_READ, DIRECTORY_WRITE, authorize, require_admin, subject_user
from .common import json_body, page_offset, page_token, query, query_bool, query_int
from .errors import GoogleError, answer, bad_request, invalid, not_authorized
from .store import CUSTOMER_ID, STATE, User, now, numeric_id, rfc3339_millis

SERVICE: Final = "admin.googleapis.com"
BASE: Final = "/admin/directory/v1/users"
_EMAIL: Final = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_NEVER: Final = "1970-01-01T00:00:00.000Z"
# Writable fields the sandbox keeps as given (and returns); the rest of the User schema is output only.
_STORED: Final = frozenset(
    {
        "addresses",
        "customSchemas",
        "emails",
        "externalIds",
        "gender",
        "guestAccountInfo",
        "ims",
        "isGuestUser",
        "keywords",
        "languages",
        "locations",
        "notes",
        "organizations",
        "phones",
        "posixAccounts",
        "recoveryEmail",
        "recoveryPhone",
        "relations",
        "sshPublicKeys",
        "websites",
    }
)
_HANDLED: Final = frozenset(
    {
        "primaryEmail",
        "name",
        "password",
        "hashFunction",
        "suspended",
        "archived",
        "changePasswordAtNextLogin",
        "includeInGlobalAddressList",
        "ipWhitelisted",
        "orgUnitPath",
    }
)
_OUTPUT_ONLY: Final = frozenset(
    {
        "kind",
        "id",
        "etag",
        "agreedToTerms",
        "aliases",
        "archivalTime",
        "creationTime",
        "customerId",
        "deletionTime",
        "isAdmin",
        "isDelegatedAdmin",
        "isEnforcedIn2Sv",
        "isEnrolledIn2Sv",
        "isMailboxSetup",
        "lastLoginTime",
        "nonEditableAliases",
        "suspensionReason",
        "suspensionTime",
        "thumbnailPhotoEtag",
        "thumbnailPhotoUrl",
    }
)
_BOOLEANS: Final = (
    "suspended",
    "archived",
    "changePasswordAtNextLogin",
    "includeInGlobalAddressList",
    "ipWhitelisted",
)


def _not_found() -> GoogleError:
    return GoogleError(404, "Resource Not Found: userKey", reason="notFound")


def _etag(user: User) -> str:
    digest = hashlib.sha1(f"{user.id}:{user.version}".encode()).hexdigest()[:27]
    return f'"{digest}/{hashlib.md5(digest.encode()).hexdigest()[:27]}"'


def _emails(user: User) -> list[dict[str, Any]]:
    emails: list[dict[str, Any]] = [{"address": user.primary_email, "primary": True}]
    emails += [{"address": alias} for alias in user.aliases]
    known = {e["address"].lower() for e in emails}
    for extra in user.extra.get("emails") or ():
        if isinstance(extra, dict) and str(extra.get("address", "")).lower() not in known:
            emails.append(extra)
    return emails


def render(user: User, *, public: bool = False, custom: bool = False) -> dict[str, Any]:
    """The User resource (``viewType=domain_public``: the fields every user of the domain may see)."""
    name: dict[str, Any] = {
        "givenName": user.given_name,
        "familyName": user.family_name,
        "fullName": user.full_name,
    }
    if user.display_name:
        name["displayName"] = user.display_name
    body: dict[str, Any] = {"kind": "admin#directory#user", "id": user.id, "etag": _etag(user)}
    body["primaryEmail"] = user.primary_email
    body["name"] = name
    if public:
        body["emails"] = _emails(user)
        for key in ("phones", "organizations", "addresses", "relations", "websites", "externalIds"):
            if key in user.extra:
                body[key] = user.extra[key]
        return body
    body |= {
        "isAdmin": user.is_admin,
        "isDelegatedAdmin": False,
        "lastLoginTime": _NEVER,
        "creationTime": rfc3339_millis(user.created),
        "agreedToTerms": False,
        "suspended": user.suspended,
    }
    if user.suspended:
        body["suspensionReason"] = "ADMIN"
    body |= {
        "archived": user.archived,
        "changePasswordAtNextLogin": user.change_password_at_next_login,
        "ipWhitelisted": user.ip_whitelisted,
        "emails": _emails(user),
    }
    if user.aliases:
        body["aliases"] = list(user.aliases)
    body |= {
        "customerId": CUSTOMER_ID,
        "orgUnitPath": user.org_unit_path,
        "isMailboxSetup": True,
        "isEnrolledIn2Sv": False,
        "isEnforcedIn2Sv": False,
        "includeInGlobalAddressList": user.include_in_global_address_list,
    }
    for key, value in user.extra.items():
        if key in ("emails", "customSchemas"):
            continue
        body[key] = value
    if custom and "customSchemas" in user.extra:
        body["customSchemas"] = user.extra["customSchemas"]
    if user.deleted is not None:
        body["deletionTime"] = rfc3339_millis(user.deleted)
    return body


# ---------------------------------------------------------------------------------------------- writes


def _check_email(value: Any, *, current: User | None) -> str:
    if not isinstance(value, str) or not _EMAIL.match(value.strip()):
        raise invalid("Invalid Input: primary_user_email")
    email = value.strip().lower()
    if not STATE.in_domain(email):
        raise not_authorized()
    owner = STATE.user_by_key(email)
    if owner is not None and owner is not current:
        raise GoogleError(409, "Entity already exists.", reason="duplicate")
    return email


def _name_part(name: dict[str, Any], key: str, current: str | None) -> str:
    value = name.get(key, current)
    label = "GivenName" if key == "givenName" else "FamilyName"
    if not isinstance(value, str) or not value.strip() or len(value) > 60:
        raise invalid(f"Invalid Given/Family Name: {label}")
    return value.strip()


def _check_password(body: dict[str, Any]) -> str:
    password = body.get("password")
    hashed = body.get("hashFunction")
    if hashed is not None and hashed not in ("MD5", "SHA-1", "crypt"):
        raise invalid("Invalid Input: hashFunction")
    if not isinstance(password, str) or (hashed is None and not 8 <= len(password) <= 100):
        raise invalid("Invalid Password")
    return hashlib.sha256(password.encode()).hexdigest()


def _check_fields(body: dict[str, Any]) -> None:
    for key in body:
        if key not in _STORED and key not in _HANDLED and key not in _OUTPUT_ONLY:
            raise invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at 'resource': Cannot find field."
            )
    for key in _BOOLEANS:
        if key in body and not isinstance(body[key], bool):
            raise invalid(f"Invalid value at 'resource.{key}' (TYPE_BOOL), {body[key]!r}")
    if body.get("emails") is not None and not isinstance(body["emails"], list):
        raise invalid("Invalid Input: emails")
    if "name" in body and not isinstance(body["name"], dict):
        raise invalid(
            "Invalid value at 'resource.name' (type.googleapis.com/google.admin.directory.v1.UserName)"
        )
    if "orgUnitPath" in body and (
        not isinstance(body["orgUnitPath"], str) or not body["orgUnitPath"].startswith("/")
    ):
        raise invalid("Invalid Input: INVALID_OU_ID")


def _apply(user: User, body: dict[str, Any]) -> None:
    """Write the fields present in ``body`` (checked by ``_check_fields``) onto ``user``: patch semantics,
    which the Directory API's update (PUT) has too. The name and password are checked before anything is
    written, so a refused request changes nothing."""
    name: dict[str, Any] = body["name"] if isinstance(body.get("name"), dict) else {}
    given = _name_part(name, "givenName", user.given_name)
    family = _name_part(name, "familyName", user.family_name)
    password = _check_password(body) if "password" in body else None
    user.given_name, user.family_name = given, family
    if isinstance(name.get("displayName"), str):
        user.display_name = name["displayName"]
    if password is not None:
        user.password = password
        user.hash_function = body.get("hashFunction")
    if "suspended" in body and body["suspended"] != user.suspended:
        user.suspended = body["suspended"]
        user.suspension_time = now() if user.suspended else None
    if "archived" in body:
        user.archived = body["archived"]
    if "changePasswordAtNextLogin" in body:
        user.change_password_at_next_login = body["changePasswordAtNextLogin"]
    if "includeInGlobalAddressList" in body:
        user.include_in_global_address_list = body["includeInGlobalAddressList"]
    if "ipWhitelisted" in body:
        user.ip_whitelisted = body["ipWhitelisted"]
    if "orgUnitPath" in body:
        user.org_unit_path = body["orgUnitPath"]
    for key in _STORED:
        if key in body:
            if body[key] is None:
                user.extra.pop(key, None)
            else:
                user.extra[key] = body[key]
    user.version += 1


def _admin(request: Request[Any, Any, Any], scopes: frozenset[str], method: str) -> User:
    return require_admin(authorize(request, scopes, SERVICE, f"ccc.hosted.frontend.directory.v1.{method}"))


def _user(key: str) -> User:
    user = STATE.user_by_key(key)
    if user is None:
        raise _not_found()
    return user


@post(BASE, status_code=200, include_in_schema=False)
async def insert_user(request: Request[Any, Any, Any]) -> Response[bytes]:
    _admin(request, DIRECTORY_WRITE, "DirectoryUsers.Insert")
    body = await json_body(request)
    _check_fields(body)
    if "primaryEmail" not in body:
        raise invalid("Invalid Input: primary_user_email")
    email = _check_email(body["primaryEmail"], current=None)
    name: dict[str, Any] = body["name"] if isinstance(body.get("name"), dict) else {}
    user = User(
        id=numeric_id(),
        primary_email=email,
        given_name=_name_part(name, "givenName", None),
        family_name=_name_part(name, "familyName", None),
        created=now(),
    )
    _check_password(body)
    _apply(user, body)
    STATE.add_user(user)
    return answer(render(user))


@get(BASE + "/{user_key:str}", include_in_schema=False)
async def get_user(request: Request[Any, Any, Any], user_key: str) -> Response[bytes]:
    public = query(request, "viewType") == "domain_public"
    grant = authorize(request, DIRECTORY_READ, SERVICE, "ccc.hosted.frontend.directory.v1.DirectoryUsers.Get")
    if public:
        caller = subject_user(grant)
        if caller is None:
            raise not_authorized()
    else:
        require_admin(grant)
    user = _user(user_key)
    return answer(render(user, public=public, custom=query(request, "projection") in ("full", "custom")))


def _matcher(term: str) -> Callable[[User], bool]:
    """One term of a users.list ``query``: ``field:value`` (prefix, ``*`` optional), ``field=value`` (exact),
    or a bare word (a prefix of the email or a name)."""
    match = re.match(r"^(\w+)([:=])(.*)$", term, re.DOTALL)
    if match is None:
        word = term.lower().rstrip("*")
        return lambda u: any(
            v.lower().startswith(word) for v in (u.primary_email, u.given_name, u.family_name, *u.aliases)
        )
    field, operator, value = match.group(1), match.group(2), match.group(3).strip().lower()
    booleans: dict[str, Callable[[User], bool]] = {
        "isadmin": lambda u: u.is_admin,
        "issuspended": lambda u: u.suspended,
        "isarchived": lambda u: u.archived,
        "isenrolledin2sv": lambda u: False,
        "isenforcedin2sv": lambda u: False,
    }
    key = field.lower()
    if key in booleans:
        if value not in ("true", "false"):
            raise invalid("Invalid Input")
        flag = value == "true"
        test = booleans[key]
        return lambda u: test(u) == flag
    strings: dict[str, Callable[[User], list[str]]] = {
        "email": lambda u: [u.primary_email, *u.aliases],
        "givenname": lambda u: [u.given_name],
        "familyname": lambda u: [u.family_name],
        "name": lambda u: [u.full_name, u.given_name, u.family_name],
        "orgunitpath": lambda u: [u.org_unit_path],
    }
    if key not in strings:
        raise invalid("Invalid Input")
    values = strings[key]
    if operator == "=" and not value.endswith("*"):
        return lambda u: any(v.lower() == value for v in values(u))
    prefix = value.rstrip("*")
    return lambda u: any(
        v.lower().startswith(prefix) or any(w.startswith(prefix) for w in v.lower().split())
        for v in values(u)
    )


def _filter(text: str | None) -> Callable[[User], bool]:
    if not text:
        return lambda u: True
    try:
        terms = shlex.split(text)
    except ValueError:
        raise invalid("Invalid Input") from None
    matchers = [_matcher(term) for term in terms]
    return lambda u: all(m(u) for m in matchers)


@get(BASE, include_in_schema=False)
async def list_users(request: Request[Any, Any, Any]) -> Response[bytes]:
    public = query(request, "viewType") == "domain_public"
    grant = authorize(
        request, DIRECTORY_LIST, SERVICE, "ccc.hosted.frontend.directory.v1.DirectoryUsers.List"
    )
    if public:
        if subject_user(grant) is None:
            raise not_authorized()
    else:
        require_admin(grant)
    customer, domain = query(request, "customer"), query(request, "domain")
    if not customer and not domain:
        raise bad_request()
    if domain and domain.lower() != STATE.domain:
        raise GoogleError(404, "Domain not found.", reason="notFound")
    if customer and customer not in ("my_customer", CUSTOMER_ID):
        raise bad_request()
    limit = query_int(request, "maxResults", 100, 1, 500)
    order = query(request, "orderBy") or "email"
    if order not in ("email", "familyName", "givenName"):
        raise GoogleError(400, f"Invalid value '{order}'.", reason="invalidParameter", location="orderBy")
    descending = (query(request, "sortOrder") or "ASCENDING").upper() == "DESCENDING"
    keep = _filter(query(request, "query"))
    pool = STATE.deleted_users if query_bool(request, "showDeleted") else STATE.users
    keys: dict[str, Callable[[User], tuple[str, ...]]] = {
        "email": lambda u: (u.primary_email,),
        "familyName": lambda u: (u.family_name.lower(), u.given_name.lower(), u.primary_email),
        "givenName": lambda u: (u.given_name.lower(), u.family_name.lower(), u.primary_email),
    }
    users = sorted((u for u in pool.values() if keep(u)), key=keys[order], reverse=descending)
    offset = page_offset(query(request, "pageToken"))
    page = users[offset : offset + limit]
    body: dict[str, Any] = {"kind": "admin#directory#users", "etag": f'"{len(users)}-{offset}"'}
    if page:
        custom = query(request, "projection") in ("full", "custom")
        body["users"] = [render(u, public=public, custom=custom) for u in page]
    if offset + limit < len(users):
        body["nextPageToken"] = page_token(offset + limit)
    return answer(body)


async def _update(request: Request[Any, Any, Any], user_key: str, method: str) -> Response[bytes]:
    _admin(request, DIRECTORY_WRITE, method)
    user = _user(user_key)
    body = await json_body(request)
    _check_fields(body)
    email = _check_email(body["primaryEmail"], current=user) if "primaryEmail" in body else None
    _apply(user, body)
    if email is not None and email != user.primary_email:
        STATE.rename_user(user, email)
    return answer(render(user))


@put(BASE + "/{user_key:str}", status_code=200, include_in_schema=False)
async def update_user(request: Request[Any, Any, Any], user_key: str) -> Response[bytes]:
    return await _update(request, user_key, "DirectoryUsers.Update")


@patch(BASE + "/{user_key:str}", status_code=200, include_in_schema=False)
async def patch_user(request: Request[Any, Any, Any], user_key: str) -> Response[bytes]:
    return await _update(request, user_key, "DirectoryUsers.Patch")


@delete(BASE + "/{user_key:str}", status_code=204, include_in_schema=False)
async def delete_user(request: Request[Any, Any, Any], user_key: str) -> None:
    caller = _admin(request, DIRECTORY_WRITE, "DirectoryUsers.Delete")
    user = _user(user_key)
    if user is caller:
        raise invalid("Cannot delete yourself.", reason="invalid")
    STATE.remove_user(user)


@post(BASE + "/{user_key:str}/makeAdmin", status_code=204, include_in_schema=False)
async def make_admin(request: Request[Any, Any, Any], user_key: str) -> None:
    """``{"status": true|false}``: grant or revoke super-admin rights."""
    _admin(request, DIRECTORY_WRITE, "DirectoryUsers.MakeAdmin")
    user = _user(user_key)
    body = await json_body(request)
    if not isinstance(body.get("status"), bool):
        raise invalid("Invalid Input: status")
    user.is_admin = body["status"]
    user.version += 1


HANDLERS: Final = [insert_user, get_user, list_users, update_user, patch_user, delete_user, make_admin]
