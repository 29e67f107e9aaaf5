"""``clipcl-report``: the command line of the report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .build import stray_lines, write_report
from .runs import NoFinishedRuns, ReportError, _display_path
from .tables import missing_lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clipcl-report",
        description="Aggregate finished run folders (or sweep folders holding them) into a "
        "comparison table over seeds, CSV/LaTeX summaries and a trade-off plot.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="run folders, offline W&B runs (wandb/offline-run-*) or folders holding them",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: PATH/report for a single PATH, else ./report)"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="summary metrics for the table (default: the protocol's headline metrics)",
    )
    args = parser.parse_args(argv)

    out = args.out
    if out is None:
        out = args.paths[0] / "report" if len(args.paths) == 1 and args.paths[0].is_dir() else Path("report")
    try:
        result = write_report(args.paths, out, metrics=args.metrics)
    except (NoFinishedRuns, ReportError, FileNotFoundError) as exc:
        print(f"clipcl-report: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"clipcl-report: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print(result["table"])
    print("\nMissing or failed runs:")
    print("\n".join(missing_lines(result["missing"])))
    if result["strays"]:
        print("\nStray folders (no run in them, not counted):")
        print("\n".join(stray_lines(result["strays"])))
    print("\nWrote:")
    print("\n".join(f"  {_display_path(f)}" for f in result["files"]))
    return 0
