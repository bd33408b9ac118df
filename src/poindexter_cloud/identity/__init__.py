"""identity module."""
