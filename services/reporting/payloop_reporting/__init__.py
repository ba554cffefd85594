"""Payloop reporting service."""
