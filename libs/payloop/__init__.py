"""Shared infrastructure of the Payloop services: events, outbox, consumers, auth, settings, CLI."""
