"""``summary.md``: the verdict, problems and summary table as Markdown, for terminals and pull requests."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from prunebench.analysis import Analysis
from prunebench.report.notes import contention_items, contention_line, fidelity_lines
from prunebench.report.summary import (
    SUMMARY_TEXT_COLUMNS,
    problems,
    run_problems,
    summary_cells,
    summary_headers,
    summary_rows,
    verdict,
)


def md_escape(text: str) -> str:
    """Escape what would break a Markdown table cell or start markup (pipes, backslashes, angle brackets)."""
    out = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return out.replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*").replace("_", "\\_")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: Collection[int] = (0,)) -> str:
    """A GitHub-flavoured Markdown table; the columns in ``left`` hold text (left-aligned), the rest figures."""
    lines = ["| " + " | ".join(md_escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join(":---" if i in left else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_summary_md(snapshot: Mapping[str, Any], a: Analysis, figure_paths: Sequence[str] = (),
                      extra: str = "", recommendation: str = "") -> str:
    """The whole ``summary.md``; ``figure_paths`` are PNG paths relative to the file, linked at the end;
    ``extra`` is Markdown placed after the summary (per-hardware-class tables); ``recommendation`` is Markdown
    placed first, under the title (what to deploy at each batch size)."""
    run = snapshot.get("run") or {}
    rows = summary_rows(a)
    parts = [f"# prunebench summary: {md_escape(str(run.get('run_id', '?')))}", ""]
    if recommendation:
        parts += [recommendation]
    parts += [md_escape(verdict(a, run)), ""]
    issues = run_problems(run) + problems(a)
    if issues:
        parts += [f"## ⚠ Problems ({len(issues)})", ""] + [f"- **{md_escape(p)}**" for p in issues] + [""]
    line = contention_line(a)
    if line:
        busy = contention_items(a)
        parts += [md_escape(line), "", f"<details><summary>The {len(busy)} cells</summary>", ""]
        parts += [f"- {md_escape(p)}" for p in busy] + ["", "</details>", ""]
    parts += [
        "## Summary",
        "",
        md_table(summary_headers(rows), [summary_cells(r) for r in rows], left=SUMMARY_TEXT_COLUMNS),
        "",
    ]
    parts.append(
        "Speedup: median paired ratio against dense with its block-bootstrap CI; faster (slower) only when the "
        "whole CI clears the noise floor (dense against its identical twin at the same batch size). "
        "FLOP-ideal: dense MACs / non-zero MACs. Accuracy: a difference whose paired 95% CI holds 0 reads "
        "'no measurable change'."
    )
    fidelity = fidelity_lines(snapshot)
    if fidelity:
        parts += ["", *(f"- {md_escape(line)}" for line in fidelity)]
    if extra:
        parts += ["", extra]
    if figure_paths:
        parts += ["", "## Figures", ""] + [f"![{p}]({p})" for p in figure_paths]
    parts += ["", "Full report: `report.html` (self-contained). Data: `results.json`, `results.csv`.", ""]
    return "\n".join(parts)
