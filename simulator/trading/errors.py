"""The one error the trading API raises: a Binance error code, its message and an HTTP status.

``ApiError`` is raised anywhere in the trading logic and turned into Binance's error JSON
(``{"code": -1121, "msg": "Invalid symbol."}``) once, in ``routes.py``. Codes and messages follow
the futures error-code page (https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code;
docs/execution.md, "What we rely on from Binance").
"""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """A request the exchange refuses, carried up to the HTTP boundary."""

    def __init__(
        self, code: int, msg: str, *, status: int = 400, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers: Mapping[str, str] = headers or {}

    def body(self) -> dict[str, int | str]:
        """Return the Binance error payload."""
        return {"code": self.code, "msg": self.msg}


def mandatory(name: str) -> ApiError:
    """Return the -1102 error for a parameter that is missing, empty or malformed."""
    return ApiError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def invalid(name: str) -> ApiError:
    """Return the -1130 error for a parameter whose value is not accepted."""
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
