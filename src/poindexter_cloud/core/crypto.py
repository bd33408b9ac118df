"""Keys derived from SECRET_KEY, and the keyed hash used for every high-entropy token we store.

During a rotation SECRET_KEY_PREVIOUS holds the old root secret: new values are hashed and signed with the
current one, while what the old one hashed or signed still verifies (``KeyRing``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class KeyRing:
    """One purpose's keys: the current one first, then the previous root secret's (during a rotation)."""

    keys: tuple[bytes, ...]

    @classmethod
    def derive(cls, purpose: str, secret_key_hex: str, previous_hex: str | None = None) -> KeyRing:
        roots = (secret_key_hex, previous_hex) if previous_hex else (secret_key_hex,)
        return cls(tuple(derive_key(root, purpose) for root in roots))

    @property
    def current(self) -> bytes:
        return self.keys[0]

    def hash(self, value: str) -> str:
        """The hash to store: under the current key."""
        return keyed_hash(self.keys[0], value)

    def hashes(self, value: str) -> tuple[str, ...]:
        """Every hash a stored value may have: look up with any of them."""
        return tuple(keyed_hash(key, value) for key in self.keys)


def key_id(key: bytes) -> str:
    """A short, public name for a key (a JWT ``kid``): its fingerprint, never the key."""
    return "s" + hashlib.sha256(key).hexdigest()[:8]
