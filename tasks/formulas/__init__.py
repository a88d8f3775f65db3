"""Signal formulas: the registry, the built-ins and isolated evaluation. Pure: no I/O.

Importing this package registers the built-ins (:mod:`tasks.formulas.builtin`).
"""

from __future__ import annotations

from tasks.formulas import builtin as builtin
from tasks.formulas.evaluate import ERROR_KINDS, Evaluation, FormulaTimeout, evaluate
from tasks.formulas.registry import (
    REGISTRY,
    Formula,
    FormulaLoadError,
    Output,
    Param,
    Params,
    Registry,
    Window,
    formula,
    load_modules,
    names,
    resolve,
)

__all__ = [
    "ERROR_KINDS",
    "REGISTRY",
    "Evaluation",
    "Formula",
    "FormulaLoadError",
    "FormulaTimeout",
    "Output",
    "Param",
    "Params",
    "Registry",
    "Window",
    "evaluate",
    "formula",
    "load_modules",
    "names",
    "resolve",
]
