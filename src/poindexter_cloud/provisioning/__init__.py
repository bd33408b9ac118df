"""provisioning module."""
