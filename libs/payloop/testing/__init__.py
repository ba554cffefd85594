"""Test support: a real PostgreSQL and a real broker per test session, fresh databases per test."""
