"""Rebuild every report file of a run from its results store alone (nothing is re-measured).

The output is byte-stable: the same store gives the same bytes, file for file, because every writer here is
a pure function of the stored rows (no clock, no random ids, deterministic figure files).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prunebench.analysis import analyze
from prunebench.analysis.deploy import recommend
from prunebench.report.deploy import (
    deploy_html,
    deploy_markdown,
    eager_only,
    recommendation_html,
    recommendation_markdown,
    snapshot_rows,
)
from prunebench.report.hardware import hardware_html, hardware_md, main_snapshot
from prunebench.report.html import render_report
from prunebench.report.markdown import render_summary_md
from prunebench.report.plots import FIGURES, write_figures
from prunebench.results import export_csv, export_json, load_snapshot, write_bytes_atomic

logger = logging.getLogger(__name__)

#: Sub-folder of the output folder that holds the PNG/SVG figures.
FIGURE_DIR = "figures"


def write_report(snapshot: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write the report files of one run's snapshot into ``out_dir``.

    Files: ``report.html``, ``summary.md``, ``results.json``, ``results.csv`` and ``figures/<name>.{png,svg}``.
    ``results.json`` is the snapshot plus ``recommendation``: one :class:`~prunebench.analysis.deploy.Recommendation`
    per batch size, the sentences ``report.html`` and ``summary.md`` open with.

    Returns:
        ``{relative file name: path}`` for every file written, sorted by name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The run's tables and figures are about eager cells; other backends get their own "what to deploy" section.
    # A run timed on several hardware classes: the main report reads one class, and a section per class
    # follows the summary; exports keep every cell.
    full = snapshot
    deploy = deploy_markdown(*snapshot_rows(snapshot))
    # What to deploy at each batch size, over every backend of the class the report shows: the reports open with it.
    recommendations = recommend(main_snapshot(full))
    snapshot = main_snapshot(eager_only(snapshot))
    a = analyze(snapshot)
    figures = write_figures(a, out / FIGURE_DIR)
    paths: dict[str, Path] = {}
    for name, files in figures.items():
        for ext, path in files.items():
            paths[f"{FIGURE_DIR}/{name}.{ext}"] = path
    embedded = {name: (files["png"], FIGURES[name][1]) for name, files in figures.items()}
    page = render_report(snapshot, a, embedded, hardware_html(eager_only(full)),
                         recommendation=recommendation_html(recommendations) + (deploy_html(deploy) if deploy else ""))
    paths["report.html"] = write_bytes_atomic(out / "report.html", page.encode())
    pngs = [f"{FIGURE_DIR}/{name}.png" for name in figures]
    summary = render_summary_md(snapshot, a, pngs, hardware_md(eager_only(full)),
                                recommendation=recommendation_markdown(recommendations))
    summary += "\n" + deploy if deploy else ""
    paths["summary.md"] = write_bytes_atomic(out / "summary.md", summary.encode())
    paths["results.json"] = export_json({**full, "recommendation": [r.to_dict() for r in recommendations]},
                                        out / "results.json")
    paths["results.csv"] = export_csv(full, out / "results.csv")
    logger.info("report of run %s written to %s", (snapshot.get("run") or {}).get("run_id"), out)
    return dict(sorted(paths.items()))


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Rebuild the report of the run in ``run_dir`` from its ``results.sqlite`` (into ``run_dir`` by default).

    Raises:
        PrunebenchError: ``run_dir`` is not a run folder or its store cannot be read.
    """
    snapshot = load_snapshot(run_dir)
    return write_report(snapshot, Path(run_dir) if out_dir is None else Path(out_dir))
