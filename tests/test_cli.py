"""The command line: `invad backends`, `invad check`, `python -m invad`."""

from __future__ import annotations

import re
import subprocess
import sys

from invad import cli
from invad.rules import RULES
from invad.testing import CHECKS, CheckResult
from invad.testing.oracle import load_cases, replays


def test_backends_prints_a_table_with_numpy_available(capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    header, _, *rows = out.splitlines()
    assert header.split() == ["backend", "plugin", "available", "AD", "devices"]
    numpy_row = next(r for r in rows if r.startswith("numpy "))
    assert "yes (" in numpy_row and "functional" in numpy_row and "cpu" in numpy_row


def test_check_passes_on_numpy_and_prints_op_by_check(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "backend 'numpy'" in out and " 0 failed" in out
    header = next(line for line in out.splitlines() if line.startswith("op "))
    assert header.split() == ["op", *CHECKS]
    assert "native-ad" in CHECKS and "oracle-vjp" in CHECKS
    rows = {
        cells[0]: dict(zip(CHECKS, cells[1:]))
        for cells in (re.split(r"\s{2,}", line) for line in out.splitlines())
        if cells[0] in RULES
    }
    assert list(rows) == list(RULES)
    oracle_ops = {r.op for case in load_cases() for r in replays(case)}
    for op, cells in rows.items():  # "ok N (worst)" per check; "-" where nothing ran:
        assert cells.pop("native-ad") == "-"  # NumPy has no AD engine
        if op not in oracle_ops:  # no oracle data for this op
            assert cells.pop("oracle-jvp") == cells.pop("oracle-vjp") == "-"
        assert all(cell.startswith("ok ") for cell in cells.values()), cells


def test_check_exits_1_when_a_check_fails(capsys, monkeypatch):
    bad = CheckResult("solve", "jvp-fd", "single float64", 1.0, 1e-6, "planted")
    monkeypatch.setattr(cli, "run_all", lambda name: [bad])
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL 1/1" in out and "FAILED solve jvp-fd [single float64]" in out


def test_check_of_an_unknown_backend_exits_2(capsys):
    assert cli.main(["check", "--backend", "nope"]) == 2
    assert "no backend named 'nope'" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "invad", "backends"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("backend")
