"""The conformance kit on a backend that cannot hold every dtype, and the progress display.

The stand-in is NumPy that refuses 64-bit data, as JAX without 64-bit mode
does; the JAX test itself runs where jax imports (``nox -s tests-jax``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from invad import _progress, cli
from invad.backends.numpy import NumpyBackend
from invad.ops import Ops
from invad.testing import checks

HINT = "set NARROW64=1 to hold it"


class Narrow(NumpyBackend):
    """NumPy that holds only single precision, refusing the rest with a how-to."""

    name = "narrow"

    def from_numpy(self, x, device):
        if x.dtype in (np.float64, np.complex128):
            raise TypeError(f"narrow: {x.dtype} data needs 64-bit mode: {HINT}")
        return super().from_numpy(x, device)


@pytest.fixture
def narrow(monkeypatch):
    """``install("narrow")`` inside the kit gives the stand-in's ops."""
    backend = Narrow()
    backend.load()
    ops = Ops(backend, "cpu")
    real = checks.install
    monkeypatch.setattr(
        checks, "install", lambda name=None, **kw: ops if name == "narrow" else real(name, **kw)
    )
    return checks.Harness("narrow")


def test_unsupported_names_the_refused_dtypes_with_the_backends_reason(narrow):
    assert set(narrow.unsupported()) == {"float64", "complex128"}
    assert all(HINT in reason for reason in narrow.unsupported().values())
    assert checks.Harness("numpy").unsupported() == {}


def test_narrowed_stores_double_precision_as_single(narrow):
    with pytest.raises(TypeError, match="64-bit mode"):
        narrow.put(np.ones(2))
    assert narrow.narrowed().put(np.ones(2)).dtype == np.float32
    assert narrow.narrowed().put(np.ones(2, np.complex128)).dtype == np.complex64
    numpy = checks.Harness("numpy")
    assert numpy.narrowed() is numpy  # nothing to narrow


def test_run_all_runs_what_the_backend_holds_and_passes(narrow):
    seen = []
    rows = checks.run_all("narrow", progress=lambda done, total, what: seen.append((done, total)))
    assert rows and all(r.passed for r in rows), [r for r in rows if not r.passed][:3]
    dtypes = {r.case.split()[-1] for r in rows if r.check in ("forward", "jvp-fd")}
    assert dtypes == {"float32", "complex64"}
    # float32 finite differences need float64 references: built in NumPy, and they pass
    assert sum(r.check == "jvp-fd" for r in rows) > 0
    assert {r.op for r in rows if r.check == "errors"} == set(checks.RULES)
    assert seen[0] == (0, seen[-1][1]) and seen[-1][0] == seen[-1][1] > 0


def test_invad_check_says_in_one_line_what_it_did_not_run(narrow, capsys):
    assert cli.main(["check", "--backend", "narrow", "--quiet"]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith("not run:")]
    assert len(skipped) == 1 and HINT in skipped[0]
    assert "float64 and complex128" in skipped[0]
    # The table (a line per op, a header, the summary) and that one line: never a line per case.
    assert "FAILED" not in out and len(out.splitlines()) <= len(checks.RULES) + 6


def test_the_kit_on_jax_without_64_bit_mode():
    pytest.importorskip("jax")
    script = textwrap.dedent(
        """
        import jax
        from invad.testing import checks
        from invad.testing.cases import SHAPES
        import numpy as np

        h = checks.Harness("jax")
        assert set(h.unsupported()) == {"float64", "complex128"}, h.unsupported()
        assert all("JAX_ENABLE_X64=1" in r for r in h.unsupported().values())
        rng = np.random.default_rng(0)
        shape = SHAPES["solve"][1]
        for check in (checks.check_jvp, checks.check_vjp):
            row = check(h, "solve", shape, "float32", rng)
            assert row.passed, row
        rows = list(checks.check_errors(h.narrowed(), "solve_ex"))
        assert rows and all(r.passed for r in rows), rows
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    ran = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr[-2000:]


# -- progress --------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_in_place_on_a_terminal_and_clears_it(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    stream = Tty()
    with _progress.Progress("work", 4, stream=stream) as p:
        assert p.bar
        p.update(1, what="step one")
        p.update(4)
    text = stream.getvalue()
    assert "\n" not in text  # redrawn in place
    assert "[#####...............]  25% 1/4" in text and "step one" in text
    assert "100% 4/4" in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == ""  # cleared


def test_progress_writes_few_plain_lines_elsewhere(monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 3))
    monkeypatch.setattr(_progress.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    with _progress.Progress("work", 100, stream=stream, interval=10) as p:
        for done in range(100):
            p.update(done, what=f"item {done}")
    lines = stream.getvalue().splitlines()
    # 300 fake seconds, a line every 10 s at most, and the closing line
    assert 20 <= len(lines) <= 31
    assert lines[0].startswith("work: ") and "after 12 s, now item 3" in lines[0]
    assert lines[-1].startswith("work: 99/100 done in 5 min")


def test_progress_is_silent_for_quick_work_or_when_disabled():
    stream = io.StringIO()
    with _progress.Progress("work", 3, stream=stream) as p:
        p.update(3)
    with _progress.Progress("work", 3, stream=stream, enabled=False, bar=True) as p:
        p.update(1)
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.42, "0.4 s"), (12.2, "12 s"), (104, "1 min 44 s"), (60, "1 min 0 s")]
)
def test_duration(seconds, text):
    assert _progress.duration(seconds) == text


def test_progress_ticks_between_updates_when_asked(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    stream = Tty()
    with _progress.Progress("long", 2, stream=stream, tick=True) as p:
        p.update(0, what="a step of minutes")
        drawn = stream.getvalue().count("\r")
        time.sleep(1.5)  # no update from here: the ticker redraws
        assert stream.getvalue().count("\r") > drawn
    assert p._ticker is not None and not p._ticker.is_alive()
