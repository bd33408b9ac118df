"""Access tokens (short-lived JWTs with a key id) and opaque secrets stored only as keyed hashes.

Signing keys come from JWT_SIGNING_KEYS ("kid:hex,kid:hex"): the first signs, every one verifies, so a new
key can be introduced first in the list and the old one dropped once the last token it signed has expired,
without logging anyone out. Without the setting the key is derived from SECRET_KEY (named by its
fingerprint), and during a SECRET_KEY rotation the one derived from SECRET_KEY_PREVIOUS verifies too.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from poindexter_cloud.accounts.errors import InvalidToken
from poindexter_cloud.core.crypto import KeyRing, key_id
from poindexter_cloud.core.settings import Settings

ALGORITHM = "HS256"
ISSUER = "poindexter-cloud"


@dataclass(frozen=True, slots=True)
class SigningKeys:
    active_kid: str
    keys: dict[str, bytes]

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        if not settings.jwt_signing_keys:
            ring = KeyRing.derive("jwt-signing", settings.secret_key, settings.secret_key_previous)
            return cls(key_id(ring.current), {key_id(key): key for key in ring.keys})
        pairs = [entry.strip().partition(":") for entry in settings.jwt_signing_keys.split(",")]
        keys = {kid: bytes.fromhex(secret) for kid, _, secret in pairs}
        return cls(pairs[0][0], keys)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID


def issue_access_token(keys: SigningKeys, user_id: uuid.UUID, session_id: uuid.UUID, ttl_seconds: int) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": now,
        "exp": now + ttl_seconds,
        "iss": ISSUER,
    }
    return jwt.encode(claims, keys.keys[keys.active_kid], ALGORITHM, headers={"kid": keys.active_kid})


def read_access_token(keys: SigningKeys, token: str) -> AccessClaims:
    """The claims of a valid token; InvalidToken if it is expired, tampered or signed by an unknown key."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("The access token is not valid.")
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid"]},
        )
        return AccessClaims(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]))
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The access token has expired; refresh it.") from None
    except (jwt.InvalidTokenError, ValueError):
        raise InvalidToken("The access token is not valid.") from None
