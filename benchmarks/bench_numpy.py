"""NumPy backend: a solve VJP against the forward and against an inverse-based VJP.

    python benchmarks/bench_numpy.py [repeats]     (prints the same table as `invad bench`)

``run`` gives the rows for ``benchmarks/run_all.py``: invad's forward against
``numpy.linalg.solve``, and invad's forward plus VJP against the same
derivative from an explicit inverse (NumPy has no AD to compare with), and
``solve_ex``/``inv_ex`` on a batch of 100 000 4x4 systems holding k singular
matrices against the same batch with none: the singular ones must cost work
proportional to k, not a loop over the batch. The LU family: ``slogdet`` and
``det`` forward against ``numpy.linalg``'s, and "factor once, solve many": one
``lu_factor`` and 100 ``lu_solve`` calls with their VJPs against 100 ``solve``
calls with theirs, at n = 256 and one right-hand side.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

import invad
from invad import bench

SINGULAR_BATCH = 100_000


def run(repeats: int = 15) -> list[dict[str, Any]]:
    rows = []
    for r in bench.run(repeats):
        size = {"backend": "numpy", "n": r["n"], "batch": r["batch"], "k": r["k"]}
        rows.append(
            {**size, "op": "solve (forward only)", "invad": r["forward"], "native": r["native"]}
        )
        rows.append(
            {
                **size,
                "op": "solve fwd+vjp vs inverse",
                "invad": r["fwd+vjp"],
                "native": r["via inverse"],
            }
        )
    return rows + singular_rows(repeats) + determinant_rows(repeats) + factor_once_rows(repeats)


#: (n, batch) of the determinant rows: n >= 64, where NumPy's own slogdet is the bar.
DETERMINANT_SIZES = ((64, (256,)), (256, (16,)), (1024, ()))


def determinant_rows(repeats: int = 15) -> list[dict[str, Any]]:
    """``slogdet`` and ``det`` forward against ``numpy.linalg.slogdet`` and ``det``."""
    ops = invad.install()
    rng = np.random.default_rng(1)
    rows = []
    for n, batch in DETERMINANT_SIZES:
        a = rng.standard_normal((*batch, n, n)) / n**0.5  # det neither overflows nor underflows
        for op, native in (("slogdet", np.linalg.slogdet), ("det", np.linalg.det)):
            times = bench.median_times(
                {
                    "invad": functools.partial(getattr(ops, op), a),
                    "native": functools.partial(native, a),
                },
                repeats,
                interleave=False,  # NumPy's and SciPy's OpenBLAS threads: see median_times
            )
            rows.append(
                {
                    "backend": "numpy",
                    "op": f"{op} (forward only)",
                    "n": n,
                    "batch": batch,
                    "k": 0,
                    **times,
                }
            )
    return rows


#: Factor once, solve many: how many solves share one factorization.
SOLVES = 100


def factor_once_rows(repeats: int = 5, n: int = 256) -> list[dict[str, Any]]:
    """One ``lu_factor`` + 100 ``lu_solve`` (value and VJP) against 100 ``solve`` (the same)."""
    ops = invad.install()
    rng = np.random.default_rng(2)
    a = rng.standard_normal((n, n)) + n**0.5 * np.eye(n)
    bs = rng.standard_normal((SOLVES, n))
    xbars = rng.standard_normal((SOLVES, n))

    def factor_once() -> None:
        (lu, piv), _ = ops.jvp("lu_factor", (a,), (None,))
        lubar = np.zeros_like(lu)
        for b, xbar in zip(bs, xbars):
            _, (dlu, _, _) = ops.vjp("lu_solve", (lu, piv, b), xbar)
            lubar += dlu
        ops.vjp("lu_factor", (a,), (lubar, None))

    def solve_each() -> None:
        for b, xbar in zip(bs, xbars):
            ops.vjp("solve", (a, b), xbar)

    times = bench.median_times({"invad": factor_once, "native": solve_each}, repeats)
    return [
        {
            "backend": "numpy",
            "op": f"1 lu_factor + {SOLVES} lu_solve vs {SOLVES} solve, fwd+vjp",
            "n": n,
            "batch": (),
            "k": 1,
            **times,
            "plot": False,  # invad against invad, not against a native op
        }
    ]


def singular_rows(repeats: int = 15) -> list[dict[str, Any]]:
    """``solve_ex`` and ``inv_ex`` with k singular matrices (a zero row) against none."""
    ops = invad.install()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((SINGULAR_BATCH, 4, 4))
    b = rng.standard_normal((SINGULAR_BATCH, 4, 1))
    rows = []
    for k in (1, 10):
        singular = a.copy()
        singular[:: SINGULAR_BATCH // k, 1] = 0
        assert np.count_nonzero(ops.solve_ex(singular, b)[1]) == k
        for op, args, with_k in (
            ("solve_ex", (a, b), (singular, b)),
            ("inv_ex", (a,), (singular,)),
        ):
            fn = getattr(ops, op)
            times = bench.median_times(
                {"k": functools.partial(fn, *with_k), "none": functools.partial(fn, *args)}, repeats
            )
            rows.append(
                {
                    "backend": "numpy",
                    "op": f"{op}, {k} singular vs none",
                    "n": 4,
                    "batch": (SINGULAR_BATCH,),
                    "k": 1 if op == "solve_ex" else 4,
                    "invad": times["k"],
                    "native": times["none"],
                    "plot": False,  # not a comparison with a native op
                }
            )
    return rows


if __name__ == "__main__":
    sys.exit(bench.main(int(sys.argv[1]) if len(sys.argv) > 1 else 15))
