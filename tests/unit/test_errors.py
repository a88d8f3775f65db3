"""The exception tree: every error the project raises on purpose is drawn in core/errors.py."""

from __future__ import annotations

import inspect

import core.errors
from core.errors import (
    AuthError,
    FormulaLoadError,
    PipelineError,
    PlanError,
    RefreshError,
    SiweError,
    Stopped,
    TokenError,
)


def test_every_error_of_the_tree_is_drawn_in_its_docstring() -> None:
    doc = core.errors.__doc__ or ""
    errors = [c for _, c in inspect.getmembers(core.errors, inspect.isclass)
              if issubclass(c, PipelineError)]  # fmt: skip
    assert len(errors) > 10
    assert [c.__name__ for c in errors if c.__name__ not in doc] == []


def test_the_errors_raised_elsewhere_are_the_trees_own() -> None:
    from binance import exchange_info
    from tasks import signal_eval
    from tasks.formulas import registry
    from web import sessions, siwe, tokens

    assert signal_eval.PlanError is PlanError
    assert issubclass(PlanError, ValueError)  # callers that catch ValueError still do
    assert registry.FormulaLoadError is FormulaLoadError
    assert exchange_info.Stopped is Stopped
    assert (siwe.SiweError, tokens.TokenError, sessions.RefreshError) == (
        SiweError, TokenError, RefreshError)  # fmt: skip
    refused = RefreshError("refresh_reused", "used twice", family="f1")
    assert isinstance(refused, AuthError)
    assert (refused.code, refused.message, refused.family, str(refused)) == (
        "refresh_reused", "used twice", "f1", "used twice")  # fmt: skip
