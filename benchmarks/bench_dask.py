"""Scaling out: forward plus VJP of ``solve`` on a dask.distributed LocalCluster.

    python benchmarks/bench_dask.py [--systems 1000000] [--chunk 62500] [--repeats 3]

Three measurements, printed as the tables of docs/scaling.md and drawn in
``docs/img/dask_scaling.png``:

1. Throughput (8x8 systems per second) of ``ops.vjp("solve", (a, b), xbar)``,
   the forward and the VJP together, on ``--systems`` systems: invad's NumPy
   backend in this process against the Dask backend on a LocalCluster of 1
   and of 2 worker processes (one thread each), the batch in chunks of
   ``--chunk`` systems. The Dask inputs are made on the workers and persisted
   first; the results are persisted on the workers (``Client.persist``), as a
   pipeline would keep them, not gathered here. Best of ``--repeats``.
2. Memory: a batch ``--factor`` (4) times larger than one worker's
   ``memory_limit`` (``--memory-limit``, 512 MiB) made on the workers, solved
   and differentiated, and reduced to a few numbers; each worker's resident
   memory (RSS, psutil) is sampled every 20 ms. Spilling to disk is switched
   off: the run completes within the limit only if no worker ever holds more
   than a few chunks.

BLAS threads are pinned to one (OPENBLAS_NUM_THREADS=1, as dask.distributed
pins them in its workers): the kernels are NumPy's batched LAPACK loops over
tiny matrices, where OpenBLAS's thread pool only costs time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads OpenBLAS

import argparse
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import invad

HERE = Path(__file__).resolve().parent
PLOT = HERE.parent / "docs" / "img" / "dask_scaling.png"
N = 8  # matrix size


def numpy_inputs(systems: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((systems, N, N)) / math.sqrt(N) + 2 * np.eye(N)
    return a, rng.standard_normal((systems, N, 1)), rng.standard_normal((systems, N, 1))


def dask_inputs(systems: int, chunk: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """The same distribution as :func:`numpy_inputs`, generated on the workers."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    a = rng.standard_normal((systems, N, N), chunks=(chunk, N, N)) / math.sqrt(N) + 2 * np.eye(N)
    b = rng.standard_normal((systems, N, 1), chunks=(chunk, N, 1))
    xbar = rng.standard_normal((systems, N, 1), chunks=(chunk, N, 1))
    return a, b, xbar


def best(repeats: int, fn: Any, cpu: Any) -> tuple[float, float]:
    """The best wall time of ``fn()`` over ``repeats``, and the CPU seconds (``cpu()``, a
    running total) that run took: on a shared machine the second says what the work
    costs, the first what another process's load left of it."""
    runs = []
    for _ in range(repeats):
        cpu0, start = cpu(), time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start, cpu() - cpu0))
    return min(runs)


def cpu_of(pids: list[int]) -> Any:
    """The CPU seconds (user and system) that the processes ``pids`` have used so far."""
    import psutil

    procs = [psutil.Process(pid) for pid in pids]
    return lambda: sum(sum(p.cpu_times()[:2]) for p in procs)


def cluster(workers: int, memory_limit: str | None = None) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    kwargs: dict[str, Any] = {"memory_limit": memory_limit} if memory_limit else {}
    lc = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        **kwargs,
    )
    return lc, Client(lc)


def throughput_numpy(systems: int, repeats: int) -> tuple[float, float]:
    """Systems per second of wall time, and per CPU second."""
    ops = invad.install("numpy")
    a, b, xbar = numpy_inputs(systems)
    wall, cpu = best(repeats, lambda: ops.vjp("solve", (a, b), xbar), time.process_time)
    return systems / wall, systems / cpu


def throughput_dask(workers: int, systems: int, chunk: int, repeats: int) -> tuple[float, float]:
    """Systems per second of wall time, and per CPU second of the workers together."""
    from distributed import wait

    ops = invad.install("dask")
    lc, client = cluster(workers)
    try:
        a, b, xbar = client.persist(list(dask_inputs(systems, chunk)))
        wait([a, b, xbar])

        def run() -> None:
            x, (abar, bbar) = ops.vjp("solve", (a, b), xbar)
            results = client.persist([x, abar, bbar])
            wait(results)
            del results  # released on the workers

        wall, cpu = best(repeats, run, cpu_of(list(client.run(os.getpid).values())))
    finally:
        client.close()
        lc.close()
    return systems / wall, systems / cpu


class Sampler(threading.Thread):
    """The largest resident set size of each process in ``pids``, sampled every 20 ms."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, proc in self.procs.items():
                self.peak[name] = max(self.peak[name], proc.memory_info().rss)
            time.sleep(0.02)


def memory_run(memory_limit: str, factor: float, chunk: int) -> dict[str, Any]:
    import dask
    from dask.utils import parse_bytes

    limit = parse_bytes(memory_limit)
    per_system = (N * N + 2 * N) * 8  # a, b, xbar in float64
    systems = math.ceil(factor * limit / per_system)
    ops = invad.install("dask")
    off = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False}
    with dask.config.set(off):
        lc, client = cluster(2, memory_limit)
        try:
            pids = client.run(os.getpid)
            sampler = Sampler(pids)
            sampler.start()
            a, b, xbar = dask_inputs(systems, chunk, seed=1)
            x, (abar, bbar) = ops.vjp("solve", (a, b), xbar)
            summary = [x.sum(), abs(abar).max(), abs(bbar).max()]  # a few numbers come back
            start = time.perf_counter()
            values = client.compute(summary, sync=True)
            seconds = time.perf_counter() - start
            sampler.done.set()
            sampler.join()
        finally:
            client.close()
            lc.close()
    return {
        "systems": systems,
        "batch_bytes": systems * per_system,
        "limit": limit,
        "peaks": list(sampler.peak.values()),
        "seconds": seconds,
        "finite": bool(np.all(np.isfinite(values))),
        "chunk_bytes": chunk * per_system,
    }


def plot(
    rates: dict[str, tuple[float, float]], memory: dict[str, Any], systems: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mib = 2**20
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=(1.3, 1))
    names = list(rates)
    x = np.arange(len(names))
    wall = [rates[k][0] / 1e3 for k in names]
    cpu = [rates[k][1] / 1e3 for k in names]
    bars = left.bar(x - 0.2, wall, 0.4, color="#4c72b0", label="per second (wall time)")
    left.bar_label(bars, labels=[f"{v:.0f}k" for v in wall], fontsize=8)
    bars = left.bar(x + 0.2, cpu, 0.4, color="#a6b8d8", label="per CPU second")
    left.bar_label(bars, labels=[f"{v:.0f}k" for v in cpu], fontsize=8)
    left.set_xticks(x, names)
    left.set_ylabel("8x8 systems (thousands)")
    left.set_title(f"solve: forward + VJP, {systems:,} systems")
    left.set_ylim(0, max(wall + cpu) * 1.25)
    left.legend(loc="upper right", fontsize=8)
    workers = [f"worker {i}" for i in range(len(memory["peaks"]))]
    peaks = [p / mib for p in memory["peaks"]]
    bars = right.bar(workers, peaks, color="#55a868")
    right.bar_label(bars, labels=[f"{p:.0f} MiB" for p in peaks])
    right.axhline(memory["limit"] / mib, color="#c44e52", linestyle="--", label="memory_limit")
    right.set_ylabel("peak resident memory (MiB)")
    right.set_title(
        f"batch of {memory['batch_bytes'] / 2**30:.1f} GiB "
        f"({memory['batch_bytes'] / memory['limit']:.0f}x memory_limit)"
    )
    right.set_ylim(0, memory["limit"] / mib * 1.3)
    right.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=62_500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-limit", default="512MiB")
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--memory-chunk", type=int, default=16_384)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()

    rates = {"NumPy\n1 process": throughput_numpy(args.systems, args.repeats)}
    for workers in (1, 2):
        label = f"Dask\n{workers} worker{'s' if workers > 1 else ''}"
        rates[label] = throughput_dask(workers, args.systems, args.chunk, args.repeats)
    memory = memory_run(args.memory_limit, args.factor, args.memory_chunk)

    chunks = math.ceil(args.systems / args.chunk)
    print(f"solve, forward + VJP, {args.systems:,} systems of 8x8 in {chunks} chunks")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print("| run | systems per second | vs NumPy | systems per CPU second | vs NumPy |")
    print("|---|---|---|---|---|")
    base = rates["NumPy\n1 process"]
    for name, (wall, cpu) in rates.items():
        print(
            f"| {name.replace(chr(10), ', ')} | {wall:,.0f} | {wall / base[0]:.2f}x "
            f"| {cpu:,.0f} | {cpu / base[1]:.2f}x |"
        )
    gib, mib = 2**30, 2**20
    print(
        f"\nmemory: {memory['systems']:,} systems, {memory['batch_bytes'] / gib:.2f} GiB "
        f"(a, b, xbar), {memory['batch_bytes'] / memory['limit']:.1f}x a worker's memory_limit "
        f"of {memory['limit'] / mib:.0f} MiB, chunks of {memory['chunk_bytes'] / mib:.1f} MiB; "
        f"{memory['seconds']:.1f} s; results finite: {memory['finite']}"
    )
    for i, peak in enumerate(memory["peaks"]):
        share = peak / memory["limit"]
        print(f"| worker {i} | peak RSS {peak / mib:.0f} MiB | {share:.0%} of limit |")
    plot(rates, memory, args.systems, args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
