"""billing module."""
