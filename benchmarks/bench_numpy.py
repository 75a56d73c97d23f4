"""NumPy backend: a solve VJP against the forward and against an inverse-based VJP.

    python benchmarks/bench_numpy.py [repeats]     (prints the same table as `invad bench`)

``run`` gives the rows for ``benchmarks/run_all.py``: invad's forward against
``numpy.linalg.solve``, and invad's forward plus VJP against the same
derivative from an explicit inverse (NumPy has no AD to compare with), and
``solve_ex``/``inv_ex`` on a batch of 100 000 4x4 systems holding k singular
matrices against the same batch with none: the singular ones must cost work
proportional to k, not a loop over the batch.
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
    return rows + singular_rows(repeats)


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
