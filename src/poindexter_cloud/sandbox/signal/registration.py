"""Accounts: register a number (a captcha first when Signal wants one), verify it with the texted code,
unregister it; plus ``/v1/about``, ``/v1/health`` and ``/v1/accounts``.

The error texts are signal-cli's (``RegisterCommand``, ``VerifyCommand``, ``CommandUtil``), passed through by
signal-cli-rest-api with the trailing newline of signal-cli's output, always with status 400."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Final

from litestar import Request, Response, get, post

from .sms import send_verification_sms
from .store import STATE, Account, Verification
from .wire import (
    INVALID_ACCOUNT,
    PHONE,
    BadBody,
    answer,
    bool_field,
    empty,
    error,
    not_registered,
    optional_body,
    text_field,
)

# What the signal-cli-rest-api image reports: its release (BUILD_VERSION) and its default mode.
VERSION: Final = "0.99"
MODE: Final = "normal"
INVALID_BODY: Final = "Couldn't process request - invalid request."
CAPTCHA_REQUIRED: Final = (
    "Captcha required for verification, use --captcha CAPTCHA\n"
    "To get the token, go to https://signalcaptchas.org/registration/generate.html\n"
    'After solving the captcha, right-click on the "Open Signal" link and copy the link.\n'
)
CAPTCHA_INVALID: Final = "Invalid captcha given.\n"
# A registration captcha token as signalcaptchas.org hands it out: provider.sitekey.action.token, action
# "registration" (Signal refuses other shapes with 400, which signal-cli reports as an invalid captcha).
CAPTCHA_TOKEN: Final = re.compile(r"^signal-(?:hcaptcha|recaptcha(?:-v\d)?)\.[^.]+\.registration\..+$")
ALREADY_REGISTERED: Final = "Failed to register: Account is already registered (IOException)\n"
VOICE_BEFORE_SMS: Final = (
    "Failed to register: Invalid verification method: Before requesting voice verification you need to "
    "request SMS verification and wait a minute.\n"
)
NO_SESSION: Final = "Verify error: No registration verification session active\n"
CODE_EXPIRED: Final = (
    "Verify error: Verification code expired, please request a new one by registering again.\n"
)
# A wrong code leaves the session unverified, so Signal refuses the registration that follows with 401.
WRONG_CODE: Final = "Verify error: [401] Authorization failed!\n"
VERIFY_REGISTERED: Final = "Verify error: Account is already registered\n"

state = STATE


def rate_limited(status: int) -> str:
    """What signal-cli reports when Signal answers 413 or 429 to a registration request."""
    return f"Failed to register: [{status}] Rate Limited (RateLimitException)\n"


def _needs_captcha(account: Account) -> bool:
    """Whether Signal asks this registration for a captcha; a pending demand attaches to the number's session
    until a captcha is solved."""
    if not account.captcha_required and account.number in state.captcha_numbers:
        state.captcha_numbers.discard(account.number)
        account.captcha_required = True
    elif not account.captcha_required and state.captcha_next > 0:
        state.captcha_next -= 1
        account.captcha_required = True
    return account.captcha_required


@post("/v1/register/{number:str}", include_in_schema=False)
async def register(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    """``{"captcha": "signalcaptcha://...", "use_voice": false}`` (both optional): Signal texts (or calls) a
    code. A number unregistered without ``delete_account`` is reactivated at once, with no code."""
    try:
        body = await optional_body(request)
        captcha = text_field(body, "captcha").removeprefix("signalcaptcha://")
        use_voice = bool_field(body, "use_voice")
    except BadBody:
        return error(INVALID_BODY)
    if not PHONE.match(number):
        return error(INVALID_ACCOUNT)
    account = state.account(number)
    if account.registered:
        return error(ALREADY_REGISTERED)
    if account.deactivated:
        account.registered, account.deactivated = True, False
        return empty(201)
    if _needs_captcha(account):
        if not captcha:
            return error(CAPTCHA_REQUIRED)
        if not CAPTCHA_TOKEN.match(captcha):
            return error(CAPTCHA_INVALID)
        account.captcha_required = False
    if use_voice and not account.sms_requested:
        return error(VOICE_BEFORE_SMS)
    code = f"{secrets.randbelow(1_000_000):06d}"
    account.verification = Verification(code, time.time())
    if use_voice:
        state.calls.append({"to": number, "code": code, "at": int(time.time())})
    else:
        account.sms_requested = True
        delivered = send_verification_sms(number, code)
        state.sms_log.append(
            {"to": number, "code": code, "delivered_to_telnyx": delivered, "at": int(time.time())}
        )
    return empty(201)


@post("/v1/register/{number:str}/verify/{token:str}", include_in_schema=False)
async def verify(request: Request[Any, Any, Any], number: str, token: str) -> Response[bytes]:
    """The code from the SMS, with or without its dash (``123-456``); ``{"pin": "..."}`` is accepted (no
    account here has a registration lock)."""
    try:
        text_field(await optional_body(request), "pin")
    except BadBody:
        return error(INVALID_BODY)
    if not PHONE.match(number):
        return error(INVALID_ACCOUNT)
    account = state.account(number)
    if account.registered:
        return error(VERIFY_REGISTERED)
    pending = account.verification
    if pending is None:
        return error(NO_SESSION)
    if pending.expired():
        return error(CODE_EXPIRED)
    if not secrets.compare_digest(token.replace("-", ""), pending.code):
        return error(WRONG_CODE)
    account.registered, account.verification, account.sms_requested = True, None, False
    account.uuid = state.aci(number)  # a new ACI if the old Signal account was deleted
    return empty(201)


@post("/v1/unregister/{number:str}", include_in_schema=False)
async def unregister(request: Request[Any, Any, Any], number: str) -> Response[bytes]:
    """``{"delete_account": false, "delete_local_data": false}``: stop receiving on this number. Without
    ``delete_account`` the Signal account stays (registering again reactivates it); with it the account and
    its ACI are gone. ``delete_local_data`` makes this API forget the number."""
    try:
        body = await optional_body(request)
        delete_account = bool_field(body, "delete_account")
        delete_local_data = bool_field(body, "delete_local_data")
    except BadBody:
        return error(INVALID_BODY)
    account = state.registered(number)
    if account is None:
        return error(not_registered(number))
    account.registered = False
    account.deactivated = not delete_account
    if delete_account:
        del state.signal_users[account.number]
    if delete_local_data:
        del state.accounts[account.number]
    return empty(204)


@get("/v1/about", include_in_schema=False)
async def about() -> Response[bytes]:
    return answer(
        {
            "versions": ["v1", "v2"],
            "build": 2,
            "mode": MODE,
            "version": VERSION,
            "capabilities": {"v2/send": ["quotes", "mentions"]},
        }
    )


@get("/v1/health", include_in_schema=False)
async def health() -> Response[bytes]:
    return empty(204)


@get("/v1/accounts", include_in_schema=False)
async def accounts() -> Response[bytes]:
    return answer([a.number for a in state.accounts.values() if a.registered])


HANDLERS = [register, verify, unregister, about, health, accounts]
