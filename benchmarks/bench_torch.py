"""PyTorch backend: invad's ``inv`` and ``solve`` against ``torch.linalg``, forward plus backward.

    python benchmarks/bench_torch.py [--repeats N] [--dtype float64|float32|complex128]
        [--no-memory] [--no-timing] [--no-compile | --compile-only]

For each size of ``invad.bench.SIZES`` (n=3 one matrix; n=4 batch 10000;
n=64 batch 256; n=256 batch 16; n=1024 one matrix with 64 right-hand sides),
side by side in one process, invad and native timed interleaved (median wall
time of ``time.perf_counter``, after a warm-up call):

- ``fwd+bwd``: ``y = op(a[, b])`` on leaf tensors that require grad, then
  ``torch.autograd.grad(y, inputs, ybar)`` with a fixed random ``ybar``;
- ``fwd``: the op alone under ``torch.no_grad()`` (for reference).

Ratios are invad over native: below 1 means invad is faster.

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


def run(repeats: int = 40, dtype: str = "float64", compiled: bool = True) -> list[dict[str, Any]]:
    """Rows ``{backend, op, n, batch, k, invad, native}`` for ``benchmarks/run_all.py``:
    eager, then (``compiled``) compiled with ``torch.compile``."""
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
    if not args.no_memory and not args.compile_only:
        _memory(args)
    return 0


def _timing(args: Any) -> None:
    print("median seconds of interleaved repeats in one process; ratio = invad / native\n")
    if args.compile_only:
        rows = run_compiled(args.repeats, args.dtype)
    else:
        rows = run(args.repeats, args.dtype, compiled=not args.no_compile)
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
