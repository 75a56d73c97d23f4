"""First use from many threads at once: discovery, loading and the Ops cache are safe.

Each case runs in a fresh interpreter, since only a first use can race: eight
threads wait at a barrier, then all call ``invad.install`` (or an op) at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from invad.testing.plugin import env_backends

SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import invad

    name, first = sys.argv[1], sys.argv[2]
    if first == "default":
        invad.install()  # the embedded default installed before the race
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(invad.install(name))
        except BaseException as exc:  # every failure is the finding
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8 and all(r is results[0] for r in results), set(map(id, results))
    assert invad.install(name) is results[0]
    print("ok", results[0])
    """
)


@pytest.mark.parametrize("first", ["nothing", "default"])
@pytest.mark.parametrize("backend", env_backends())
def test_concurrent_first_install_gives_one_ops(backend, first):
    for attempt in range(2):  # a race may hide on one run: two fresh processes
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, backend, first],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
        assert done.returncode == 0, (attempt, done.stdout, done.stderr[-3000:])
        assert done.stdout.startswith("ok <invad.Ops backend=")
