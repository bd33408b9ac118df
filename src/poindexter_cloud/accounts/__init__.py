"""accounts module."""
