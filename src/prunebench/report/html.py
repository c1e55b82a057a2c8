"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG, no script, no network).

Every piece of text that comes from the data is passed through :func:`esc`; the only markup is ours.
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prunebench._version import __version__
from prunebench.analysis import Analysis, CellAnalysis
from prunebench.report import fmt
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

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1400px;
 padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #d0d0d0;padding:.3em .55em;text-align:right;vertical-align:top}
th{background:#f2f2f5}td.l,th.l{text-align:left}td.n{white-space:nowrap}.scroll{overflow-x:auto}
tr.bad td{background:#fde8e8;color:#9b1111;font-weight:600}
.verdict{font-size:1.05em;background:#f6f8fa;border-left:4px solid #3b6ea5;padding:.8em 1em}
.problems{background:#fde8e8;border:2px solid #c62828;color:#8e0000;padding:.6em 1.2em}
.problems h2{border:none;color:#c62828;margin-top:.3em}
.contended{background:#fff8e1;border:2px solid #f9a825;color:#6d4c00;padding:.6em 1.2em}
.contended h2{border:none;color:#8d6e00;margin-top:.3em}.contended summary{cursor:pointer}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
.muted{color:#666;font-size:.85em}td.l{overflow-wrap:anywhere;max-width:40em}
details.more{margin:.4em 0}details.more>summary{cursor:pointer;font-weight:600;padding:.2em 0}
.variant-details{display:flex;flex-wrap:wrap;gap:0 1.5em;align-items:flex-start}
"""


def esc(value: Any) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(value if isinstance(value, str) else fmt.plain(value), quote=True)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    bad: Iterable[bool] = (),
    left: int | Collection[int] = 1,
    cls: str = "",
) -> str:
    """An escaped HTML table; rows flagged in ``bad`` are red.

    ``left`` is either the number of leading columns or the set of column indices that hold text
    (left-aligned, wrapping); the other columns hold figures (right-aligned, never wrapped).
    """
    flags = list(bad)
    text_cols = set(range(left)) if isinstance(left, int) else set(left)
    kind = ["l" if i in text_cols else "n" for i in range(len(headers))]
    head = "".join(f'<th class="{kind[i]}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for n, row in enumerate(rows):
        tds = "".join(f'<td class="{kind[i] if i < len(kind) else "l"}">{esc(v)}</td>' for i, v in enumerate(row))
        body.append(f'<tr class="{"bad" if n < len(flags) and flags[n] else ""}">{tds}</tr>')
    return (
        f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _flat(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, text)`` pairs of a nested mapping; a list of plain values is one comma-separated text,
    a list of mappings is summarised by its length (the JSON keeps it whole)."""
    out: list[tuple[str, str]] = []
    for key, value in sorted(data.items()):
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flat(value, f"{name}.") if value else [(name, fmt.MISSING)]
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            out.append((name, f"{len(value)} entries (in results.json)"))
        elif isinstance(value, (list, tuple)):
            text = ", ".join(fmt.plain(v) for v in value)
            out.append((name, text if len(value) <= 16 else f"{len(value)} values (in results.json)"))
        else:
            out.append((name, fmt.plain(value)))
    return out


def key_values(data: Mapping[str, Any] | None, headers: tuple[str, str] = ("key", "value")) -> str:
    """A two-column table of a flat or nested mapping (nested keys dotted, long lists counted), sorted by key."""
    rows = _flat(data or {})
    return table(headers, rows, left=2) if rows else '<p class="muted">(none recorded)</p>'


def collapsed(summary: str, body: str, open_: bool = False) -> str:
    """A collapsed ``<details>`` section (``summary`` is escaped, ``body`` is our HTML)."""
    return f'<details class="more"{" open" if open_ else ""}><summary>{esc(summary)}</summary>{body}</details>'


def figure(png: Path, caption: str, alt: str) -> str:
    """A figure with its PNG embedded as a data URI (the SVG sits next to the page for print quality)."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption)} (vector version: {esc(png.with_suffix('.svg').name)})</figcaption></figure>"
    )


def page(title: str, body: str) -> str:
    """The whole document around ``body``."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        f'<p class="muted">Generated by prunebench {esc(__version__)} from the run\'s results store.</p>\n'
        "</body></html>\n"
    )


#: The benchmark cells, as two tables that each fit the page: the timing, then resources and the machine.
CELL_TIMING_HEADERS = ("variant", "B", "seq", "status", "latency", "p90", "dense latency", "speedup [CI]", "verdict",
                       "FLOP-ideal", "realized/ideal")
CELL_RESOURCE_HEADERS = ("variant", "B", "samples/s", "tokens/s", "peak mem", "peak mem vs dense", "pairs", "blocks",
                         "other processes (cores)", "error")


def cell_timing_row(c: CellAnalysis) -> list[str]:
    """One benchmark cell's timing, in :data:`CELL_TIMING_HEADERS` order."""
    return [
        c.variant, str(c.batch_size), str(c.seq_len), c.status, fmt.ms(c.latency_ms), fmt.ms(c.latency_p90_ms),
        fmt.ms(c.baseline_latency_ms), fmt.speedup_ci(c.speedup, c.speedup_ci_low, c.speedup_ci_high), c.verdict,
        fmt.times(c.flop_ideal_speedup), fmt.pct(c.realized_over_ideal, 0),
    ]


def cell_resource_row(c: CellAnalysis) -> list[str]:
    """One benchmark cell's throughput, memory and load, in :data:`CELL_RESOURCE_HEADERS` order."""
    return [
        c.variant, str(c.batch_size), fmt.num(c.throughput_samples_s), fmt.num(c.throughput_tokens_s),
        fmt.nbytes(c.peak_memory_bytes), fmt.times(c.peak_memory_ratio), fmt.plain(c.n_pairs),
        fmt.plain(c.n_blocks), _load(c), c.error or "",
    ]


def _load(c: CellAnalysis) -> str:
    """``0.05 (max 0.31)``, discarded blocks, and ``CONTENDED`` when the cell's figures were measured while other
    processes held the cores; a store from before per-block contention shows its 1-minute load averages."""
    if c.other_cores is None and c.other_cores_max is None:
        if c.load_1m_before is None and c.load_1m_after is None:
            return fmt.MISSING
        text = f"load {fmt.num(c.load_1m_before, 2)} → {fmt.num(c.load_1m_after, 2)}"
    else:
        text = f"{fmt.num(c.other_cores, 2)} (max {fmt.num(c.other_cores_max, 2)})"
    if c.discarded_blocks:
        text += f", {c.discarded_blocks} blocks discarded"
    if c.busy_allowed and c.busy_blocks:
        text += f", {c.busy_blocks} busy blocks kept"
    return text + (" CONTENDED" if c.ok and c.contended else "")


def _sections(snapshot: Mapping[str, Any], a: Analysis, figures: Mapping[str, tuple[Path, str]]) -> list[str]:
    run = snapshot.get("run") or {}
    rows = summary_rows(a)
    out = [f'<p class="verdict">{esc(verdict(a, run))}</p>']
    issues = run_problems(run) + problems(a)
    if issues:
        items = "".join(f"<li>{esc(p)}</li>" for p in issues)
        out.append(f'<div class="problems"><h2>Problems ({len(issues)})</h2><ul>{items}</ul></div>')
    line = contention_line(a)
    if line:
        busy = contention_items(a)
        items = "".join(f"<li>{esc(p)}</li>" for p in busy)
        out.append(f'<div class="contended"><p>{esc(line)}</p><details><summary>The {len(busy)} cells</summary>'
                   f"<ul>{items}</ul></details></div>")
    out.append("<h2>Summary</h2>")
    out.append(
        table(
            summary_headers(rows),
            [summary_cells(r) for r in rows],
            [bool(r.problems) for r in rows],
            left=SUMMARY_TEXT_COLUMNS,
            cls="summary",
        )
    )
    fidelity = fidelity_lines(snapshot)
    if fidelity:
        out.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in fidelity) + "</ul>")
    out.append(
        '<p class="muted">Speedup: median of paired per-iteration ratios dense/variant, timed interleaved in blocks '
        "spread over the run, with a block-bootstrap CI; a variant counts as faster (slower) only when the whole "
        "CI lies above (below) the noise floor, the band that dense against its identical twin reached at the same "
        "batch size. FLOP-ideal: dense MACs / the variant's non-zero MACs. accuracy (Δ): accuracy and its "
        "difference from dense in percentage points with a paired-bootstrap 95% CI over the evaluated "
        "predictions; a CI that holds 0 reads 'no measurable change'.</p>"
    )
    out.append("<h2>Figures</h2>")
    out += [figure(png, caption, name) for name, (png, caption) in figures.items()]
    out.append("<h2>Details</h2>")
    failed = [c.failed for c in a.cells]
    out.append(collapsed(f"Benchmark cells ({len(a.cells)})",
                         table(CELL_TIMING_HEADERS, [cell_timing_row(c) for c in a.cells], failed, left={0, 3, 8})
                         + table(CELL_RESOURCE_HEADERS, [cell_resource_row(c) for c in a.cells], failed,
                                 left={0, 8, 9})))
    if a.crossovers:
        cross = [
            (
                c.variant,
                str(c.seq_len),
                f"{c.previous_batch_size} → {c.batch_size}",
                "starts being faster" if c.kind == "starts_faster" else "stops being faster",
                f"{c.before} → {c.after}",
            )
            for c in a.crossovers
        ]
        out.append(collapsed(f"Crossover batch sizes ({len(cross)})",
                             table(("variant", "seq", "batch sizes", "change", "verdict"), cross)))
    else:
        out.append("<p>No variant changed between faster and not-faster than dense across the batch sizes.</p>")
    pareto = "".join(
        f"<h3>Batch size {b}</h3>" + table(
            ("variant", "latency", "accuracy", "on front"),
            [(p.variant, fmt.ms(p.latency_ms), fmt.pct(p.accuracy), "yes" if p.on_front else "no") for p in points])
        for b, points in sorted(a.pareto.items()))
    if pareto:
        out.append(collapsed("Accuracy-vs-latency Pareto front", pareto))
    out.append("<h3>Per variant</h3>")
    raw = {v["name"]: v for v in snapshot.get("variants", [])}
    evals = {e["variant"]: e for e in snapshot.get("evaluations", [])}
    for v in a.variants:
        flagged = v.status == "failed" or v.fidelity_ok is False
        figures_ = {k: val for k, val in dataclasses.asdict(v).items() if k != "name"}
        parts = [table(("figure", "value"), [(k, fmt.plain(val)) for k, val in figures_.items()],
                       [k in ("status", "fidelity_ok", "error") and flagged for k in figures_], left=2)]
        for label, data in (
            ("fidelity check", raw.get(v.name, {}).get("fidelity")),
            ("prune details", raw.get(v.name, {}).get("details")),
            # (the per-prediction correctness bits feed the accuracy CI; as text they are noise)
            ("evaluation details", {k: x for k, x in (evals.get(v.name, {}).get("details") or {}).items()
                                    if k != "correct"}),
        ):
            if data:
                parts.append(key_values(data, (label, "value")))
        body = f'<div class="variant-details" id="v-{esc(v.name)}">{"".join(parts)}</div>'
        out.append(collapsed(f"{v.name}{' — FAILED CHECK' if flagged else ''}", body))
    out.append("<h2>Environment</h2>")
    out.append(collapsed("Machine and software", key_values(run.get("environment"))))
    out.append(collapsed("Configuration", key_values(run.get("config"))))
    if run.get("corpus"):
        out.append(collapsed("Corpus", key_values(run.get("corpus"))))
    out.append(collapsed("Run", key_values({k: run.get(k) for k in ("run_id", "created", "status")})))
    return out


def render_report(snapshot: Mapping[str, Any], a: Analysis, figures: Mapping[str, tuple[Path, str]],
                  extra: str = "", recommendation: str = "") -> str:
    """The full ``report.html`` of one run; ``figures`` maps name -> (PNG path, caption); ``extra`` is HTML
    placed after the summary (the per-hardware-class tables of a run timed on several classes);
    ``recommendation`` is HTML placed first, above the verdict (the recommendation per batch size, then what to
    deploy over the backends)."""
    run = snapshot.get("run") or {}
    title = f"prunebench report: {run.get('run_id', '?')}"
    head = (
        f'<h1>{esc(title)}</h1><p class="muted">run status: {esc(run.get("status"))}; '
        f"created {esc(run.get('created'))}</p>"
    )
    sections = _sections(snapshot, a, figures)
    if extra:
        sections.insert(sections.index("<h2>Figures</h2>"), extra)
    if recommendation:
        sections.insert(0, recommendation)
    return page(title, "\n".join([head, *sections]))
