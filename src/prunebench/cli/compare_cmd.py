"""``prunebench compare RUN_A RUN_B ...``: one report across runs, grouped by environment fingerprint."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from prunebench.cli.common import console, folder_path
from prunebench.outdir import check_writable_dir, find_run_folder
from prunebench.runner.rundir import RunFolderError


def default_out(run_dirs: list[Path]) -> Path:
    """``runs/compare-<hash>``: the same set of runs always lands in the same folder."""
    key = "\n".join(sorted(str(d.resolve()) for d in run_dirs)).encode()
    return Path("runs") / f"compare-{hashlib.sha256(key).hexdigest()[:10]}"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    p = sub.add_parser(
        "compare",
        help="one report across several runs (e.g. two machines or torch versions)",
        description="Compare runs from their results stores; runs are grouped by environment fingerprint hash.",
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", type=Path, nargs="+", help="two or more run folders")
    p.add_argument("--out", type=folder_path, default=None,
                   help="output folder (default: runs/compare-<hash of the runs>; never inside a run folder)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the comparison and print where it is."""
    from prunebench.report import build_comparison

    out_dir = args.out if args.out is not None else default_out(args.run_dirs)
    # Checked before any store is read or figure drawn: a run folder belongs to its run (report --out refuses
    # it too), and an unwritable --out is one line naming the option, not "No such file or directory".
    check_writable_dir(out_dir)
    inside = find_run_folder(out_dir)
    if inside is not None:
        raise RunFolderError(f"--out {out_dir} is inside the run folder {inside}; write the comparison elsewhere")
    paths = build_comparison(args.run_dirs, out_dir)
    console().print(f"comparison: {paths['compare.html']}  summary: {paths['compare.md']}")
    return 0
