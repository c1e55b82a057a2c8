"""Figures, the self-contained ``report.html``, ``summary.md`` and the CLI summary table of a run (or runs).

Import cost note: matplotlib is imported only by the plotting and build modules, which this package loads
lazily, so ``from prunebench.report import summary_table`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunebench.report.summary import SummaryRow, problems, summary_cells, summary_headers, summary_rows, summary_table
from prunebench.report.summary import verdict as verdict_text

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

__all__ = [
    "SummaryRow",
    "build_comparison",
    "build_report",
    "problems",
    "summary_cells",
    "summary_headers",
    "summary_rows",
    "summary_table",
    "verdict_text",
    "write_report",
]


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Rebuild a run's report from its store; see :func:`prunebench.report.build.build_report`."""
    from prunebench.report.build import build_report as _build

    return _build(run_dir, out_dir)


def write_report(snapshot: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write a report from a store snapshot; see :func:`prunebench.report.build.write_report`."""
    from prunebench.report.build import write_report as _write

    return _write(snapshot, out_dir)


def build_comparison(run_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """One report across runs; see :func:`prunebench.report.compare.build_comparison`."""
    from prunebench.report.compare import build_comparison as _compare

    return _compare(run_dirs, out_dir)
