"""Local simulators of the providers' real wire APIs, served on one port with a path prefix per provider.

Tests and `dev` point the official SDKs at them over real HTTP; production points at the real services.
"""
