"""Errors of the console, each with a stable code."""

from __future__ import annotations

from poindexter_cloud.core.errors import Unauthorized


class NotSignedIn(Unauthorized):
    """A console page that needs a login, asked for without a live session: the visitor is sent to log in."""

    code = "not_signed_in"
