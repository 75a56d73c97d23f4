"""invad's JAX ops across two processes joined by ``jax.distributed`` (CPU, gloo collectives).

Spawns tests/jax_multiprocess.py twice (process 0 and 1, one CPU device each,
coordinator on a free port of 127.0.0.1) and waits at most :data:`TIMEOUT`
seconds. Each process runs, under ``jit``, invad's solve, its ``jax.jvp`` and
``jax.grad`` of a loss summed over the whole batch, with the batch sharded over
the two-process mesh, and compares the half it holds with the same functions
run in one process. Runs where jax imports (``nox -s tests-jax``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

WORKER = Path(__file__).with_name("jax_multiprocess.py")
#: Seconds the two processes may take together (start, compile, run); jaxlib can hang.
TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_agree_with_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device per process
    env["JAX_ENABLE_X64"] = "1"
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(port), str(pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for pid in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            proc.kill()  # only if still running (a timeout): never leave one behind
            proc.wait()
    reports = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    halves = {0: [[0, 4]], 1: [[4, 8]]}
    for pid, report in enumerate(reports):
        assert (report["process"], report["processes"], report["devices"]) == (pid, 2, 2)
        assert not report["all_gather"] and not report["all_to_all"], report
        assert report["numpy"] < 1e-12, report
        for name in ("forward", "jvp", "grad_a", "grad_b"):
            assert report[f"{name}_rows"] == halves[pid], report  # each process its own half
            assert report[name] < 1e-12, (name, report)
