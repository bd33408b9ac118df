"""proxy module."""
