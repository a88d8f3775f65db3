"""Dramatiq actors and the pure logic they call (Procfile: worker)."""
