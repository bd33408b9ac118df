"""Poindexter Cloud: the managed service every self-hosted Dex assistant plugs into."""

__version__ = "0.1.0"
