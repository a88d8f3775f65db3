"""A formula module that registers one formula, then fails while importing."""

from __future__ import annotations

from tasks.formulas import Output, Window, formula


@formula("half_loaded", window=lambda p: 1)
def half_loaded(w: Window) -> Output:
    return Output(0.0, "flat")


raise RuntimeError("ACME_API_KEY is not set")
