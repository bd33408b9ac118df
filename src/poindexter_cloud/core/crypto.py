"""Keys derived from SECRET_KEY, the keyed hash used for every high-entropy token we store, and AES-256-GCM
for the few secrets we must read back later (``Sealer``).

During a rotation SECRET_KEY_PREVIOUS holds the old root secret: new values are hashed, signed and sealed
with the current one, while what the old one hashed, signed or sealed still verifies or opens (``KeyRing``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


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


class SealBroken(ValueError):
    """A sealed value that no key of the ring opens: altered, or sealed under a retired secret."""


@dataclass(frozen=True, slots=True)
class Sealer:
    """AES-256-GCM under one purpose's keys, for a secret that must be stored and read back (a job payload
    that carries one, say): ``v1.`` then base64url of a random 96-bit nonce, the ciphertext and its tag."""

    ring: KeyRing

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(self.ring.current).encrypt(nonce, plaintext.encode(), None)
        return "v1." + base64.urlsafe_b64encode(sealed).decode()

    def open(self, sealed: str) -> str:
        version, _, encoded = sealed.partition(".")
        try:
            raw = base64.urlsafe_b64decode(encoded)
        except ValueError:
            raise SealBroken("not a sealed value") from None
        if version != "v1" or len(raw) < 12 + 16:
            raise SealBroken("not a sealed value")
        for key in self.ring.keys:
            try:
                return AESGCM(key).decrypt(raw[:12], raw[12:], None).decode()
            except InvalidTag:
                continue
        raise SealBroken("no current key opens this value")
