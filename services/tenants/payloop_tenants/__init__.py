"""Payloop tenants service."""
