"""admin module."""
