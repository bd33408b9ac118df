"""Shared infrastructure every domain module builds on: settings, database, queue, HTTP, telemetry."""
