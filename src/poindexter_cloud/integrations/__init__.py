"""The adapters of the external identity providers, one per provider, shared by the modules that use them.

``google`` (Workspace: Directory, Gmail, Calendar), ``telnyx`` (numbers, SMS, webhook verification) and
``signal`` (signal-cli-rest-api) are each the only module that speaks to its provider; ``errors`` holds the
errors they raise, and ``clients`` the one registry of their clients per process. Provisioning creates and
removes identities with them, the identity API sends and reads as those identities, and webhooks verify
Telnyx's deliveries. Nothing here knows about identities or their tables. Stripe's adapter stays in
``billing``: only billing uses it.
"""
