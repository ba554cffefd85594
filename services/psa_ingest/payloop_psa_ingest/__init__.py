"""Payloop psa_ingest service."""
