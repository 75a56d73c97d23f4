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

jaxlib 0.10.2's CPU runtime can deadlock on a 2-core machine: on the
machine of docs/benchmarks.md, native ``jit(grad(sum(w * jnp.linalg.inv(a))))``
at n=64, batch 256 hangs (no CPU use, blocked in ``block_until_ready``) within
its first 50 calls in most fresh processes (a loop calling only jnp.linalg);
XLA flags that limit threading did not help. So every size is measured in a
child process of its own, and a child that hangs past a watchdog is killed and
the size measured again in a new one (at most ``ATTEMPTS`` times); the retries
are printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from typing import Any

import numpy as np

from invad.bench import median_times

#: Seconds one size may take in its child process before it counts as hung.
WATCHDOG = 120
#: Fresh child processes tried per size before giving up on it.
ATTEMPTS = 6


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


def measure(n: int, repeats: int, dtype: str) -> list[dict[str, Any]]:
    """Rows for one size of ``invad.bench.SIZES``, measured in this process."""
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp

    import invad
    from invad.bench import SIZES

    ops = invad.install("jax")
    rng = np.random.default_rng(n)
    (batch, k) = next((batch, k) for m, batch, k in SIZES if m == n)
    a = jnp.asarray(rng.standard_normal((*batch, n, n)) / np.sqrt(n) + 2 * np.eye(n), dtype)
    b = jnp.asarray(rng.standard_normal((*batch, n, k)), dtype)
    reps = max(5, repeats // 4) if n >= 1024 else repeats
    rows = []
    for op, inputs in (("inv", (a,)), ("solve", (a, b))):
        w = jnp.asarray(rng.standard_normal(inputs[-1].shape if op == "solve" else a.shape), dtype)
        t = median_times(_cases(jax, jnp, ops, op, inputs, w), reps)
        size = {"backend": "jax", "n": n, "batch": batch, "k": k if op == "solve" else 0}
        rows.append({**size, "op": f"{op} jit(grad)", "invad": t["invad"], "native": t["native"]})
        rows.append({**size, "op": f"{op} fwd", "invad": t["invad fwd"], "native": t["native fwd"]})
    return rows


def run(
    repeats: int = 40, dtype: str = "float64", sizes: list[int] | None = None
) -> list[dict[str, Any]]:
    """Rows ``{backend, op, n, batch, k, invad, native}`` (median seconds) for run_all.py.

    Each size in a fresh child process (``--worker N``), retried where it hangs.
    """
    from invad.bench import SIZES

    rows: list[dict[str, Any]] = []
    for n, _, _ in SIZES:
        if sizes and n not in sizes:
            continue
        command = [sys.executable, __file__, "--worker", str(n), "--repeats", str(repeats)]
        for attempt in range(1, ATTEMPTS + 1):
            try:
                child = subprocess.run(
                    [*command, "--dtype", dtype],
                    capture_output=True,
                    text=True,
                    timeout=WATCHDOG,
                    check=True,
                )
            except subprocess.TimeoutExpired:
                print(f"jax n={n}: attempt {attempt} hung; a new process", file=sys.stderr)
                continue
            rows += [{**row, "batch": tuple(row["batch"])} for row in json.loads(child.stdout)]
            break
        else:
            raise RuntimeError(f"jax n={n}: hung in {ATTEMPTS} fresh processes")
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
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # one size, JSON out
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(measure(args.worker, args.repeats, args.dtype)))
        return 0
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
