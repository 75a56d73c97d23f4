"""JAX backend: invad's ops against jnp.linalg and jax.scipy.linalg, forward and ``jit(grad)``.

    python benchmarks/bench_jax.py [--repeats N] [--dtype float64|float32] [--n N ...] [--op OP ...]

For each size of ``invad.bench.SIZES`` (n=3 one matrix; n=4 batch 10000;
n=64 batch 256; n=256 batch 16; n=1024 one matrix with 64 right-hand sides),
side by side in one process, each op's four functions compiled first and then
timed interleaved with each other (median wall time, ``block_until_ready``):

- ``fwd``: ``jit(op)``;
- ``jit(grad)``: ``jit(grad(loss))`` with ``loss = sum(w * op(a[, b]))``, a fixed
  random ``w``, the gradient taken with respect to every input (``slogdet``:
  of ``logabsdet``).

The ops and their native counterparts: ``inv``, ``solve``, ``det``,
``slogdet`` (``jnp.linalg``); ``lu_factor+lu_solve`` (factor once, then
solve: ``jax.scipy.linalg.lu_factor`` and ``lu_solve``); ``solve_triangular``
with an upper triangle (``jax.scipy.linalg.solve_triangular``); ``cholesky``
(``jnp.linalg.cholesky``) and ``cholesky_solve`` (``jax.scipy.linalg.cho_solve``)
on ``a a^T / n + I``; ``solve(assume_a='pos')`` against invad's general
``solve`` (Cholesky against LU, both invad, not plotted). Factor once, solve
many (n=256): ``jit(grad)`` of a loss over 100 solves with one matrix, one
``lu_factor`` and 100 ``lu_solve`` calls against 100 ``solve`` calls (both
invad, not plotted).

Ratios are invad over native: below 1 means invad is faster. ``run()`` returns
the rows for ``benchmarks/run_all.py``. Enables float64 in JAX
(``jax_enable_x64``) for the float64 run, as a user would.

jaxlib 0.10.2's CPU runtime can deadlock on a 2-core machine: on the
machine of docs/benchmarks.md, native ``jit(grad(sum(w * jnp.linalg.inv(a))))``
at n=64, batch 256 hangs (no CPU use, blocked in ``block_until_ready``) within
its first 50 calls in most fresh processes (a loop calling only jnp.linalg);
XLA flags that limit threading did not help. So every op at every size is
measured in a child process of its own, and a child that hangs past a watchdog
is killed and the op measured again in a new one (at most ``ATTEMPTS`` times);
the retries are printed.
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

#: Seconds one op at one size may take in its child process before it counts as hung (a
#: run takes under 30 here; factor once, whose 200 unrolled solves compile slowly, 4x that).
WATCHDOG = 90
#: Fresh child processes tried per size before giving up on it.
ATTEMPTS = 4


#: Factor once, solve many: one lu_factor and SOLVES lu_solve calls against SOLVES solves,
#: at n = FACTOR_ONCE_N.
FACTOR_ONCE, FACTOR_ONCE_N, SOLVES = "factor once", 256, 100
#: What is measured, one child process each (the keys of :func:`_pairs`, then factor once).
MEASURED = (
    "inv",
    "solve",
    "det",
    "slogdet",
    "lu_factor+lu_solve",
    "solve_triangular",
    "cholesky",
    "cholesky_solve",
    "solve(assume_a='pos') vs solve",
    FACTOR_ONCE,
)


def _pairs(jnp: Any, ops: Any) -> dict[str, tuple[Any, Any, int]]:
    """Per op: the native function, invad's, and which output the loss weighs (None: the one).

    Every function takes the inputs of :func:`measure` (``a``, or ``a`` and ``b``);
    ``lu_factor+lu_solve`` factors once and solves, as a user of the pair does.
    """
    import jax.scipy.linalg as jsl

    return {
        "inv": (jnp.linalg.inv, ops.inv, None),
        "solve": (jnp.linalg.solve, ops.solve, None),
        "det": (jnp.linalg.det, ops.det, None),
        "slogdet": (lambda a: tuple(jnp.linalg.slogdet(a)), ops.slogdet, 1),  # logabsdet
        "lu_factor+lu_solve": (
            lambda a, b: jsl.lu_solve(jsl.lu_factor(a), b),
            lambda a, b: ops.lu_solve(*ops.lu_factor(a), b),
            None,
        ),
        "solve_triangular": (
            lambda t, b: jsl.solve_triangular(t, b, lower=False),
            lambda t, b: ops.solve_triangular(t, b, upper=True),
            None,
        ),
        "cholesky": (jnp.linalg.cholesky, ops.cholesky, None),
        "cholesky_solve": (
            lambda c, b: jsl.cho_solve((c, True), b),
            ops.cholesky_solve,
            None,
        ),
        # invad against invad: the Cholesky path against the general (LU) one
        "solve(assume_a='pos') vs solve": (
            ops.solve,
            lambda a, b: ops.solve(a, b, assume_a="pos"),
            None,
        ),
    }


def _cases(
    jax: Any,
    jnp: Any,
    native: Any,
    ours: Any,
    output: int | None,
    inputs: tuple,
    w: Any,
    hermitian: bool = False,
) -> dict[str, Any]:
    argnums = tuple(range(len(inputs)))

    def grad_of(f: Any) -> Any:
        def loss(*xs: Any) -> Any:
            out = f(*xs)
            return jnp.sum(w * (out if output is None else out[output]))

        return jax.jit(jax.grad(loss, argnums))

    fns = {
        "native fwd": jax.jit(native),
        "invad fwd": jax.jit(ours),
        "native": grad_of(native),
        "invad": grad_of(ours),
    }
    for i, (mine, theirs) in enumerate(zip(fns["invad"](*inputs), fns["native"](*inputs))):
        if i == 0 and hermitian:  # the Hermitian op's cotangent is the other's Hermitian part
            theirs = (theirs + jnp.conj(jnp.swapaxes(theirs, -1, -2))) / 2
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)  # (compiles them)
    jax.tree_util.tree_map(
        lambda mine, theirs: np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4),
        fns["invad fwd"](*inputs),
        fns["native fwd"](*inputs),
    )
    return {name: (lambda fn=fn: jax.block_until_ready(fn(*inputs))) for name, fn in fns.items()}


def measure(
    n: int, repeats: int, dtype: str, only: list[str] | None = None
) -> list[dict[str, Any]]:
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
    # An upper triangle whose inverse stays moderate at every n (random triangles with
    # O(1 / sqrt(n)) entries have inverses that grow exponentially with n).
    t = jnp.asarray(np.triu(rng.standard_normal((*batch, n, n))) / n + 2 * np.eye(n), dtype)
    # a a^T / n + I: symmetric positive definite, condition number about ten; and its factor
    spd = jnp.einsum("...ij,...kj->...ik", a, a) / n + jnp.eye(n, dtype=dtype)
    chol = jnp.linalg.cholesky(spd)
    reps = max(5, repeats // 4) if n >= 1024 else repeats
    rows = []
    for op, (native, ours, output) in _pairs(jnp, ops).items():
        if only and op not in only:
            continue
        if op == "det" and n >= 1024:
            # det(a) is 1.3e308 here, at float64's edge: jnp.linalg.det's gradient is then 0
            # where invad's is det * a^-T (finite, about 7e307): the pair is not comparable
            continue
        inputs = {
            "inv": (a,),
            "det": (a,),
            "slogdet": (a,),
            "solve_triangular": (t, b),
            "cholesky": (spd,),
            "cholesky_solve": (chol, b),
            "solve(assume_a='pos') vs solve": (spd, b),
        }.get(op, (a, b))
        out_shape = jax.eval_shape(native, *inputs)
        weighed = out_shape if output is None else out_shape[output]
        w = jnp.asarray(rng.standard_normal(weighed.shape), dtype)
        cases = _cases(jax, jnp, native, ours, output, inputs, w, op.startswith("solve(assume_a"))
        t_ = median_times(cases, reps)
        size = {"backend": "jax", "n": n, "batch": batch, "k": k if len(inputs) > 1 else 0}
        plot = {"plot": False} if op.endswith(" vs solve") else {}  # invad against invad
        rows.append(
            {**size, "op": f"{op} jit(grad)", "invad": t_["invad"], "native": t_["native"], **plot}
        )
        rows.append(
            {
                **size,
                "op": f"{op} fwd",
                "invad": t_["invad fwd"],
                "native": t_["native fwd"],
                **plot,
            }
        )
    if n == FACTOR_ONCE_N and (not only or FACTOR_ONCE in only):
        rows.append(_factor_once(jax, jnp, ops, a[(0,) * len(batch)], rng, reps))
    return rows


def _factor_once(jax: Any, jnp: Any, ops: Any, a: Any, rng: Any, repeats: int) -> dict[str, Any]:
    """``jit(grad)`` of a loss over SOLVES solves with one matrix, each with one right-hand
    side (gradients of ``a`` and every right-hand side): one ``lu_factor`` and SOLVES
    ``lu_solve`` calls against SOLVES ``solve`` calls, both invad, written as a user would
    (a Python loop, unrolled by ``jit``)."""
    n = a.shape[-1]
    bs = jnp.asarray(rng.standard_normal((SOLVES, n, 1)), a.dtype)
    ws = jnp.asarray(rng.standard_normal((SOLVES, n, 1)), a.dtype)

    def factor_once(a: Any, bs: Any) -> Any:
        lu, pivots = ops.lu_factor(a)
        return sum(jnp.sum(ws[i] * ops.lu_solve(lu, pivots, bs[i])) for i in range(SOLVES))

    def solve_each(a: Any, bs: Any) -> Any:
        return sum(jnp.sum(ws[i] * ops.solve(a, bs[i])) for i in range(SOLVES))

    fns = {
        "invad": jax.jit(jax.grad(factor_once, (0, 1))),
        "native": jax.jit(jax.grad(solve_each, (0, 1))),
    }
    tol = 1e-8 if a.dtype == jnp.float64 else 1e-3
    for mine, theirs in zip(fns["invad"](a, bs), fns["native"](a, bs)):  # compiles them
        np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol)
    cases = {name: (lambda fn=fn: jax.block_until_ready(fn(a, bs))) for name, fn in fns.items()}
    t = median_times(cases, repeats)
    return {
        "backend": "jax",
        "op": f"1 lu_factor + {SOLVES} lu_solve vs {SOLVES} solve, jit(grad)",
        "n": n,
        "batch": (),
        "k": 1,
        **t,
        "plot": False,  # invad against invad, not against a native op
    }


def run(
    repeats: int = 40,
    dtype: str = "float64",
    sizes: list[int] | None = None,
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows ``{backend, op, n, batch, k, invad, native}`` (median seconds) for run_all.py.

    Each op and size in a fresh child process (``--worker N --op OP``), retried where it
    hangs: one process per op, so that a hang costs one op's time, not a size's.
    """
    from invad.bench import SIZES

    rows: list[dict[str, Any]] = []
    for n, _, _ in SIZES:
        if sizes and n not in sizes:
            continue
        for op in MEASURED:
            if (only and op not in only) or (op == FACTOR_ONCE and n != FACTOR_ONCE_N):
                continue
            rows += _child(n, op, repeats, dtype)
    return rows


def _child(n: int, op: str, repeats: int, dtype: str) -> list[dict[str, Any]]:
    command = [sys.executable, __file__, "--worker", str(n), "--repeats", str(repeats)]
    command += ["--op", op, "--dtype", dtype]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            child = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=WATCHDOG * (4 if op == FACTOR_ONCE else 1),
                check=True,
            )
        except subprocess.TimeoutExpired:
            print(f"jax n={n} {op}: attempt {attempt} hung; a new process", file=sys.stderr)
            continue
        except subprocess.CalledProcessError as error:  # said loudly; the other rows stand
            print(f"jax n={n} {op}: failed, no row\n{error.stderr}", file=sys.stderr)
            return []
        return [{**row, "batch": tuple(row["batch"])} for row in json.loads(child.stdout)]
    # One op that keeps hanging loses its row, not the rows of every other op.
    print(f"jax n={n} {op}: hung in {ATTEMPTS} fresh processes; no row", file=sys.stderr)
    return []


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
    parser.add_argument("--op", action="append", help="only these ops (names as in the table)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # one size, JSON out
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(measure(args.worker, args.repeats, args.dtype, args.op)))
        return 0
    rows = run(args.repeats, args.dtype, args.n, args.op)
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
