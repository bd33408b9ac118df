"""The subscriber console: server-rendered pages on the web role, over the same services as the JSON API."""
