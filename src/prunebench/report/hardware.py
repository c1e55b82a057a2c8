"""One run timed on several hardware classes (the Ray executor): its cells grouped by node class.

Each class timed every cell against its own dense model, so a class's cells form a complete run of their
own: the run's snapshot is split into one snapshot per class (the class's own environment in place of the
driver's) and read exactly as ``prunebench compare`` reads separate runs. The main report shows one class
(:func:`primary_class`); this module adds one speedup table per class and one table across them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunebench.analysis import analyze
from prunebench.report import fmt
from prunebench.report.compare import speedup_rows
from prunebench.report.html import esc, table
from prunebench.report.markdown import md_escape, md_table
from prunebench.report.runs import RunEntry
from prunebench.results import LOCAL_NODE_CLASS


def node_classes(snapshot: Mapping[str, Any]) -> list[str]:
    """The node classes that timed the run's cells, sorted."""
    return sorted({c.get("node_class") or LOCAL_NODE_CLASS for c in snapshot.get("cells", [])})


def primary_class(snapshot: Mapping[str, Any]) -> str | None:
    """The class the main report shows: ``local`` if it timed anything, else the first class by name."""
    classes = node_classes(snapshot)
    return LOCAL_NODE_CLASS if LOCAL_NODE_CLASS in classes else (classes[0] if classes else None)


def for_class(snapshot: Mapping[str, Any], node_class: str) -> dict[str, Any]:
    """The snapshot with only ``node_class``'s cells, and that class's environment as the run's."""
    cells = [c for c in snapshot.get("cells", []) if (c.get("node_class") or LOCAL_NODE_CLASS) == node_class]
    run = dict(snapshot.get("run") or {})
    env = next((c["environment"] for c in cells if c.get("environment")), None)
    if env is not None:
        fp = next(c.get("fingerprint_hash") for c in cells if c.get("environment"))
        run["environment"] = {**env, "fingerprint_hash": fp}
    return {**snapshot, "run": run, "cells": cells}


def main_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """What the main report and the summary table read: the primary class's cells when several classes timed."""
    if len(node_classes(snapshot)) < 2:
        return dict(snapshot)
    return for_class(snapshot, primary_class(snapshot) or LOCAL_NODE_CLASS)


def class_entries(snapshot: Mapping[str, Any], folder: str | Path = ".") -> list[RunEntry]:
    """One compare entry per node class, labelled by the class name."""
    out = []
    for node_class in node_classes(snapshot):
        snap = for_class(snapshot, node_class)
        fp = str((snap["run"].get("environment") or {}).get("fingerprint_hash") or "unknown")
        out.append(RunEntry(node_class, Path(folder), snap, analyze(snap), fp))
    return out


def _class_table(entry: RunEntry) -> tuple[list[str], list[list[str]]]:
    a = entry.analysis
    batches = sorted({c.batch_size for c in a.cells if c.seq_len == a.seq_len})
    headers = ["variant", *(f"B={b}" for b in batches)]
    rows = []
    for v in a.variants:
        row = [v.name]
        for b in batches:
            row.append(fmt.cell_speedup(a.cell(v.name, b)))
        rows.append(row)
    return headers, rows


def _caption(entry: RunEntry) -> str:
    env = entry.env
    device = env.get("device_name") or env.get("cpu_model") or env.get("device")
    return (f"fingerprint {entry.fingerprint}; {fmt.plain(device)}; {fmt.plain(env.get('threads'))} threads; "
            f"torch {fmt.plain(env.get('torch'))}")


def _notes(entries: Sequence[RunEntry], shown: str | None) -> list[str]:
    notes = [f"{len(entries)} node classes each timed every cell against their own dense model; the summary above "
             f"shows class {shown}."]
    by_fp: dict[str, list[str]] = {}
    for e in entries:
        by_fp.setdefault(e.fingerprint, []).append(e.label)
    notes += [f"Classes {', '.join(labels)} have the same environment fingerprint (same hardware and software)."
              for labels in by_fp.values() if len(labels) > 1]
    return notes


def hardware_html(snapshot: Mapping[str, Any]) -> str:
    """The report section of a run timed on several classes ("" for one class)."""
    entries = class_entries(snapshot)
    if len(entries) < 2:
        return ""
    out = ["<h2>Speedup per hardware class</h2>"]
    out += [f"<p>{esc(n)}</p>" for n in _notes(entries, primary_class(snapshot))]
    for e in entries:
        headers, rows = _class_table(e)
        out += [f"<h3>Node class {esc(e.label)}</h3>", f'<p class="muted">{esc(_caption(e))}</p>',
                table(headers, rows)]
    out += ["<h3>Across classes</h3>", table(["variant", "B", *(e.label for e in entries)], speedup_rows(entries),
                                             left=2)]
    return "\n".join(out)


def hardware_md(snapshot: Mapping[str, Any]) -> str:
    """The summary.md section of a run timed on several classes ("" for one class)."""
    entries = class_entries(snapshot)
    if len(entries) < 2:
        return ""
    out = ["## Speedup per hardware class", ""]
    out += [md_escape(n) for n in _notes(entries, primary_class(snapshot))] + [""]
    for e in entries:
        headers, rows = _class_table(e)
        out += [f"### Node class {md_escape(e.label)}", "", md_escape(_caption(e)), "", md_table(headers, rows), ""]
    return "\n".join(out)
