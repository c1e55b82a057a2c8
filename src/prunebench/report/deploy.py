"""The "what to deploy" section in Markdown (summary.md, the terminal) from :mod:`prunebench.analysis.deploy` rows,
and the recommendation sentences every output opens with (:func:`recommendation_lines`)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from prunebench.analysis.deploy import (
    CLOSEST,
    KEEP_DENSE,
    DeployRow,
    Recommendation,
    best_per_batch,
    crossovers,
    deploy_front,
    deploy_rows,
)
from prunebench.report import fmt
from prunebench.report.markdown import md_escape
from prunebench.results.cell import SKIPPED, normalize_cell_row


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def deploy_markdown(rows: Sequence[DeployRow], skips: dict[str, str] | None = None) -> str:
    """The section: a variant x backend table per batch size, the Pareto front, crossovers and skips."""
    if not rows:
        return ""
    batches = sorted({r.batch_size for r in rows})
    pairs = list(dict.fromkeys((r.variant, r.backend) for r in rows))
    by = {(r.variant, r.backend, r.batch_size): r for r in rows}
    lines = ["## What to deploy", "",
             "Speedup against dense eager (paired, 95% CI) and against dense on the same backend (what pruning "
             "adds to that runtime).", ""]
    head = ["variant", "backend", "accuracy"] + [f"B={b} vs dense eager" for b in batches] + \
        [f"B={b} vs dense same backend" for b in batches]
    lines += ["| " + " | ".join(head) + " |", "|:---|:---|" + "---:|" * (len(head) - 2)]
    for variant, backend in pairs:
        cells = [by.get((variant, backend, b)) for b in batches]
        acc = next((c.accuracy for c in cells if c is not None), None)
        vs_eager = [f"{c.speedup:.2f}x [{c.ci_low:.2f}-{c.ci_high:.2f}]" if c is not None and c.ci_low is not None
                    else (_x(c.speedup) if c is not None else "-") for c in cells]
        vs_same = [_x(c.vs_same_backend) if c is not None else "-" for c in cells]
        lines.append(f"| {variant} | {backend} | {_acc(acc)} | " + " | ".join(vs_eager + vs_same) + " |")
    lines += ["", "Accuracy-vs-latency Pareto front (no other pair is both as accurate and as fast):", ""]
    for b in batches:
        front = deploy_front(rows, b)
        shown = ", ".join(f"{r.variant} / {r.backend} ({_x(r.speedup)}, {_acc(r.accuracy)})" for r in front)
        lines.append(f"- B={b}: {shown or '(no evaluated pair)'}")
    best = best_per_batch(rows)
    lines += ["", "Fastest per batch size: " + ", ".join(f"B={b} {r.variant} / {r.backend} ({_x(r.speedup)})"
                                                           for b, r in best.items())]
    cross = crossovers(rows)
    if cross:
        lines.append("Crossovers: " + "; ".join(f"from B={c['batch_size']} {c['to']} beats {c['from']}"
                                                for c in cross))
    else:
        lines.append("Crossovers: none (the same pair is fastest at every measured batch size)")
    if skips:
        lines += ["", "Skipped (variant / backend: reason):", ""] + [f"- {k}: {v}" for k, v in skips.items()]
    return "\n".join(lines) + "\n"


def eager_only(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``snapshot`` with only its eager cells (what the run's main tables and figures are about)."""
    cells = [c for c in snapshot.get("cells") or [] if (c.get("backend") or "eager") == "eager"]
    return {**snapshot, "cells": cells}


def snapshot_rows(snapshot: Mapping[str, Any]) -> tuple[list[DeployRow], dict[str, str]]:
    """Deploy rows and skips from a run's store snapshot; empty when the run timed eager only.

    Accuracy: each variant's eager evaluation, and for a backend that changes the numerics the evaluation
    attached to its cells (``backend_accuracy``), never eager's.
    """
    cells = [normalize_cell_row(dict(c)) for c in snapshot.get("cells") or []]
    if not any((c.get("backend") or "eager") != "eager" for c in cells):
        return [], {}
    accuracy = {(e["variant"], "eager"): e["accuracy"] for e in snapshot.get("evaluations") or []
                if e.get("accuracy") is not None}
    changed, skips = set(), {}
    for c in cells:
        backend = c.get("backend") or "eager"
        if c.get("backend_changes_numerics"):
            changed.add(backend)
        if c.get("backend_accuracy") is not None:
            accuracy[c["variant"], backend] = c["backend_accuracy"]
        if c.get("status") == SKIPPED:
            skips[f"{c['variant']} / {backend}"] = c.get("error") or c.get("backend_message") or ""
    return deploy_rows(cells, accuracy, numerics_changed=changed), skips


def deploy_html(markdown: str) -> str:
    """The Markdown section as a self-contained HTML fragment (tables and lists, escaped)."""
    out, table = ["<section id=\"deploy\">"], False
    for line in markdown.splitlines():
        if line.startswith("|:") or line.startswith("|-"):
            continue
        if line.startswith("| "):
            cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
            if not table:
                out.append("<table>")
                table = True
            out.append(f"<tr>{cells}</tr>")
            continue
        if table:
            out.append("</table>")
            table = False
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<p>&bull; {html.escape(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if table:
        out.append("</table>")
    out.append("</section>")
    return "\n".join(out) + "\n"


def _accuracy_change(r: Recommendation) -> str:
    """``accuracy -0.9 pp [-1.4, -0.4] (paired 95% CI)``, saying whose evaluation it is when not eager's."""
    text = f"accuracy {fmt.delta_pp(r.accuracy_delta)}"
    if r.accuracy_delta_ci_low is None or r.accuracy_delta_ci_high is None:
        text += " (CI unknown)"
    else:
        text += f" [{100 * r.accuracy_delta_ci_low:+.1f}, {100 * r.accuracy_delta_ci_high:+.1f}] (paired 95% CI)"
    return text + (f", measured on {r.accuracy_on}" if r.accuracy_on != "eager" else "")


def _pair(r: Recommendation) -> str:
    return (f"{r.variant} on {r.backend}: {fmt.speedup_ci(r.speedup, r.speedup_ci_low, r.speedup_ci_high)} "
            f"against dense eager, {_accuracy_change(r)}")


def recommendation_sentence(r: Recommendation) -> str:
    """One sentence: what to deploy at ``r``'s batch size, or that nothing meets the budget and the closest."""
    budget = f"the {r.max_accuracy_drop:g} pp accuracy budget (--max-accuracy-drop)"
    head = f"B={r.batch_size}, seq {r.seq_len}"
    if r.outcome == KEEP_DENSE:
        return (f"{head}: nothing meets {budget}: no (variant, backend) with a known accuracy was measurably "
                "faster than dense eager (a quiet cell whose whole CI clears the noise floor); the closest is "
                "dense on eager.")
    if r.outcome == CLOSEST:
        return f"{head}: nothing faster than dense eager meets {budget}; the closest is {_pair(r)}."
    return f"{head}: deploy {_pair(r)}, within {budget}."


def recommendation_lines(recommendations: Sequence[Recommendation]) -> list[str]:
    """The sentences, one per batch size, in batch-size order."""
    return [recommendation_sentence(r) for r in recommendations]


def recommendation_markdown(recommendations: Sequence[Recommendation]) -> str:
    """The ``## Recommendation`` section summary.md opens with (empty without one)."""
    if not recommendations:
        return ""
    lines = [f"- {md_escape(line)}" for line in recommendation_lines(recommendations)]
    return "\n".join(["## Recommendation", "", *lines]) + "\n"


def recommendation_html(recommendations: Sequence[Recommendation]) -> str:
    """The recommendation as the report's first section (escaped; empty without one)."""
    if not recommendations:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in recommendation_lines(recommendations))
    return f'<section id="recommendation"><h2>Recommendation</h2><ul class="verdict">{items}</ul></section>\n'
