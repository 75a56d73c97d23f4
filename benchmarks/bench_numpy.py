"""NumPy backend: a solve VJP against the forward and against an inverse-based VJP.

    python benchmarks/bench_numpy.py [repeats]     (prints the same table as `invad bench`)

``run`` gives the rows for ``benchmarks/run_all.py``: invad's forward against
``numpy.linalg.solve``, and invad's forward plus VJP against the same
derivative from an explicit inverse (NumPy has no AD to compare with).
"""

from __future__ import annotations

import sys
from typing import Any

from invad import bench


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
    return rows


if __name__ == "__main__":
    sys.exit(bench.main(int(sys.argv[1]) if len(sys.argv) > 1 else 15))
