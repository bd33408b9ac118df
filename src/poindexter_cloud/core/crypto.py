"""Keys derived from SECRET_KEY, and the keyed hash used for every high-entropy token we store."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache


@lru_cache(maxsize=32)
def derive_key(secret_key_hex: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, so one root secret never signs two kinds of thing."""
    return hmac.new(bytes.fromhex(secret_key_hex), purpose.encode(), hashlib.sha256).digest()


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 in hex: for random tokens a slow hash adds nothing, and this allows an indexed lookup."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
