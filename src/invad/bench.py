"""``invad bench``: what a NumPy ``solve`` VJP costs next to the forward solve.

Side by side in one process, medians of repeats (each function in a block of
its own: see :func:`median_times`), per size:

- ``native``: ``numpy.linalg.solve`` alone;
- ``forward``: ``ops.solve``;
- ``fwd+vjp``: ``ops.vjp("solve", ...)``, the forward with both cotangents;
- ``fwd+vjp via inverse``: the same cotangents from an explicit inverse,
  the way a derivative is written when the factorization is not kept.

The ratio ``vjp extra / native`` is the VJP's own cost over a fresh
factorization and solve: well below 1 where the factorization is reused.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import install
from ._progress import Progress

#: (n, batch, right-hand sides): the sizes every backend benchmark uses.
SIZES = ((3, (), 1), (4, (10000,), 1), (64, (256,), 1), (256, (16,), 1), (1024, (), 64))


def median_times(
    fns: dict[str, Callable[[], Any]], repeats: int, interleave: bool = True
) -> dict[str, float]:
    """Median wall time of each function.

    Interleaved by default, so drift hits all alike. ``interleave=False`` times
    each function in a block of its own: NumPy and SciPy wheels each bundle an
    OpenBLAS, and a SciPy LAPACK call right after a NumPy one runs while NumPy's
    OpenBLAS threads still spin on the two cores (measured here at n = 1024:
    invad's forward 101 ms interleaved, 12 ms on its own, NumPy's 15 ms).
    """
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order = [(name, fn) for _ in range(repeats) for name, fn in fns.items()]
    if not interleave:
        order = [(name, fn) for name, fn in fns.items() for _ in range(repeats)]
    for name, fn in order:
        if not interleave and not samples[name]:
            fn()  # a call to let the other library's threads go to sleep
        start = time.perf_counter()
        fn()
        samples[name].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in samples.items()}


def vjp_via_inverse(
    a: np.ndarray, b: np.ndarray, xbar: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    x = np.linalg.solve(a, b)
    g = np.swapaxes(np.linalg.inv(a), -1, -2).conj() @ xbar
    return -g @ np.swapaxes(x, -1, -2).conj(), g


def run(repeats: int = 15, progress: Progress | None = None) -> list[dict[str, Any]]:
    """One row of median times per size of :data:`SIZES`; ``progress`` counts the sizes."""
    ops = install("numpy")
    rng = np.random.default_rng(0)
    rows = []
    for i, (n, batch, k) in enumerate(SIZES):
        if progress is not None:
            progress.update(i, len(SIZES), f"n={n}")
        a = rng.standard_normal((*batch, n, n)) + 2 * np.sqrt(n) * np.eye(n)
        b = rng.standard_normal((*batch, n, k))
        xbar = rng.standard_normal((*batch, n, k))
        t = time_size(ops, a, b, xbar, repeats if n < 1024 else max(3, repeats // 3))
        rows.append({"n": n, "batch": batch, "k": k, **t})
    if progress is not None:
        progress.update(len(SIZES), len(SIZES))
    return rows


def time_size(
    ops: Any, a: np.ndarray, b: np.ndarray, xbar: np.ndarray, repeats: int
) -> dict[str, float]:
    return median_times(
        {
            "native": lambda: np.linalg.solve(a, b),
            "forward": lambda: ops.solve(a, b),
            "fwd+vjp": lambda: ops.vjp("solve", (a, b), xbar),
            "via inverse": lambda: vjp_via_inverse(a, b, xbar),
        },
        repeats,
        interleave=False,  # NumPy's and SciPy's OpenBLAS threads: see median_times
    )


def main(repeats: int = 15, progress: bool = True) -> int:
    """Print the table of :func:`run`, with progress on stderr unless ``progress`` is false."""
    if repeats < 1:
        raise ValueError(f"invad bench: repeats must be at least 1, got {repeats}")
    with Progress("invad bench", len(SIZES), enabled=progress) as bar:
        rows = run(repeats, bar)
    print(f"invad bench: numpy {np.__version__}, {platform.machine()}, {platform.python_version()}")
    print("median seconds; ratios side by side in one process\n")
    header = (
        "n",
        "batch",
        "k",
        "native",
        "forward",
        "fwd+vjp",
        "via inverse",
        "fwd/native",
        "vjp extra/native",
        "inverse/invad",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        extra = r["fwd+vjp"] - r["forward"]
        cells = (
            r["n"],
            "x".join(map(str, r["batch"])) or "1",
            r["k"],
            f"{r['native']:.3g}",
            f"{r['forward']:.3g}",
            f"{r['fwd+vjp']:.3g}",
            f"{r['via inverse']:.3g}",
            f"{r['forward'] / r['native']:.2f}",
            f"{extra / r['native']:.2f}",
            f"{r['via inverse'] / r['fwd+vjp']:.2f}",
        )
        print(" | ".join(map(str, cells)))
    return 0
