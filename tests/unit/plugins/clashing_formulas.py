"""A formula module that registers a name the built-ins already use."""

from __future__ import annotations

from tasks.formulas import Output, Window, formula


@formula("rsi", window=lambda p: 1)
def my_rsi(w: Window) -> Output:
    return Output(50.0, "flat")
