"""Sentences and lists the summary adds about noise: accuracy differences with their CI, accuracy that cannot
show a loss, and the cells a busy machine touched (one line, and a list the report shows collapsed); and about
fidelity: what text calibrated the variants, and a sentence encoder's cosine to dense on two domains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prunebench.analysis import Analysis, CellAnalysis, busy_cells, mostly_busy
from prunebench.analysis.accuracy import MIN_PREDICTIONS
from prunebench.analysis.bootstrap import NO_CHANGE
from prunebench.report import fmt

#: Below this embedding cosine to dense a pretrained encoder's variant is flagged: it no longer computes what dense
#: did there (``prunebench prune`` warns at the same level: layer removal on MiniLM gave 0.16-0.35, unflagged).
FIDELITY_WARNING = 0.8


def fidelity_lines(snapshot: dict[str, Any]) -> list[str]:
    """The variants' embedding cosine to dense on the task's test text and, for a sentence encoder, on prose of
    another domain (where calibration text may have specialised the model), with a warning under
    :data:`FIDELITY_WARNING`; and what text calibrated them. Empty where nothing was stored."""
    rows, calibrated, low = [], set(), []
    for ev in snapshot.get("evaluations", []):
        extra = (ev.get("details") or {}).get("extra") or {}
        other = extra.get("fidelity_other_domain")
        calibrated.add(", ".join(extra.get("calibrated_on") or []))
        if other is None or ev["variant"] == "dense" or ev.get("cosine") is None:
            continue
        rows.append(f"{ev['variant']} {ev['cosine']:.3f} / {other['cosine']:.3f}")
        low += [ev["variant"]] if min(ev["cosine"], other["cosine"]) < FIDELITY_WARNING else []
        where = f"{(ev.get('details') or {}).get('task')} test text / {other['n']} paragraphs of {other['on']}"
    out = [f"calibrated on: {' | '.join(sorted(c for c in calibrated if c))}"] if any(calibrated) else []
    if rows:
        out.append(f"embedding cosine to dense ({where}): {'; '.join(rows)}")
    if low:
        out.append(f"warning: {', '.join(low)} below cosine {FIDELITY_WARNING} to dense on one of them: "
                   "it no longer computes what the dense model did there")
    return out


def _busy(analysis: Analysis) -> list[CellAnalysis]:
    return [c for c in analysis.cells if c.unmeasured or (c.ok and c.contended)]


def contention_line(analysis: Analysis) -> str | None:
    """One line about the cells a busy machine touched (None when it touched none)."""
    busy = _busy(analysis)
    if not busy:
        return None
    timed = busy_cells(analysis.cells)[1]
    unmeasured = sum(1 for c in busy if c.unmeasured)
    discarded = sum(c.discarded_blocks for c in analysis.cells)
    peaks = [c.other_cores_max for c in analysis.cells if c.other_cores_max is not None]
    parts = []
    if len(busy) > unmeasured:
        parts.append(f"{len(busy) - unmeasured} contended (measured while other processes held the cores)")
    if unmeasured:
        parts.append(f"{unmeasured} unmeasured (no quiet blocks within their time; shown without a speedup)")
    extra = f"; {discarded} busy block(s) discarded and timed again" if discarded else ""
    peak = f", other processes up to {max(peaks):.2f} cores" if peaks else ""
    return f"Machine busy: of {timed} timed cells, {' and '.join(parts)}{extra}{peak}."


def contention_items(analysis: Analysis) -> list[str]:
    """One line per cell the busy machine touched (what the report lists collapsed under
    :func:`contention_line`)."""
    out = []
    for c in _busy(analysis):
        where = f"{c.variant}{'' if c.backend == 'eager' else ' on ' + c.backend} B={c.batch_size} seq={c.seq_len}"
        if c.unmeasured:
            out.append(f"{where}: unmeasured: {c.error or 'machine busy'}")
            continue
        other = (f"other processes held {c.other_cores:.2f} cores on average"
                 if c.other_cores is not None else _load_text(c))
        peak = f" (up to {c.other_cores_max:.2f})" if c.other_cores_max is not None else ""
        kept = f", {c.busy_blocks} busy block(s) kept (--allow-busy)" if c.busy_allowed and c.busy_blocks else ""
        dropped = f", {c.discarded_blocks} block(s) discarded" if c.discarded_blocks else ""
        out.append(f"{where}: contended: {other}{peak}{dropped}{kept}")
    return out


def _load_text(c: CellAnalysis) -> str:
    """A store written before per-block contention: its 1-minute load and stolen CPU."""
    loads = [x for x in (c.load_1m_before, c.load_1m_after) if x is not None]
    load = f"1-min load {max(loads):.1f}" if loads else "load unknown"
    steal = f", {100 * c.steal_fraction:.1f}% CPU stolen" if c.steal_fraction else ""
    return load + steal


def busy_opening(analysis: Analysis) -> str | None:
    """The verdict's first sentence when most timed cells were contended or unmeasured (None otherwise)."""
    if not mostly_busy(analysis.cells):
        return None
    busy, timed = busy_cells(analysis.cells)
    return (f"This run's timings are not trustworthy: {busy} of {timed} timed cells were measured while "
            "other processes held the cores, or could not be measured at all; rerun on a quiet machine "
            "(`prunebench run --strict` fails such a run).")


def accuracy_floor_note(analysis: Analysis, pruned: Sequence[Any]) -> list[str]:
    """The sentence saying the accuracy column measures nothing: too few predictions were scored
    (:data:`~prunebench.analysis.accuracy.MIN_PREDICTIONS`), dense is below the trivial baseline (the task
    does not fit the model), or its accuracy CI reaches that baseline (it has learned next to nothing, as
    ``--quick`` trains it)."""
    dense = next((v for v in analysis.variants if v.name == "dense"), None)
    trivial = dense.trivial_accuracy if dense is not None else None
    scored = [v.n_predictions for v in analysis.variants if v.n_predictions is not None]
    if scored and min(scored) < MIN_PREDICTIONS:
        return [f"The accuracy evaluation scored only {min(scored)} predictions (fewer than {MIN_PREDICTIONS}): "
                "too few to measure anything, so no accuracy verdict is given."]
    if analysis.task_unfit:
        return [f"Dense accuracy {fmt.pct(dense.accuracy if dense else None, 2)} is below the trivial baseline "
                f"({fmt.pct(trivial, 2)}, always the most frequent answer): the task does not fit the model (its "
                "tokenizer or head was not made for this text), so the accuracy column measures nothing."]
    if not analysis.accuracy_uninformative or analysis.dense_accuracy_ci is None:
        return []
    low, high = analysis.dense_accuracy_ci
    return [f"Dense accuracy {fmt.pct(dense.accuracy if dense else None, 2)} [{fmt.pct(low, 2)}–{fmt.pct(high, 2)}] "
            f"does not clear the trivial baseline ({fmt.pct(trivial, 2)}, always the most frequent answer): the "
            "model has learned too little for the accuracy column to show a loss"
            + (f", so the accuracy of the {len(pruned)} pruned variants says nothing about what pruning costs."
               if pruned else ".")]


def accuracy_notes(pruned: Sequence[Any]) -> list[str]:
    """The accuracy sentence: the most accurate variant only when its difference from dense is measurable."""
    scored = [v for v in pruned if v.accuracy_delta is not None]
    if not scored:
        return []
    if all(v.accuracy_verdict == "n/a" for v in scored):  # no per-prediction correctness stored: plain figures
        best = max(scored, key=lambda v: v.accuracy_delta or 0.0)
        return [f"The most accurate pruned variant was {best.name} ({fmt.delta_pp(best.accuracy_delta)} vs dense)."]
    same = [v.name for v in scored if v.accuracy_verdict == NO_CHANGE]
    less = [v.name for v in scored if v.accuracy_verdict == "less accurate"]
    more = [v.name for v in scored if v.accuracy_verdict == "more accurate"]
    out = []
    if more:
        out.append(f"Measurably more accurate than dense (paired 95% CI above 0): {', '.join(more)}.")
    if less:
        out.append(f"Measurably less accurate than dense: {', '.join(less)}.")
    if same:
        out.append(f"No measurable change in accuracy (the CI of the difference holds 0): {', '.join(same)}.")
    return out
