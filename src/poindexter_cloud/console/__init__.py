"""console module."""
