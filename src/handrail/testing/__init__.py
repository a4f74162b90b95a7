"""Helpers for testing runbooks (and handrail itself) against real backends."""
