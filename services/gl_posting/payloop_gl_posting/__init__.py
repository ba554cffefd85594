"""Payloop gl_posting service."""
