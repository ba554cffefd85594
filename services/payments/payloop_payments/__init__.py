"""Payloop payments service."""
