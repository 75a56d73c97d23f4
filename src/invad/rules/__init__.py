"""The rules: one per op, written once against the array API namespace.

Each family lives in one module (``inv``, ``solve``) and reads like its
derivation. ``RULES`` is the single table of every op that invad installs;
``invad.rules()``, the backends, the conformance kit and the docs all read it.
"""

from __future__ import annotations

from ._linalg import ArrayMeta, Factor, Linalg, Trans
from ._rule import Contract, Param, Primal, Rule
from .inv import INV, INV_EX, TENSORINV
from .solve import SOLVE, SOLVE_EX, TENSORSOLVE

RULES: dict[str, Rule] = {
    rule.name: rule for rule in (INV, INV_EX, SOLVE, SOLVE_EX, TENSORINV, TENSORSOLVE)
}

__all__ = [
    "RULES",
    "ArrayMeta",
    "Contract",
    "Factor",
    "Linalg",
    "Param",
    "Primal",
    "Rule",
    "Trans",
]
