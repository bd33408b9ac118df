"""Webhook signatures the way Telnyx makes them: Ed25519 over ``f"{timestamp}|{body}"``, sent base64-encoded
in ``telnyx-signature-ed25519`` with the unix time in ``telnyx-timestamp``.

The key pair is generated once per process and kept for its lifetime; the public key (base64 of the raw 32
bytes, the form Mission Control shows) is what the SDK's ``client.webhooks.unwrap(..., key=...)`` takes.
"""

from __future__ import annotations

import base64
import time
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_PRIVATE_KEY: Final = Ed25519PrivateKey.generate()
_PUBLIC_KEY_B64: Final = base64.b64encode(
    _PRIVATE_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode("ascii")


def sandbox_public_key() -> str:
    """The sandbox's webhook public key, base64 (give it to ``telnyx.AsyncTelnyx(public_key=...)``)."""
    return _PUBLIC_KEY_B64


def sign(body: str, timestamp: int | None = None) -> dict[str, str]:
    """The two signature headers for ``body`` signed at ``timestamp`` (now by default)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = _PRIVATE_KEY.sign(f"{stamp}|{body}".encode())
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode("ascii"),
        "telnyx-timestamp": stamp,
    }
