"""Payloop collections service."""
