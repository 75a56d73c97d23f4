"""Every backend comparison available here, written to the docs: a table, a plot, the machine.

    python benchmarks/run_all.py [--repeats N]

Runs ``benchmarks/bench_<backend>.py`` for each backend whose framework
imports (numpy always; torch and jax where installed). Each script's
``run(repeats)`` returns rows ``{backend, op, n, batch, k, invad, native}``
(median seconds of invad's op and the framework's native one, measured side by
side in one process). Writes ``docs/benchmarks.md`` and
``docs/img/benchmark_ratios.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

from invad._progress import Progress
from invad.cli import positive_int

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
BACKENDS = ("numpy", "torch", "jax")


def load_script(backend: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{backend}", HERE / f"bench_{backend}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def available(backend: str) -> bool:
    return backend == "numpy" or importlib.util.find_spec(backend) is not None


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) // 1024**2
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    versions = {"python": platform.python_version()}
    for name in BACKENDS:
        if available(name):
            versions[name] = __import__(name).__version__
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        if r.get("plot") is False:
            continue
        series.setdefault((r["backend"], r["op"]), []).append((r["n"], r["invad"] / r["native"]))
    for (backend, op), points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{backend} {op}")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("matrix size n")
    ax.set_ylabel("invad time / native time (median)")
    ax.set_title("invad over native, forward + derivative")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def markdown(rows: list[dict[str, Any]], info: dict[str, str], image: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "*This page is written by `python benchmarks/run_all.py`; the figures below are the "
        "latest it produced.*",
        "",
        "Each row times invad's op and the framework's native op for the same work (forward plus "
        "derivative: `backward()` for torch, `jit(grad)` for JAX, `ops.vjp` against an "
        "inverse-based VJP for NumPy, which has no AD), side by side in one process, medians of "
        "repeats (interleaved for torch and JAX; in blocks for NumPy, whose and SciPy's "
        "OpenBLAS threads would otherwise compete: see `invad.bench.median_times`). JAX sizes "
        "run in child processes, retried where jaxlib 0.10.2 hangs (see "
        "`benchmarks/bench_jax.py`). torch rows `fwd+bwd compiled` compile the loss "
        "`sum(op(...) * ybar)` with `torch.compile(fullgraph=True)` on both sides, backward "
        "included. numpy rows `..., k singular vs none` time `solve_ex`/`inv_ex` on 100 000 "
        "4x4 systems of which k are singular (a zero row) against the same batch with none: "
        "singular matrices cost work of their own, not a loop over the batch (not plotted). "
        "The LU and Cholesky families compare with torch.linalg, jnp.linalg and "
        "jax.scipy.linalg (`cholesky_solve`: torch.cholesky_solve, jax.scipy.linalg.cho_solve); "
        "rows `... vs solve` are invad against invad, not plotted: `solve(assume_a='pos')` "
        "against the general `solve`, and one `lu_factor` with 100 `lu_solve` calls against 100 "
        "`solve` calls (factor once, solve many). "
        "A ratio below 1 means invad is faster.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
        f"![invad over native against matrix size]({image})",
        "",
        "| backend | op | n | batch | rhs | invad (s) | native (s) | invad / native |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        batch = "x".join(map(str, r["batch"])) or "1"
        lines.append(
            f"| {r['backend']} | {r['op']} | {r['n']} | {batch} | {r['k']} | "
            f"{r['invad']:.3g} | {r['native']:.3g} | {r['invad'] / r['native']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=positive_int, default=40, help="timed calls per case (default: 40)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    backends = [b for b in BACKENDS if available(b)]
    for backend in sorted(set(BACKENDS) - set(backends)):
        print(f"skipping {backend}: not installed", file=sys.stderr)
    # Minutes per backend: the clock ticks between steps, so a terminal shows it is alive.
    with Progress("benchmarks", len(backends), tick=True, enabled=not args.quiet) as progress:
        for done, backend in enumerate(backends):
            progress.update(done, what=backend)
            rows += load_script(backend).run(args.repeats)
        progress.update(len(backends), what="")
    image = "img/benchmark_ratios.png"
    plot(rows, DOCS / image)
    (DOCS / "benchmarks.md").write_text(markdown(rows, machine(), image))
    print(f"wrote {DOCS / 'benchmarks.md'} and {DOCS / image}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
