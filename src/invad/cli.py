"""The ``invad`` command: ``invad backends``, ``invad check``, ``invad bench``."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence

from . import backends
from .rules import RULES
from .testing import CHECKS, CheckResult, run_all


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
        status = f"yes ({info.version})" if info.available else f"no: {info.reason}"
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
        results = run_all(name)
        text, failed = summarize(results)
        print(f"invad check: backend {name!r}, {len(results)} checks, {failed} failed")
        print(text)
        print(
            "cells: passing checks and, in brackets, the worst error as a fraction of its "
            "tolerance (at most 1 passes)"
        )
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

    return bench_main(repeats=args.repeats)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invad", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "backends", help="list every known backend and whether it is available"
    ).set_defaults(run=cmd_backends)
    check = sub.add_parser("check", help="verify every rule on a backend; exit 1 on any failure")
    check.add_argument(
        "--backend", default="numpy", help="backend name, or 'all' for every available one"
    )
    check.set_defaults(run=cmd_check)
    bench = sub.add_parser("bench", help="time the NumPy solve's derivatives against its forward")
    bench.add_argument("--repeats", type=int, default=15)
    bench.set_defaults(run=cmd_bench)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except LookupError as exc:  # BackendNotFoundError
        print(f"invad: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
