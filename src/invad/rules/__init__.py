"""The rules: one per op, written once against the array API namespace.

Each family lives in one module (``inv``, ``solve``, ``lu``, ``triangular``,
``det``, ``cholesky``) and reads like its derivation. ``RULES`` is the single table of every
op that invad installs; ``invad.rules()``, the backends, the conformance kit
and the docs all read it.
"""

from __future__ import annotations

from ._linalg import ArrayMeta, CholeskyFactor, Factor, Linalg, Trans
from ._rule import Contract, Param, Primal, Rule
from .cholesky import CHOLESKY, CHOLESKY_EX, CHOLESKY_SOLVE
from .det import DET, SLOGDET
from .inv import INV, INV_EX, TENSORINV
from .lu import LU_FACTOR, LU_FACTOR_EX, LU_SOLVE
from .solve import SOLVE, SOLVE_EX, TENSORSOLVE
from .triangular import SOLVE_TRIANGULAR

RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        INV,
        INV_EX,
        SOLVE,
        SOLVE_EX,
        TENSORINV,
        TENSORSOLVE,
        LU_FACTOR,
        LU_FACTOR_EX,
        LU_SOLVE,
        SOLVE_TRIANGULAR,
        DET,
        SLOGDET,
        CHOLESKY,
        CHOLESKY_EX,
        CHOLESKY_SOLVE,
    )
}

__all__ = [
    "RULES",
    "ArrayMeta",
    "CholeskyFactor",
    "Contract",
    "Factor",
    "Linalg",
    "Param",
    "Primal",
    "Rule",
    "Trans",
]
