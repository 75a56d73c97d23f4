"""The command line: `invad backends`, `invad check`, `python -m invad`."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys

import pytest

import invad
from invad import _progress, cli
from invad.registry import BackendInfo
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
    monkeypatch.setattr(cli, "run_all", lambda name, **kwargs: [bad])
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


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"invad {invad.__version__}"
    assert invad.__version__ == importlib.metadata.version("invad")


def test_bare_invad_prints_help_and_exits_0(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: invad")
    assert all(command in out for command in ("backends", "check", "bench"))


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    root = cli.parser()
    (sub,) = (a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return {"invad": root, **{f"invad {k}": p for k, p in sub.choices.items()}}


def test_every_option_has_help_and_no_help_text_has_rst_markup():
    parsers = all_parsers()
    assert set(parsers) == {"invad", "invad backends", "invad check", "invad bench"}
    for name, parser in parsers.items():
        for action in parser._actions:
            if action.option_strings:
                assert action.help, f"{name} {action.option_strings} has no help"
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text, f"{name} --help: {text}"


@pytest.mark.parametrize("repeats", ["0", "-3", "two"])
def test_bench_rejects_repeats_below_1(repeats, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--repeats", repeats])
    assert exit_.value.code == 2
    assert "--repeats" in capsys.readouterr().err


def test_a_backend_without_a_version_shows_as_plain_yes(capsys, monkeypatch):
    unversioned = BackendInfo("bare", "bare-plugin", None, True, None, None, False, ("cpu",))
    monkeypatch.setattr(cli, "backends", lambda: [unversioned])
    assert cli.main(["backends"]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.split() == ["bare", "bare-plugin", "yes", "functional", "cpu"]


def test_check_shows_progress_on_stderr_and_quiet_hides_it(capsys, monkeypatch):
    def fake_run_all(name, progress=None):
        for done in range(3):
            progress(done, 3, "inv forward single float64")
        progress(3, 3, "")
        return [CheckResult("inv", "forward", "single float64", 0.0, 1.0)]

    monkeypatch.setattr(cli, "run_all", fake_run_all)
    monkeypatch.setattr(_progress, "QUIET_BELOW", 0.0)  # plain mode: the closing line always
    assert cli.main(["check"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "invad check numpy: 3/3 done in 0.0 s\n"
    assert captured.out.startswith("invad check: backend 'numpy', 1 checks, 0 failed")
    assert cli.main(["check", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
