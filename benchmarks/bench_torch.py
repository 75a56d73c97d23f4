"""PyTorch backend: invad's ops against ``torch.linalg``, forward plus backward.

    python benchmarks/bench_torch.py [--repeats N] [--dtype float64|float32|complex128]
        [--no-memory] [--no-timing] [--no-compile | --compile-only] [--no-lu | --lu-only]

For each size of ``invad.bench.SIZES`` (n=3 one matrix; n=4 batch 10000;
n=64 batch 256; n=256 batch 16; n=1024 one matrix with 64 right-hand sides),
side by side in one process, invad and native timed interleaved (median wall
time of ``time.perf_counter``, after a warm-up call):

- ``fwd+bwd``: ``y = op(a[, b])`` on leaf tensors that require grad, then
  ``torch.autograd.grad(y, inputs, ybar)`` with a fixed random ``ybar``;
- ``fwd``: the op alone under ``torch.no_grad()`` (for reference).

Ratios are invad over native: below 1 means invad is faster.

The LU family (``LU_SIZES``: n=64 batch 256; n=256 batch 16; one right-hand
side), fwd+bwd and fwd as above: ``det``, ``slogdet`` (the cotangent on
``logabsdet``), ``lu_solve(*lu_factor(a), b)`` (gradients of ``a`` and ``b``)
and ``solve_triangular(a, b, upper=True)`` against their ``torch.linalg``
counterparts; ``cholesky`` and ``cholesky_solve`` against ``torch.linalg.cholesky``
and ``torch.cholesky_solve`` on ``a a^T / n + I``; ``solve(assume_a='pos')``
against invad's general ``solve`` (Cholesky against LU, both invad, not plotted);
``slogdet hvp``: a Hessian-vector product of ``sum(logabsdet)``
by double backward. Factor once, solve many (n=256, k=1): one ``lu_factor``
and 100 ``lu_solve`` calls against 100 ``solve`` calls, forward plus one
backward pass, both invad (a ratio below 1 is the gain).

Compiled (``COMPILED_SIZES``: n=3 one matrix; n=64 batch 256): ``fwd+bwd
compiled`` times ``torch.autograd.grad`` of ``sum(op(a[, b]) * ybar)``, the
loss compiled with ``torch.compile(fullgraph=True)`` (the backward is compiled
with it, by AOTAutograd), invad's op against torch.linalg's, both compiled in
the same process and timed interleaved after warm-up.

Memory of one backward pass, per op and size, two figures for each side:

- ``saved``: bytes the autograd graph holds between forward and backward, by
  ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, inputs
  included, so the two sides are counted alike);
- ``peak``: the CPU allocator's peak during forward plus backward above what
  was allocated before, from ``torch.profiler`` memory events.
"""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

import numpy as np

OPS = ("inv", "solve")
COMPILED_SIZES = ((3, (), 1), (64, (256,), 1))
#: The LU family's sizes (n, batch, k): issue 11's targets.
LU_SIZES = ((64, (256,), 1), (256, (16,), 1))
LU_OPS = ("det", "slogdet", "lu_factor+lu_solve", "solve_triangular")
#: The Cholesky half at the same sizes (issue 12's targets): a symmetric positive-definite ``a``.
CHOLESKY_OPS = ("cholesky", "cholesky_solve")
#: solve(assume_a="pos") against invad's general solve (Cholesky against LU).
POS_VS_GEN = "solve(assume_a='pos') vs solve"
#: One more size for solve(assume_a="pos") against solve: one matrix, 64 right-hand sides.
POS_LARGE = (1024, (), 64)
#: Factor once, solve many: one lu_factor and SOLVES lu_solve calls against SOLVES solve calls.
SOLVES = 100


def _inputs(torch: Any, n: int, batch: tuple[int, ...], k: int, dtype: Any, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, n, n, dtype=dtype, generator=g) + 2 * n**0.5 * torch.eye(n, dtype=dtype)
    b = torch.randn(*batch, n, k, dtype=dtype, generator=g)
    return a, b


def _op_inputs(torch: Any, ops: Any, op: str, a: Any, b: Any) -> tuple[Any, Any, Any, Any]:
    """The inputs (leaves that require grad), invad's op, torch's, and a cotangent."""
    a = a.clone().requires_grad_()
    b = b.clone().requires_grad_()
    if op == "inv":
        args: tuple[Any, ...] = (a,)
        mine, theirs = ops.inv, torch.linalg.inv
    else:
        args = (a, b)
        mine, theirs = ops.solve, torch.linalg.solve
    return args, mine, theirs, torch.randn_like(theirs(*args).detach())


def _cases(torch: Any, ops: Any, op: str, a: Any, b: Any) -> dict[str, Any]:
    """The four timed functions of one op and size: invad/native, fwd+bwd and fwd."""
    args, mine, theirs, ybar = _op_inputs(torch, ops, op, a, b)

    def fwd_bwd(f: Any) -> Any:
        return lambda: torch.autograd.grad(f(*args), args, ybar)

    def fwd(f: Any) -> Any:
        def run() -> Any:
            with torch.no_grad():
                return f(*args)

        return run

    return {
        "invad": fwd_bwd(mine),
        "native": fwd_bwd(theirs),
        "invad fwd": fwd(mine),
        "native fwd": fwd(theirs),
    }


def _lu_cases(torch: Any, ops: Any, op: str, a: Any, b: Any) -> dict[str, Any]:
    """The linear-system family's timed functions: invad's op against torch's, fwd+bwd and fwd.

    ``det`` and ``slogdet`` (the cotangent on ``logabsdet``: a real sign is constant)
    differentiate with respect to ``a``; ``lu_solve(*lu_factor(a), b)`` and
    ``solve_triangular(a, b, upper=True)`` with respect to ``a`` and ``b``.
    """
    if op in CHOLESKY_OPS or op == POS_VS_GEN:
        a = _positive_definite(torch, a)
    if op == "cholesky_solve":
        a = torch.linalg.cholesky(a)
    a = a.clone().requires_grad_()
    b = b.clone().requires_grad_()
    args: tuple[Any, ...] = (a,)
    if op == "cholesky":
        mine, theirs = ops.cholesky, torch.linalg.cholesky
    elif op == "cholesky_solve":
        args = (a, b)
        mine = ops.cholesky_solve
        theirs = lambda c, b: torch.cholesky_solve(b, c)  # noqa: E731
    elif op == POS_VS_GEN:
        # invad against invad: the Cholesky path against the general (LU) one
        args = (a, b)
        mine = lambda a, b: ops.solve(a, b, assume_a="pos")  # noqa: E731
        theirs = ops.solve
    elif op == "det":
        mine, theirs = ops.det, torch.linalg.det
    elif op == "slogdet":
        mine, theirs = (lambda a: ops.slogdet(a)[1]), (lambda a: torch.linalg.slogdet(a)[1])
    elif op == "lu_factor+lu_solve":
        args = (a, b)
        mine = lambda a, b: ops.lu_solve(*ops.lu_factor(a), b)  # noqa: E731
        theirs = lambda a, b: torch.linalg.lu_solve(*torch.linalg.lu_factor(a), b)  # noqa: E731
    else:
        args = (a, b)
        mine = lambda a, b: ops.solve_triangular(a, b, upper=True)  # noqa: E731
        theirs = lambda a, b: torch.linalg.solve_triangular(a, b, upper=True)  # noqa: E731
    ybar = torch.randn_like(theirs(*args).detach())

    def fwd_bwd(f: Any) -> Any:
        return lambda: torch.autograd.grad(f(*args), args, ybar)

    def fwd(f: Any) -> Any:
        def run() -> Any:
            with torch.no_grad():
                return f(*args)

        return run

    return {
        "invad": fwd_bwd(mine),
        "native": fwd_bwd(theirs),
        "invad fwd": fwd(mine),
        "native fwd": fwd(theirs),
    }


def _positive_definite(torch: Any, a: Any) -> Any:
    """``a a^T / n + I``: symmetric positive definite, condition number about ten."""
    n = a.shape[-1]
    return a @ a.mT / n + torch.eye(n, dtype=a.dtype)


def _hvp_cases(torch: Any, ops: Any, a: Any) -> dict[str, Any]:
    """A Hessian-vector product of ``sum(logabsdet)``: double backward, invad's slogdet
    against torch.linalg's."""
    a = a.clone().requires_grad_()
    v = torch.randn_like(a)

    def hvp(slogdet: Any) -> Any:
        def run() -> Any:
            (g,) = torch.autograd.grad(slogdet(a)[1].sum(), a, create_graph=True)
            return torch.autograd.grad(g, a, v)

        return run

    return {"invad": hvp(ops.slogdet), "native": hvp(torch.linalg.slogdet)}


def _factor_once_cases(torch: Any, ops: Any, n: int, dtype: Any) -> dict[str, Any]:
    """One ``lu_factor`` and SOLVES ``lu_solve`` calls against SOLVES ``solve`` calls, each
    with one right-hand side, forward plus one backward pass (gradients of ``a`` and of
    every right-hand side): both invad."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(n, n, dtype=dtype, generator=g) + 2 * n**0.5 * torch.eye(n, dtype=dtype)
    a.requires_grad_()
    bs = torch.randn(SOLVES, n, 1, dtype=dtype, generator=g).requires_grad_()
    ybars = torch.randn(SOLVES, n, 1, dtype=dtype, generator=g)

    def factor_once() -> Any:
        lu, pivots = ops.lu_factor(a)
        loss = sum((ops.lu_solve(lu, pivots, bs[i]) * ybars[i]).sum() for i in range(SOLVES))
        return torch.autograd.grad(loss, (a, bs))

    def solve_each() -> Any:
        loss = sum((ops.solve(a, bs[i]) * ybars[i]).sum() for i in range(SOLVES))
        return torch.autograd.grad(loss, (a, bs))

    return {"invad": factor_once, "native": solve_each}


def run_lu(repeats: int = 40, dtype: str = "float64") -> list[dict[str, Any]]:
    """Rows of the LU family against torch.linalg (fwd+bwd and fwd), the Hessian-vector
    product of slogdet, and factor once, solve many."""
    import torch

    import invad
    from invad.bench import median_times

    ops = invad.install("torch")
    tdtype = getattr(torch, dtype)
    rows = []
    for n, batch, k in LU_SIZES:
        a, b = _inputs(torch, n, batch, k, tdtype)
        for op in (*LU_OPS, *CHOLESKY_OPS, POS_VS_GEN):
            rows += _family_rows(
                op, n, batch, k, median_times(_lu_cases(torch, ops, op, a, b), repeats)
            )
        t = median_times(_hvp_cases(torch, ops, a), repeats)
        size = {"backend": "torch", "n": n, "batch": batch, "k": 0}
        rows.append({**size, "op": "slogdet hvp", "invad": t["invad"], "native": t["native"]})
    # Where the factorization dominates (one large matrix), Cholesky's half of LU's flops
    # show; at the sizes above the two factorizations cost the same here (docs/benchmarks.md).
    n, batch, k = POS_LARGE
    a, b = _inputs(torch, n, batch, k, tdtype)
    t = median_times(_lu_cases(torch, ops, POS_VS_GEN, a, b), max(5, repeats // 4))
    rows += _family_rows(POS_VS_GEN, n, batch, k, t)
    t = median_times(_factor_once_cases(torch, ops, 256, tdtype), max(5, repeats // 4))
    rows.append(
        {
            "backend": "torch",
            "op": f"1 lu_factor + {SOLVES} lu_solve vs {SOLVES} solve, fwd+bwd",
            "n": 256,
            "batch": (),
            "k": 1,
            **t,
            "plot": False,  # invad against invad, not against a native op
        }
    )
    return rows


def _family_rows(
    op: str, n: int, batch: tuple[int, ...], k: int, t: dict[str, float]
) -> list[dict[str, Any]]:
    """The fwd+bwd and fwd rows of one op of the family; ops without ``b`` show no ``k``.
    Solve against solve is invad against invad: not plotted."""
    size = {"backend": "torch", "n": n, "batch": batch, "k": k if "solve" in op else 0}
    if op == POS_VS_GEN:
        size["plot"] = False
    return [
        {**size, "op": f"{op} fwd+bwd", "invad": t["invad"], "native": t["native"]},
        {**size, "op": f"{op} fwd", "invad": t["invad fwd"], "native": t["native fwd"]},
    ]


def _compiled_cases(torch: Any, ops: Any, op: str, a: Any, b: Any) -> dict[str, Any]:
    """invad and native, forward plus backward, each loss compiled with fullgraph=True."""
    args, mine, theirs, ybar = _op_inputs(torch, ops, op, a, b)

    def fwd_bwd(f: Any) -> Any:
        loss = torch.compile(lambda *x: (f(*x) * ybar).sum(), fullgraph=True)
        return lambda: torch.autograd.grad(loss(*args), args)

    return {"invad": fwd_bwd(mine), "native": fwd_bwd(theirs)}


def run_compiled(repeats: int = 40, dtype: str = "float64") -> list[dict[str, Any]]:
    """Rows of compiled invad against compiled torch.linalg, forward plus backward."""
    import torch

    import invad
    from invad.bench import median_times

    ops = invad.install("torch")
    tdtype = getattr(torch, dtype)
    rows = []
    for n, batch, k in COMPILED_SIZES:
        a, b = _inputs(torch, n, batch, k, tdtype)
        for op in OPS:
            torch._dynamo.reset()
            reps = repeats * 25 if n <= 4 and not batch else repeats
            t = median_times(_compiled_cases(torch, ops, op, a, b), reps)
            size = {"backend": "torch", "n": n, "batch": batch, "k": k if op == "solve" else 0}
            rows.append(
                {**size, "op": f"{op} fwd+bwd compiled", "invad": t["invad"], "native": t["native"]}
            )
    torch._dynamo.reset()
    return rows


def _saved_bytes(torch: Any, f: Any, args: tuple[Any, ...]) -> int:
    """Bytes of the distinct storages that autograd saves for the backward of ``f(*args)``."""
    storages: dict[int, int] = {}

    def pack(t: Any) -> Any:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f(*args)
    return sum(storages.values())


def _peak_bytes(torch: Any, run: Any) -> int:
    """Peak CPU bytes allocated during ``run()`` above the level at its start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    level = peak = 0
    # self_cpu_memory_usage: each allocation once, not again in every enclosing op's event
    events = [e for e in prof.events() if e.self_cpu_memory_usage]
    for e in sorted(events, key=lambda e: e.time_range.start):
        level += e.self_cpu_memory_usage
        peak = max(peak, level)
    return peak


def memory(torch: Any, ops: Any, op: str, a: Any, b: Any) -> dict[str, int]:
    a = a.clone().requires_grad_()
    b = b.clone().requires_grad_()
    args = (a,) if op == "inv" else (a, b)
    mine = ops.inv if op == "inv" else ops.solve
    theirs = torch.linalg.inv if op == "inv" else torch.linalg.solve
    ybar = torch.randn_like(theirs(*args).detach())
    out = {}
    for side, f in (("invad", mine), ("native", theirs)):
        out[f"{side} saved"] = _saved_bytes(torch, f, args)
        out[f"{side} peak"] = _peak_bytes(
            torch, lambda f=f: torch.autograd.grad(f(*args), args, ybar)
        )
    return out


def run(
    repeats: int = 40, dtype: str = "float64", compiled: bool = True, lu: bool = True
) -> list[dict[str, Any]]:
    """Rows ``{backend, op, n, batch, k, invad, native}`` for ``benchmarks/run_all.py``:
    eager, then (``lu``) the LU family, then (``compiled``) compiled with ``torch.compile``."""
    import torch

    import invad
    from invad.bench import SIZES, median_times

    ops = invad.install("torch")
    tdtype = getattr(torch, dtype)
    rows = []
    for n, batch, k in SIZES:
        a, b = _inputs(torch, n, batch, k, tdtype)
        for op in OPS:
            reps = repeats * 25 if n <= 4 and not batch else repeats
            reps = max(5, repeats // 4) if n >= 1024 else reps
            t = median_times(_cases(torch, ops, op, a, b), reps)
            size = {"backend": "torch", "n": n, "batch": batch, "k": k if op == "solve" else 0}
            rows.append({**size, "op": f"{op} fwd+bwd", "invad": t["invad"], "native": t["native"]})
            rows.append(
                {**size, "op": f"{op} fwd", "invad": t["invad fwd"], "native": t["native fwd"]}
            )
    if lu:
        rows += run_lu(repeats, dtype)
    if compiled:
        rows += run_compiled(repeats, dtype)
    return rows


def _size(r: dict[str, Any]) -> str:
    return "x".join(map(str, r["batch"])) or "1"


def _kib(x: int) -> str:
    return f"{x / 2**10:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed repeats per function")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32", "complex128"))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing table")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile comparison"
    )
    parser.add_argument(
        "--compile-only", action="store_true", help="time the torch.compile comparison only"
    )
    parser.add_argument("--no-lu", action="store_true", help="skip the LU family")
    parser.add_argument("--lu-only", action="store_true", help="time the LU family only")
    args = parser.parse_args()

    import torch

    import invad

    print(
        f"invad {invad.__version__} torch backend vs torch.linalg: torch {torch.__version__}, "
        f"{platform.machine()}, python {platform.python_version()}, "
        f"{torch.get_num_threads()} threads, {args.dtype}"
    )
    if not args.no_timing:
        _timing(args)
    if not args.no_memory and not args.compile_only and not args.lu_only:
        _memory(args)
    return 0


def _timing(args: Any) -> None:
    print("median seconds of interleaved repeats in one process; ratio = invad / native\n")
    if args.compile_only:
        rows = run_compiled(args.repeats, args.dtype)
    elif args.lu_only:
        rows = run_lu(args.repeats, args.dtype)
    else:
        rows = run(args.repeats, args.dtype, compiled=not args.no_compile, lu=not args.no_lu)
    header = ("op", "n", "batch", "k", "invad", "native", "ratio")
    table = [
        (
            r["op"],
            r["n"],
            _size(r),
            r["k"] or "-",
            f"{r['invad']:.3g}",
            f"{r['native']:.3g}",
            f"{r['invad'] / r['native']:.2f}",
        )
        for r in rows
    ]
    print(_table(header, table))


def _memory(args: Any) -> None:
    import torch

    import invad
    from invad.bench import SIZES

    ops = invad.install("torch")
    print("\nmemory of one forward+backward, KiB (saved: what the graph keeps for backward,")
    print("by saved_tensors_hooks, distinct storages, inputs included; peak: CPU allocator")
    print("peak during forward+backward above its start, torch.profiler self memory events)\n")
    mheader = ("op", "n", "batch", "invad saved", "native saved", "invad peak", "native peak")
    mrows = []
    for n, batch, k in SIZES:
        a, b = _inputs(torch, n, batch, k, getattr(torch, args.dtype))
        for op in OPS:
            m = memory(torch, ops, op, a, b)
            mrows.append(
                (
                    op,
                    n,
                    "x".join(map(str, batch)) or "1",
                    _kib(m["invad saved"]),
                    _kib(m["native saved"]),
                    _kib(m["invad peak"]),
                    _kib(m["native peak"]),
                )
            )
    print(_table(mheader, mrows))


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in (header, *cells)) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
