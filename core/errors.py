"""The exception tree of the pipeline.

    PipelineError
    ├── ConfigError      a setting is missing or malformed; start-up stops, one line per problem
    ├── PlanError        the configured signals cannot run (also a ValueError; tasks/signal_eval)
    ├── FormulaLoadError a formula module named in the configuration does not import
    ├── SchemaError      a record on the wire cannot be decoded (type, length, version, value)
    ├── FrameError       an exchange websocket frame cannot be parsed (counted, logged, skipped)
    ├── RedisSetupError  a Redis client cannot be built as asked (gevent client, unpatched)
    └── RestError        the exchange's REST API refused a request (4xx with a Binance code)
        ├── RateLimited      429: over the exchange's weight limit; every process backs off
        ├── Banned           418: the IP is banned until ``until_ms``; nothing is sent till then
        ├── Throttled        our shared weight budget is spent; the request was not sent
        ├── RestUnavailable  5xx, timeout or connection error: retry later
        │   └── OutcomeUnknown   a request that changes state may have been executed: look it up
        └── NotSent          the request never left (connection refused): nothing happened
    ├── Stopped          a wait (for exchangeInfo) was stopped before it answered
    ├── BuildConflictError  other workers kept moving a shard's candle cursor: retry the build
    ├── AuthError        a sign-in, token or refresh that does not pass; ``code`` for the API
    │   ├── SiweError        a sign-in message that does not parse or verify (web/siwe.py)
    │   ├── TokenError       a token that does not verify (web/tokens.py)
    │   └── RefreshError     a refresh token that cannot be used (web/sessions.py)
    └── VaultError       a stored credential does not decrypt for its owner (core/vault.py)

Errors answered over HTTP are the web tier's own (``web.auth.ApiError``,
``web.trade_checks.Refusal``): a status and a code for the browser, not a failure of the pipeline.

``retryable`` on a RestError class says whether trying again later can succeed (a bad symbol
never will); ``retry_after_ms``, when not None, says how long to wait first.

Third-party errors are translated once, at the boundary that calls the library:
``raise SchemaError(...) from exc``.
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(PipelineError):
    """One or more settings are missing or malformed.

    ``problems`` holds ``(variable, what is wrong)`` pairs; ``str()`` gives one line per problem.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{var}: {what}" for var, what in problems))


class PlanError(PipelineError, ValueError):
    """The configured signals cannot run: unknown formula, bad parameters, window too long."""


class FormulaLoadError(PipelineError):
    """A formula module named in the configuration could not be imported."""


class Stopped(PipelineError):
    """A wait was stopped (its stop event set) before it was answered."""


class BuildConflictError(PipelineError):
    """Other workers kept moving the shard's cursor: retry the build later."""


class AuthError(PipelineError):
    """A sign-in, token or refresh that does not pass; ``code`` is short and stable, for the
    API's answer and for logs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SiweError(AuthError):
    """A sign-in message that does not parse or verify (web/siwe.py names the codes)."""


class TokenError(AuthError):
    """A token that does not verify; ``code`` is the API's error code."""


class RefreshError(AuthError):
    """A refresh token that cannot be used (``code``: refresh_unknown, refresh_reused,
    token_revoked); ``family`` is its login session when known."""

    def __init__(self, code: str, message: str, family: str | None = None) -> None:
        super().__init__(code, message)
        self.family = family


class SchemaError(PipelineError):
    """A record could not be decoded: the message says which record, field and why."""


class FrameError(PipelineError):
    """An exchange frame is malformed: not JSON, a missing field, a value of the wrong type."""


class RedisSetupError(PipelineError):
    """A Redis client could not be created as requested."""


class RestError(PipelineError):
    """The exchange answered a REST request with an error (Binance's ``{"code", "msg"}``).

    ``status`` is the HTTP status (None when no response came back), ``code`` Binance's error
    code (-1121 for an invalid symbol) when the body carried one.
    """

    retryable: ClassVar[bool] = False
    sent_at_ms: int | None = None  # a signed request's timestamp, once it was sent

    def __init__(
        self, status: int | None, code: int | None, msg: str, *, retry_after_ms: int | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        self.retry_after_ms = retry_after_ms
        super().__init__(f"HTTP {status}, code {code}: {msg}" if status else msg)


class RateLimited(RestError):
    """429: the IP's request weight is over the limit; no process may send for a while."""

    retryable = True

    def __init__(self, retry_after_ms: int, msg: str = "rate limited (429)") -> None:
        super().__init__(429, -1003, msg, retry_after_ms=retry_after_ms)


class Banned(RestError):
    """418: the IP is banned until ``until_ms`` (server time); no process may send till then."""

    retryable = True

    def __init__(self, until_ms: int, retry_after_ms: int, msg: str = "IP banned (418)") -> None:
        self.until_ms = until_ms
        super().__init__(418, -1003, msg, retry_after_ms=retry_after_ms)


class Throttled(RestError):
    """Our shared weight budget for this minute is spent: the request was not sent."""

    retryable = True

    def __init__(self, retry_after_ms: int, msg: str = "weight budget spent") -> None:
        super().__init__(None, None, msg, retry_after_ms=retry_after_ms)


class RestUnavailable(RestError):
    """5xx, a timeout or a connection error: the request may or may not have been served."""

    retryable = True


class OutcomeUnknown(RestUnavailable):
    """The exchange may or may not have executed the request (timeout, -1006, -1007, 408, 5xx).

    For an order this is not a failure: the order is resolved by looking it up by its client order
    id and from the user data stream, never by sending it again (docs/execution.md, "What we rely on
    from Binance").
    """


class NotSent(RestError):
    """The request never reached the exchange (the connection could not be made)."""

    retryable = True
