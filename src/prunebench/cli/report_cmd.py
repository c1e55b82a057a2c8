"""``prunebench report RUN_DIR``: rebuild a run's report from its results store (nothing is re-run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunebench.cli.common import console, folder_path
from prunebench.outdir import OutDirError, check_writable_dir, find_run_folder
from prunebench.runner.rundir import RunFolderError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser(
        "report",
        help="rebuild report.html, summary.md, figures and exports of a run from its results store",
        description="Rebuild the report of a finished (or interrupted) run from RUN_DIR/results.sqlite alone.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run folder (holds results.sqlite)")
    p.add_argument("--out", type=folder_path, default=None, help="write the report here instead of RUN_DIR")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Rebuild the report, then print the summary table and where the files are."""
    # Imported here: matplotlib is only loaded when a report is actually built.
    from prunebench.report import build_report, summary_rows, summary_table
    from prunebench.report.hardware import main_snapshot
    from prunebench.results import load_snapshot

    # The store is read read-only: a folder without a run is an error before anything is written, and a run on
    # a read-only mount can still be reported elsewhere (--out).
    snapshot = load_snapshot(args.run_dir)
    if args.out is None:
        try:
            check_writable_dir(args.run_dir, "RUN_DIR")
        except OutDirError as exc:
            raise OutDirError(f"{exc}; write the report elsewhere with --out DIR") from None
    else:
        check_writable_dir(args.out)
        other = find_run_folder(args.out)
        if other is not None and other.resolve() != Path(args.run_dir).resolve():
            raise RunFolderError(f"--out {args.out} is inside another run's folder ({other}); its report is "
                                 "rebuilt by `prunebench report` on that run")
    paths = build_report(args.run_dir, args.out)
    out = console()
    out.print(summary_table(summary_rows(main_snapshot(snapshot)), width=out.width))
    out.print(f"report: {paths['report.html']}")
    out.print(f"summary: {paths['summary.md']}  data: {paths['results.json']}, {paths['results.csv']}")
    return 0
