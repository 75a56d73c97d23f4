"""The ``invad`` command: ``invad backends``, ``invad check``, ``invad bench``."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence

from . import __version__, backends
from ._progress import Progress
from .rules import RULES
from .testing import CHECKS, CheckResult, Harness, run_all

# Plain text: argparse prints it as it is, so no reStructuredText markup here.
DESCRIPTION = (
    "invad: AD rules for dense linear-system primitives, installed into every array framework. "
    "Commands: 'invad backends' lists the backends, 'invad check' verifies every rule on one, "
    "'invad bench' times the NumPy solve's derivatives."
)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_backends(args: argparse.Namespace) -> int:
    rows = []
    for info in backends():
        plugin = info.plugin + (f" {info.plugin_version}" if info.plugin_version else "")
        if info.available:  # a plugin need not name its framework's version
            status = f"yes ({info.version})" if info.version else "yes"
        else:
            status = f"no: {info.reason}"
        ad = "native" if info.native_ad else "functional"
        rows.append((info.name, plugin, status, ad, ", ".join(info.devices) or "-"))
    print(table(("backend", "plugin", "available", "AD", "devices"), rows))
    return 0


def summarize(results: Sequence[CheckResult]) -> tuple[str, int]:
    """The op-by-check table of worst errors (as a fraction of their tolerance) and failures."""
    worst: dict[tuple[str, str], float] = defaultdict(float)
    count: dict[tuple[str, str], int] = defaultdict(int)
    failed: dict[tuple[str, str], int] = defaultdict(int)
    for r in results:
        key = (r.op, r.check)
        count[key] += 1
        failed[key] += not r.passed
        ratio = r.error / r.tolerance if r.tolerance else (0.0 if r.passed else float("inf"))
        worst[key] = max(worst[key], ratio)
    rows = []
    for op in RULES:
        cells = []
        for check in CHECKS:
            key = (op, check)
            if not count[key]:
                cells.append("-")
            elif failed[key]:
                cells.append(f"FAIL {failed[key]}/{count[key]} ({worst[key]:.2g})")
            else:
                cells.append(f"ok {count[key]} ({worst[key]:.2g})")
        rows.append((op, *cells))
    return table(("op", *CHECKS), rows), sum(failed.values())


def cmd_check(args: argparse.Namespace) -> int:
    names = [i.name for i in backends() if i.available] if args.backend == "all" else [args.backend]
    total_failed = 0
    for name in names:
        skipped = Harness(name).unsupported()
        with Progress(f"invad check {name}", enabled=not args.quiet) as progress:
            results = run_all(name, progress=progress.update)
        text, failed = summarize(results)
        print(f"invad check: backend {name!r}, {len(results)} checks, {failed} failed")
        print(text)
        print(
            "cells: passing checks and, in brackets, the worst error as a fraction of its "
            "tolerance (at most 1 passes)"
        )
        if skipped:
            # One line, whatever the count: the backend's reason says how to turn them on
            # (the reasons differ only in the dtype they name).
            print(f"not run: the {' and '.join(skipped)} cases: {next(iter(skipped.values()))}")
        for r in results:
            if not r.passed:
                print(
                    f"FAILED {r.op} {r.check} [{r.case}]: "
                    f"error {r.error:.3g} > {r.tolerance:.3g} {r.detail}"
                )
        print()
        total_failed += failed
    return 1 if total_failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(repeats=args.repeats, progress=not args.quiet)


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="invad", description=DESCRIPTION)
    root.add_argument("--version", action="version", version=f"invad {__version__}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "backends",
        help="list every known backend: plugin, version, available or why not, AD, devices",
        description="List every known backend: its plugin and version, whether it is "
        "available (and why not), native or functional AD, and its devices.",
    ).set_defaults(run=cmd_backends)
    check = sub.add_parser(
        "check",
        help="verify every rule on a backend and print a table; exit 1 on any failure",
        description="Run the conformance checks on a backend and print an op-by-check table. "
        "Exit status 0 when all pass, 1 on any failure, 2 for a backend that cannot be "
        "installed. Progress goes to stderr.",
    )
    check.add_argument(
        "--backend",
        default="numpy",
        metavar="NAME",
        help="backend to check (default: numpy), or 'all' for every available one",
    )
    check.add_argument(
        "-q", "--quiet", action="store_true", help="print no progress on stderr, only the table"
    )
    check.set_defaults(run=cmd_check)
    bench = sub.add_parser(
        "bench",
        help="time the NumPy solve's derivatives against its forward",
        description="Time a NumPy solve VJP against the forward solve and against an "
        "inverse-based VJP, side by side in one process.",
    )
    bench.add_argument(
        "--repeats",
        type=positive_int,
        default=15,
        metavar="N",
        help="timed calls per function and size; the median is reported (default: 15, at least 1)",
    )
    bench.add_argument(
        "-q", "--quiet", action="store_true", help="print no progress on stderr, only the table"
    )
    bench.set_defaults(run=cmd_bench)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.command is None:  # bare `invad`: say what it can do
        cli.print_help()
        return 0
    try:
        return int(args.run(args))
    except LookupError as exc:  # BackendNotFoundError
        print(f"invad: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
