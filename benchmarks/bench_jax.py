"""JAX backend: invad's ``inv`` and ``solve`` against ``jnp.linalg``, forward and ``jit(grad)``.

    python benchmarks/bench_jax.py [--repeats N] [--dtype float64|float32] [--n N ...]

For each size of ``invad.bench.SIZES`` (n=3 one matrix; n=4 batch 10000;
n=64 batch 256; n=256 batch 16; n=1024 one matrix with 64 right-hand sides),
side by side in one process, every function compiled first and then timed
interleaved with the others (median wall time, ``block_until_ready``):

- ``fwd``: ``jit(op)``;
- ``jit(grad)``: ``jit(grad(loss))`` with ``loss = sum(w * op(a[, b]))``, a fixed
  random ``w``, the gradient taken with respect to every input.

Ratios are invad over native: below 1 means invad is faster. ``run()`` returns
the rows for ``benchmarks/run_all.py``. Enables float64 in JAX
(``jax_enable_x64``) for the float64 run, as a user would.

jaxlib 0.10.2's CPU LAPACK kernels can deadlock when two batched LAPACK calls
run at once on a machine with few cores (native ``jnp.linalg`` as much as
invad); a watchdog ends the run with a stack dump instead of hanging.
"""

from __future__ import annotations

import argparse
import faulthandler
import platform
import sys
from typing import Any

import numpy as np

#: Seconds one size may take before the watchdog dumps the stacks and exits.
WATCHDOG = 600


def _cases(jax: Any, jnp: Any, ops: Any, op: str, inputs: tuple, w: Any) -> dict[str, Any]:
    native, ours = (jnp.linalg.inv, ops.inv) if op == "inv" else (jnp.linalg.solve, ops.solve)
    argnums = tuple(range(len(inputs)))

    def grad_of(f: Any) -> Any:
        return jax.jit(jax.grad(lambda *xs: jnp.sum(w * f(*xs)), argnums))

    fns = {
        "native fwd": jax.jit(native),
        "invad fwd": jax.jit(ours),
        "native": grad_of(native),
        "invad": grad_of(ours),
    }
    for mine, theirs in zip(fns["invad"](*inputs), fns["native"](*inputs)):  # compiles them
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)
    return {name: (lambda fn=fn: jax.block_until_ready(fn(*inputs))) for name, fn in fns.items()}


def run(
    repeats: int = 40, dtype: str = "float64", sizes: list[int] | None = None
) -> list[dict[str, Any]]:
    """Rows ``{backend, op, n, batch, k, invad, native}`` (median seconds) for run_all.py."""
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp

    import invad
    from invad.bench import SIZES, median_times

    ops = invad.install("jax")
    rng = np.random.default_rng(0)
    rows = []
    for n, batch, k in SIZES:
        if sizes and n not in sizes:
            continue
        faulthandler.dump_traceback_later(WATCHDOG, exit=True)
        a = jnp.asarray(rng.standard_normal((*batch, n, n)) / np.sqrt(n) + 2 * np.eye(n), dtype)
        b = jnp.asarray(rng.standard_normal((*batch, n, k)), dtype)
        reps = max(5, repeats // 4) if n >= 1024 else repeats
        for op, inputs in (("inv", (a,)), ("solve", (a, b))):
            w = jnp.asarray(
                rng.standard_normal(inputs[-1].shape if op == "solve" else a.shape), dtype
            )
            t = median_times(_cases(jax, jnp, ops, op, inputs, w), reps)
            size = {"backend": "jax", "n": n, "batch": batch, "k": k if op == "solve" else 0}
            rows.append(
                {**size, "op": f"{op} jit(grad)", "invad": t["invad"], "native": t["native"]}
            )
            rows.append(
                {**size, "op": f"{op} fwd", "invad": t["invad fwd"], "native": t["native fwd"]}
            )
        faulthandler.cancel_dump_traceback_later()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    header = ("op", "n", "batch", "k", "native ms", "invad ms", "invad/native")
    cells = [
        (
            r["op"],
            str(r["n"]),
            "x".join(map(str, r["batch"])) or "-",
            str(r["k"] or "-"),
            f"{r['native'] * 1e3:.3f}",
            f"{r['invad'] * 1e3:.3f}",
            f"{r['invad'] / r['native']:.2f}",
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in (header, *cells)) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in (header, *cells)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed repeats per function")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--n", type=int, action="append", help="only these matrix sizes")
    args = parser.parse_args()
    rows = run(args.repeats, args.dtype, args.n)
    import jax

    import invad

    print(
        f"invad {invad.__version__}, jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{args.dtype}, {platform.machine()}, median of {args.repeats} interleaved repeats"
    )
    print(table(sorted(rows, key=lambda r: (not r["op"].endswith("jit(grad)"), r["op"], r["n"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
