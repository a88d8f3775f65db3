"""The exception tree of the pipeline.

    PipelineError
    ├── ConfigError      a setting is missing or malformed; start-up stops, one line per problem
    ├── SchemaError      a record on the wire cannot be decoded (type, length, version, value)
    ├── FrameError       an exchange websocket frame cannot be parsed (counted, logged, skipped)
    └── RedisSetupError  a Redis client cannot be built as asked (gevent client, unpatched)

Third-party errors are translated once, at the boundary that calls the library:
``raise SchemaError(...) from exc``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(PipelineError):
    """One or more settings are missing or malformed.

    ``problems`` holds ``(variable, what is wrong)`` pairs; ``str()`` gives one line per problem.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{var}: {what}" for var, what in problems))


class SchemaError(PipelineError):
    """A record could not be decoded: the message says which record, field and why."""


class FrameError(PipelineError):
    """An exchange frame is malformed: not JSON, a missing field, a value of the wrong type."""


class RedisSetupError(PipelineError):
    """A Redis client could not be created as requested."""
