"""Errors answered as JSON: ``{"error": code, "message": text}`` with their HTTP status.

One handler, registered on the app by ``create_app``, answers every :class:`ApiError` a view
raises; ``require`` and ``/metrics`` answer theirs directly with :func:`error_response`.
"""

from __future__ import annotations

from flask import Response, jsonify


class ApiError(Exception):
    """An error answered as JSON with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def error_response(exc: ApiError) -> tuple[Response, int]:
    """Return the JSON answer of ``exc`` (with ``Retry-After`` when it says when to retry)."""
    response = jsonify(error=exc.code, message=exc.message)
    if exc.retry_after:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response, exc.status
