"""The one-screen summary: one row per variant, the verdict paragraph and the list of problems.

The same rows feed the rich table printed by the CLI, the HTML page and ``summary.md``, so the three never
disagree. Building a rich ``Table`` is fine in library code; printing it is the CLI's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from prunebench.analysis import BASELINE, Analysis, CellAnalysis, VariantAnalysis, analyze, busy_cells
from prunebench.analysis.accuracy import TOO_FEW, UNFIT
from prunebench.analysis.bootstrap import NO_CHANGE
from prunebench.report import fmt
from prunebench.report.notes import accuracy_floor_note, accuracy_notes, busy_opening

#: Columns of :func:`summary_headers` that hold text (left-aligned); the others hold figures.
SUMMARY_TEXT_COLUMNS = (0, 2, 9)


@dataclass(frozen=True)
class SummaryRow:
    """One variant's headline figures: speed at the smallest and the largest batch size of the run."""

    variant: str
    method: str | None
    status: str | None
    error: str | None
    measured_sparsity: float | None
    materialization: str | None
    params: int | None
    accuracy: float | None
    accuracy_delta: float | None
    small_batch: int | None
    small: CellAnalysis | None
    large_batch: int | None
    large: CellAnalysis | None
    flop_ideal_speedup: float | None
    disk_bytes: int | None
    disk_ratio: float | None
    fidelity_ok: bool | None
    #: how many of the variant's benchmark cells failed.
    failed_cells: int
    #: one-line descriptions of what went wrong for this variant (empty when nothing did).
    problems: tuple[str, ...]
    #: paired-bootstrap CI of ``accuracy_delta`` and its verdict (``no measurable change`` when it holds 0).
    accuracy_delta_ci_low: float | None = None
    accuracy_delta_ci_high: float | None = None
    accuracy_verdict: str = "n/a"
    #: how many of the variant's cells were measured while the machine was busy (see ``bench.load``).
    contended_cells: int = 0
    #: how many of the variant's cells were skipped (a backend that cannot express it; not a failure).
    skipped_cells: int = 0
    #: how many of the variant's cells the busy machine left unmeasured (not a failure; no speedup shown).
    unmeasured_cells: int = 0
    #: recovery, refit or calibration steps that went wrong (e.g. ``recovery failed: loss NaN, reverted``).
    step_problems: tuple[str, ...] = ()
    #: predictions its evaluation scored (shown when below the floor).
    n_predictions: int | None = None


def _as_analysis(source: Any) -> Analysis:
    if isinstance(source, Analysis):
        return source
    if hasattr(source, "snapshot"):  # a ResultStore
        return analyze(source.snapshot())
    if isinstance(source, Mapping):
        return analyze(source)
    raise ValueError(f"summary_rows takes a ResultStore, a store snapshot dict or an Analysis, not {type(source)}")


def _variant_problems(analysis: Analysis, v: VariantAnalysis) -> tuple[str, ...]:
    out = []
    if v.status == "failed":
        out.append(f"pruning failed: {v.error or 'no error message'}")
    if v.fidelity_ok is False:
        out.append("fidelity check FAILED")
    out += v.step_problems  # recovery, refit or calibration that went wrong (the variant itself is stored)
    bad = [c for c in analysis.cells if c.variant == v.name and c.failed]
    for c in bad:
        out.append(f"cell B={c.batch_size} seq={c.seq_len} failed: {c.error or 'no error message'}")
    return tuple(out)


def summary_rows(source: Any) -> list[SummaryRow]:
    """The summary rows of a run, from a :class:`~prunebench.results.ResultStore`, a snapshot or an Analysis."""
    a = _as_analysis(source)
    small = a.batch_sizes[0] if a.batch_sizes else None
    large = a.batch_sizes[-1] if a.batch_sizes else None
    rows = []
    for v in a.variants:
        rows.append(
            SummaryRow(
                variant=v.name,
                method=v.method,
                status=v.status,
                error=v.error,
                measured_sparsity=v.measured_sparsity,
                materialization=v.materialization,
                params=v.params,
                accuracy=v.accuracy,
                accuracy_delta=v.accuracy_delta,
                small_batch=small,
                small=None if small is None else a.cell(v.name, small),
                large_batch=large,
                large=None if large is None else a.cell(v.name, large),
                flop_ideal_speedup=v.flop_ideal_speedup,
                disk_bytes=v.disk_bytes,
                disk_ratio=v.disk_ratio,
                fidelity_ok=v.fidelity_ok,
                failed_cells=sum(1 for c in a.cells if c.variant == v.name and c.failed),
                skipped_cells=sum(1 for c in a.cells if c.variant == v.name and c.skipped),
                problems=_variant_problems(a, v),
                step_problems=v.step_problems,
                accuracy_delta_ci_low=v.accuracy_delta_ci_low,
                accuracy_delta_ci_high=v.accuracy_delta_ci_high,
                accuracy_verdict=v.accuracy_verdict,
                contended_cells=sum(1 for c in a.cells if c.variant == v.name and c.ok and c.contended),
                unmeasured_cells=sum(1 for c in a.cells if c.variant == v.name and c.unmeasured),
                n_predictions=v.n_predictions,
            )
        )
    return rows


def summary_headers(rows: Sequence[SummaryRow]) -> list[str]:
    """Column headers for :func:`summary_cells` (they name the two batch sizes)."""
    small = rows[0].small_batch if rows else None
    large = rows[0].large_batch if rows else None
    return [
        "variant",
        "sparsity",
        "stored as",
        "params",
        "accuracy (Δ)",
        f"speedup B={small} [CI]" if small is not None else "speedup, smallest B [CI]",
        f"speedup B={large} [CI]" if large is not None else "speedup, largest B [CI]",
        "FLOP-ideal",
        "disk",
        "status",
    ]


def _speed(cell: CellAnalysis | None) -> str:
    if cell is None:
        return fmt.MISSING
    if cell.status != "ok":
        return "skipped" if cell.skipped else fmt.UNMEASURED if cell.unmeasured else "FAILED"
    return fmt.speedup_ci(cell.speedup, cell.speedup_ci_low, cell.speedup_ci_high)


def _accuracy(row: SummaryRow) -> str:
    """``11.3% (-0.8 [-1.1, -0.5])``; a difference whose CI holds 0 reads ``no measurable change``."""
    if row.accuracy is None or row.variant == BASELINE or row.accuracy_delta is None:
        return fmt.pct(row.accuracy)
    delta = f"{100 * row.accuracy_delta:+.1f}"
    if row.accuracy_delta_ci_low is None or row.accuracy_delta_ci_high is None:
        return f"{fmt.pct(row.accuracy)} ({delta})"
    if row.accuracy_verdict == NO_CHANGE:
        return f"{fmt.pct(row.accuracy)} (no measurable change)"
    if row.accuracy_verdict in (TOO_FEW, UNFIT):  # the evaluation measures nothing: no difference is shown
        return f"{fmt.pct(row.accuracy)} ({row.accuracy_verdict})"
    ci = f"[{100 * row.accuracy_delta_ci_low:+.1f}, {100 * row.accuracy_delta_ci_high:+.1f}]"
    return f"{fmt.pct(row.accuracy)} ({delta} {ci})"


def summary_cells(row: SummaryRow) -> list[str]:
    """The row as display strings, in :func:`summary_headers` order."""
    disk = fmt.nbytes(row.disk_bytes, digits=0)
    if row.disk_ratio is not None and row.variant != BASELINE:
        disk += f" ({fmt.times(row.disk_ratio)})"
    return [
        row.variant,
        fmt.pct(row.measured_sparsity),
        fmt.plain(row.materialization),
        fmt.count(row.params),
        _accuracy(row),
        _speed(row.small),
        _speed(row.large),
        fmt.times(row.flop_ideal_speedup),
        disk,
        status_tag(row),
    ]


def status_tag(row: SummaryRow) -> str:
    """A short status for the table (the full messages are in :attr:`SummaryRow.problems`)."""
    tags = []
    if row.status == "failed":
        tags.append("PRUNING FAILED")
    if row.fidelity_ok is False:
        tags.append("FIDELITY FAILED")
    tags += row.step_problems
    if row.failed_cells:
        tags.append(f"{row.failed_cells} CELL{'S' if row.failed_cells > 1 else ''} FAILED")
    if row.skipped_cells:
        tags.append(f"{row.skipped_cells} cell{'s' if row.skipped_cells > 1 else ''} skipped")
    if row.unmeasured_cells:
        tags.append(f"{row.unmeasured_cells} cell{'s' if row.unmeasured_cells > 1 else ''} unmeasured")
    if row.contended_cells:
        tags.append(f"{row.contended_cells} cell{'s' if row.contended_cells > 1 else ''} contended")
    return ", ".join(tags) or "ok"


def _narrow(text: str) -> str:
    """A cell or header of the narrow layout: the same text, broken before each bracket or parenthesis (a CI,
    a ratio) and after a hyphen, so that figures stack instead of being cut or folded mid-number."""
    text = text.replace(" [", "\n[").replace(" (", "\n(").replace(" measurable ", "\nmeasurable\n")
    return text.replace(", ", ",\n").replace("-ideal", "-\nideal")


def summary_table(rows: Sequence[SummaryRow], title: str | None = None, width: int | None = None) -> Table:
    """A rich Table of the summary rows; variants with problems are shown in red.

    ``width``: the columns it will be printed in. When the one-line-per-row layout needs more, the table takes
    a narrow layout that keeps every column: the same texts with each CI, ratio and the accuracy change on a line of
    its own, headers over several lines, one space between columns, each status tag on a line of its own
    ("3 contended": cells); it fits 100 columns.
    """
    if width is not None:
        wide = summary_table(rows, title)
        if Console(width=10_000).measure(wide).maximum <= width:
            return wide
    narrow = width is not None
    table = Table(title=title or "prunebench summary (speedup: paired median ratio vs dense [CI])",
                  box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD, padding=(0, 0) if narrow else (0, 1),
                  show_lines=narrow)
    headers = summary_headers(rows)
    for i, header in enumerate(headers):
        # Figures never wrap (a CI split mid-number is hard to read); only the status text may.
        last = i == len(headers) - 1
        table.add_column(
            _narrow(header).replace(" ", "\n").replace("sparsity", "spar-\nsity") if narrow else header,
            justify="left" if i in SUMMARY_TEXT_COLUMNS else "right", no_wrap=not last, overflow="fold",
            min_width=12 if last else None,
        )
    for row in rows:
        cells = summary_cells(row)
        if narrow:  # the status: one tag a line, counts of cells without the word "cells"
            status = "\n".join(tag.replace(" cells ", " ").replace(" cell ", " ") for tag in cells[-1].split(", "))
            cells = [_narrow(c) for c in cells[:-1]] + [status]
        table.add_row(*cells, style="bold red" if row.problems else None)
    return table


def summary_dicts(rows: Sequence[SummaryRow]) -> list[dict[str, Any]]:
    """The summary rows as plain data (what ``prunebench run --json`` prints): each column's text under its
    header, and the figures behind them."""
    out = []
    for row in rows:
        figures = {k: v for k, v in row.__dict__.items() if k not in ("small", "large")}
        for key, cell in (("small", row.small), ("large", row.large)):
            figures[key] = None if cell is None else {
                f: getattr(cell, f) for f in ("batch_size", "seq_len", "status", "speedup", "speedup_ci_low",
                                              "speedup_ci_high", "verdict", "latency_ms", "contended")}
        figures["problems"] = list(row.problems)
        out.append({"columns": dict(zip(summary_headers(rows), summary_cells(row), strict=True)), **figures})
    return out


def problems(analysis: Analysis) -> list[str]:
    """Every problem of the run as one line each: failed pruning, failed fidelity checks, failed cells."""
    out = []
    for row in summary_rows(analysis):
        out += [f"{row.variant}: {p}" for p in row.problems]
    return out


def run_problems(run: Mapping[str, Any] | None) -> list[str]:
    """The run-level problem, if any: a run that did not finish shows partial results."""
    status = (run or {}).get("status")
    if status == "finished":
        return []
    return [f"run status is {status!r}, not 'finished': the results below are partial"]


def _faster_at(analysis: Analysis, batch: int) -> list[str]:
    return [
        c.variant
        for c in analysis.cells
        if c.batch_size == batch and c.seq_len == analysis.seq_len and c.variant != BASELINE and c.verdict == "faster"
        and not c.beyond_ideal
    ]


def _span(values: Sequence[float]) -> str:
    """``1.70×`` for one value (or equal values), ``0.98–1.01×`` for a range."""
    lo, hi = min(values), max(values)
    return f"{lo:.2f}×" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}×"


def _materialization_notes(analysis: Analysis) -> list[str]:
    """Per materialization, the measured speedups at the largest batch next to the FLOP-ideal ones (cells a busy
    machine touched are left out: their figures are not the variant's)."""
    if not analysis.batch_sizes:
        return []
    large = analysis.batch_sizes[-1]
    notes = []
    for kind in sorted({v.materialization for v in analysis.variants if v.materialization and v.name != BASELINE}):
        names = [v.name for v in analysis.variants if v.materialization == kind and v.name != BASELINE]
        cells = [c for n in names if (c := analysis.cell(n, large)) is not None and c.speedup is not None
                 and c.ok and not c.contended]
        ideal = [c.flop_ideal_speedup for c in cells if c.flop_ideal_speedup is not None]
        if not cells or not ideal:
            continue
        speeds = [c.speedup or 0.0 for c in cells]
        what = f"The variant stored as '{kind}'" if len(cells) == 1 else f"The {len(cells)} variants stored as '{kind}'"
        notes.append(f"{what} ran at {_span(speeds)} of dense at B={large}, against a FLOP-ideal {_span(ideal)}.")
    return notes


def _headline(analysis: Analysis) -> list[str]:
    """The largest speedup, named only when its whole CI clears the noise floor and it does not run faster than
    its FLOP count allows; cells beyond the FLOP-ideal get their own sentence saying what that means."""
    cells = [c for c in analysis.cells if c.variant != BASELINE and c.ok]
    out = []
    candidates = [c for c in cells if c.verdict == "faster" and not c.beyond_ideal]
    quiet = [c for c in candidates if not c.contended]
    if candidates:
        best = max(quiet or candidates, key=lambda c: (c.speedup or 0.0, -c.batch_size))
        v = analysis.variant(best.variant)
        busy = " (measured while other processes held the cores)" if best.contended else ""
        out.append(
            f"The largest speedup whose CI clears the noise floor was {best.variant} at B={best.batch_size}{busy}: "
            f"{fmt.speedup_ci(best.speedup, best.speedup_ci_low, best.speedup_ci_high)} "
            f"against a FLOP-ideal {fmt.times(best.flop_ideal_speedup)}, "
            + (f"with no measurable accuracy change ({fmt.delta_pp(v.accuracy_delta)})."
               if v is not None and v.accuracy_verdict == NO_CHANGE
               else f"with its accuracy unmeasured ({v.accuracy_verdict})."
               if v is not None and v.accuracy_verdict in (TOO_FEW, UNFIT)
               else f"at an accuracy change of {fmt.delta_pp(v.accuracy_delta if v else None)}.")
        )
    elif cells:
        out.append("No pruned variant's speedup cleared the noise floor (dense against its identical twin) at any "
                   "batch size.")
    beyond = [c for c in cells if c.beyond_ideal]
    if beyond:
        names = ", ".join(f"{c.variant} at B={c.batch_size} "
                          f"({fmt.speedup_ci(c.speedup, c.speedup_ci_low, c.speedup_ci_high)} against "
                          f"{fmt.times(c.flop_ideal_speedup)})" for c in beyond)
        out.append(f"Faster than a perfect kernel could run their FLOPs, beyond their CI: {names}. That is a "
                   "timing fault (something slowed the dense side of the pairs) or a cost the FLOP count misses "
                   "(memory traffic, a model that now fits in cache, fixed costs per call); they are not named "
                   "as the largest speedup.")
    return out


def verdict(analysis: Analysis, run: Mapping[str, Any] | None = None) -> str:
    """A one-paragraph verdict stating what the numbers say (no judgement the data does not support).

    It opens with the busy machine when most timed cells were contended or unmeasured, and names a speedup only
    when its whole CI clears the noise floor and stays within its FLOP-ideal.
    """
    run = run or {}
    config, env = run.get("config") or {}, run.get("environment") or {}
    pruned = [v for v in analysis.variants if v.name != BASELINE]
    device = env.get("device_name") or env.get("cpu_model") or env.get("device") or "unknown device"
    batches = fmt.plain(list(analysis.batch_sizes)) if analysis.batch_sizes else "(none measured)"
    n_failed = sum(v.status == "failed" for v in pruned)
    opening = busy_opening(analysis)
    parts = [opening] if opening else []
    parts.append(
        f"Run {run.get('run_id', '?')} (model {config.get('model', '?')}, seq len {fmt.plain(analysis.seq_len)}, "
        f"batch sizes {batches}, torch {env.get('torch', '?')}, {device}, {env.get('threads', '?')} threads) "
        f"compared {len(pruned)} pruned variants with the dense baseline"
        + (f" ({n_failed} failed to prune)." if n_failed else ".")
    )
    if analysis.batch_sizes:
        for b in sorted({analysis.batch_sizes[0], analysis.batch_sizes[-1]}):
            faster = _faster_at(analysis, b)
            parts.append(
                f"At batch size {b}, {len(faster)} of {len(pruned)} were measurably faster than dense "
                f"(whole CI above the noise floor of dense against its identical twin)"
                + (f": {', '.join(faster)}." if faster else ".")
            )
        parts += _headline(analysis)
    parts += _materialization_notes(analysis)
    for c in analysis.crossovers:
        verb = "becomes faster than dense" if c.kind == "starts_faster" else "stops being faster than dense"
        parts.append(f"{c.variant} {verb} at B={c.batch_size} (seq len {c.seq_len}).")
    parts += accuracy_floor_note(analysis, pruned)
    parts += accuracy_notes(pruned)
    busy, timed = busy_cells(analysis.cells)
    if busy and not opening:
        parts.append(f"{busy} of {timed} timed cells were contended or unmeasured (a busy machine; listed below).")
    issues = run_problems(run) + problems(analysis)
    if issues:
        parts.append(f"{len(issues)} problem(s) need attention, listed below.")
    return " ".join(parts)
