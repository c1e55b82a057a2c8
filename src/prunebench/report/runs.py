"""The runs a comparison reads: each run folder's snapshot, analysis and environment fingerprint.

Both the comparison report (:mod:`prunebench.report.compare`) and its figures
(:mod:`prunebench.report.compare_plots`) use this; neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.analysis import Analysis, analyze
from prunebench.results import load_snapshot


@dataclass(frozen=True)
class RunEntry:
    """One compared run: its label (``#1 <run_id>``), folder, snapshot, analysis and fingerprint."""

    label: str
    folder: Path
    snapshot: dict[str, Any]
    analysis: Analysis
    fingerprint: str

    @property
    def env(self) -> dict[str, Any]:
        """The run's environment record."""
        return (self.snapshot["run"] or {}).get("environment") or {}

    @property
    def config(self) -> dict[str, Any]:
        """The run's config record."""
        return (self.snapshot["run"] or {}).get("config") or {}


def load_runs(run_dirs: Sequence[str | Path]) -> list[RunEntry]:
    """Load and analyse each run folder; at least two distinct folders are required.

    Raises:
        ValueError: fewer than two runs, or the same folder twice.
        PrunebenchError: a folder is not a run folder or its store cannot be read.
    """
    folders = [Path(d) for d in run_dirs]
    if len(folders) < 2:
        raise ValueError(f"compare needs at least two run folders, got {len(folders)}")
    resolved = [f.resolve() for f in folders]
    dupes = sorted({str(f) for f in folders if resolved.count(f.resolve()) > 1})
    if dupes:
        raise ValueError(f"the same run folder was given twice: {', '.join(dupes)}")
    entries = []
    for i, folder in enumerate(folders, start=1):
        snap = load_snapshot(folder)
        run = snap["run"] or {}
        fp = str((run.get("environment") or {}).get("fingerprint_hash") or "unknown")
        entries.append(RunEntry(f"#{i} {run.get('run_id', folder.name)}", folder, snap, analyze(snap), fp))
    return entries


def differing(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys whose values are not the same in every record (a key missing somewhere counts as differing)."""
    keys = sorted({k for r in records for k in r})
    return [k for k in keys if len({repr(r.get(k)) for r in records}) > 1]


def groups(entries: Sequence[RunEntry]) -> dict[str, list[RunEntry]]:
    """Runs grouped by environment fingerprint hash, in order of first appearance."""
    out: dict[str, list[RunEntry]] = {}
    for e in entries:
        out.setdefault(e.fingerprint, []).append(e)
    return out
