"""webhooks module."""
