"""Shared core: configuration, Redis key names, records and clients. No I/O happens at import."""
