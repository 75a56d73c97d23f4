"""The workloads of docs/examples/ run as users run them, and say what the docs say.

Each script is executed in a fresh interpreter (as ``python docs/examples/...``)
and what it prints is checked: the GP gradients of torch, JAX and NumPy agree
to 1e-10 and every fit lowers the likelihood to the same point; the implicit
derivative of a Newton solve matches finite differences on torch and JAX.
They need torch and jax both (nox session ``examples``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the examples run on torch, JAX and NumPy")
pytest.importorskip("jax", reason="the examples run on torch, JAX and NumPy")

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gp_regression_gradients_agree_and_the_fits_converge_together(tmp_path):
    plot = tmp_path / "gp.png"
    out = run("gp_regression.py", "--no-timing", "--plot", str(plot))
    spread = float(re.search(r"largest difference between frameworks: (\S+)", out).group(1))
    assert spread < 1e-10, out
    fits = re.findall(r"^\s+(\w+)\s+theta = \[([^\]]+)\], nlml (\S+) -> (\S+)$", out, re.M)
    assert [name for name, *_ in fits] == ["torch", "jax", "numpy"], out
    thetas = [[float(v) for v in theta.split()] for _, theta, _, _ in fits]
    for theta in thetas[1:]:
        assert max(abs(a - b) for a, b in zip(theta, thetas[0])) < 1e-6, out
    for _, _, before, after in fits:
        assert float(after) < float(before) - 1.0, out  # the fit moved downhill, visibly
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_implicit_newton_derivative_matches_finite_differences():
    out = run("implicit_newton.py")
    rows = re.findall(
        r"^\s+(\w+)\s+directional derivative: .*relative difference (\S+)$", out, re.M
    )
    assert [name for name, _ in rows] == ["torch", "jax"], out
    assert all(float(error) < 1e-6 for _, error in rows), out
