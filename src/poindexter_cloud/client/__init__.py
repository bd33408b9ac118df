"""The reference client of Poindexter Cloud for the Dex side: the identity API (email, calendar, Signal, SMS)
and AI clients pointed at the proxy. ``docs/dex-client.md`` walks through it."""

from poindexter_cloud.client.dex import DexClient, PoindexterError, upload

__all__ = ["DexClient", "PoindexterError", "upload"]
