"""One report across several runs (e.g. the same config on two machines or two torch versions).

Runs are grouped by their environment fingerprint hash: runs with the same hash were measured on the same
hardware/software stack and should agree within their CIs; runs with different hashes show what the
environment changes. Only the stores are read; nothing is re-measured.

The main speedup table and the figures are eager cells only (as in each run's own report); runs timed with
``--backends`` get a second table, one row per (variant, backend, batch size), each against dense eager of
its own run, so a backend's cell is never read as, or beside, eager's cell of the same variant and shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from prunebench.report import fmt
from prunebench.report.compare_plots import latency_comparison_figure, speedup_comparison_figure
from prunebench.report.html import esc, figure, key_values, page, table
from prunebench.report.markdown import md_escape, md_table
from prunebench.report.plots import save_figure
from prunebench.report.runs import RunEntry, differing, groups, load_runs
from prunebench.results import write_bytes_atomic
from prunebench.results.cell import DEFAULT_BACKEND

FIGURE_DIR = "figures"
#: Title of the table of non-eager cells.
BACKENDS_TITLE = "Other backends: speedup vs dense eager per run"


def _keys(entries: Sequence[RunEntry], eager: bool) -> list[tuple[str, str, int]]:
    """``(variant, backend, B)`` of the entries' cells at their main seq len: eager ones, or all the others."""
    keys = {(c.variant, c.backend, c.batch_size) for e in entries for c in e.analysis.cells
            if c.seq_len == e.analysis.seq_len and (c.backend == DEFAULT_BACKEND) == eager}
    order = list(dict.fromkeys(v.name for e in entries for v in e.analysis.variants))
    backends = list(dict.fromkeys(c.backend for e in entries for c in e.analysis.cells))
    return sorted(keys, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), k[0],
                                       backends.index(k[1]), k[2]))


def speedup_rows(entries: Sequence[RunEntry]) -> list[list[str]]:
    """``[variant, B, one "speedup [CI] verdict" per entry]`` rows of eager cells, in variant order then B."""
    return [[variant, str(b), *(fmt.cell_speedup(e.analysis.cell(variant, b)) for e in entries)]
            for variant, _, b in _keys(entries, eager=True)]


def backend_speedup_rows(entries: Sequence[RunEntry]) -> list[list[str]]:
    """``[variant, backend, B, one cell per entry]`` rows of the non-eager cells (each vs its run's dense
    eager); [] when no run timed another backend."""
    return [[variant, backend, str(b),
             *(fmt.cell_speedup(e.analysis.cell(variant, b, backend=backend)) for e in entries)]
            for variant, backend, b in _keys(entries, eager=False)]


def _overview(entries: Sequence[RunEntry]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "folder", "fingerprint", "status", "model", "seq len", "torch", "device", "threads"]
    rows = []
    for e in entries:
        run = e.snapshot["run"] or {}
        device = e.env.get("device_name") or e.env.get("cpu_model") or e.env.get("device")
        rows.append(
            [
                e.label,
                str(e.folder),
                e.fingerprint,
                fmt.plain(run.get("status")),
                fmt.plain(e.config.get("model")),
                fmt.plain(e.analysis.seq_len),
                fmt.plain(e.env.get("torch")),
                fmt.plain(device),
                fmt.plain(e.env.get("threads")),
            ]
        )
    return headers, rows


def _diff_rows(entries: Sequence[RunEntry], attr: str) -> list[list[str]]:
    records = [getattr(e, attr) for e in entries]
    return [[k, *(fmt.plain(r.get(k)) for r in records)] for k in differing(records)]


def build_comparison(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write ``compare.html``, ``compare.md`` and the comparison figures for ``run_dirs`` into ``out_dir``.

    Returns:
        ``{relative file name: path}`` for every file written, sorted by name.
    """
    entries = load_runs(run_dirs)
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    figs = {}
    for name, build, caption in (
        ("compare_speedup", speedup_comparison_figure, "Speedup per variant and run, grouped by environment."),
        ("compare_latency", latency_comparison_figure, "Dense baseline latency per run."),
    ):
        files = save_figure(build(entries), out / FIGURE_DIR, name)
        paths.update({f"{FIGURE_DIR}/{name}.{ext}": p for ext, p in files.items()})
        figs[name] = (files["png"], caption)
    labels = [e.label for e in entries]
    ov_headers, ov_rows = _overview(entries)
    speed_headers = ["variant", "B", *labels]
    acc_rows = [
        [name, *(fmt.pct(v.accuracy) if (v := e.analysis.variant(name)) else fmt.MISSING for e in entries)]
        for name in dict.fromkeys(v.name for e in entries for v in e.analysis.variants)
    ]
    env_diff, cfg_diff = _diff_rows(entries, "env"), _diff_rows(entries, "config")
    grouped = groups(entries)

    body = [f"<h1>prunebench comparison of {len(entries)} runs</h1>"]
    body.append(f'<p class="verdict">{esc(_verdict(entries, grouped, env_diff, cfg_diff))}</p>')
    body += ["<h2>Runs</h2>", table(ov_headers, ov_rows, left=len(ov_headers))]
    body.append("<h2>Environment groups (by fingerprint hash)</h2><ul>")
    body += [
        f"<li><b>{esc(fp)}</b>: {esc(', '.join(e.label for e in members))}</li>" for fp, members in grouped.items()
    ]
    body.append("</ul>")
    body += ["<h2>Speedup vs dense per run (eager)</h2>", table(speed_headers, speedup_rows(entries), left=2)]
    backend_rows = backend_speedup_rows(entries)
    backend_headers = ["variant", "backend", "B", *labels]
    if backend_rows:
        body += [f"<h2>{BACKENDS_TITLE}</h2>", table(backend_headers, backend_rows, left=3)]
    body += ["<h2>Accuracy per run (eager)</h2>", table(["variant", *labels], acc_rows)]
    body += ["<h2>Figures</h2>", *(figure(png, cap, name) for name, (png, cap) in figs.items())]
    body += [
        "<h2>Environment differences</h2>",
        table(["key", *labels], env_diff, left=len(labels) + 1)
        if env_diff
        else "<p>The environments are identical.</p>",
    ]
    body += [
        "<h2>Configuration differences</h2>",
        table(["key", *labels], cfg_diff, left=len(labels) + 1)
        if cfg_diff
        else "<p>The configurations are identical.</p>",
    ]
    for e in entries:
        body += [f"<h3>Environment of {esc(e.label)}</h3>", key_values(e.env)]
    html_text = page(f"prunebench comparison: {', '.join(labels)}", "\n".join(body))
    paths["compare.html"] = write_bytes_atomic(out / "compare.html", html_text.encode())

    md = [
        f"# prunebench comparison of {len(entries)} runs",
        "",
        md_escape(_verdict(entries, grouped, env_diff, cfg_diff)),
        "",
    ]
    md += ["## Runs", "", md_table(ov_headers, ov_rows), "", "## Speedup vs dense per run (eager)", ""]
    md += [md_table(speed_headers, speedup_rows(entries)), ""]
    if backend_rows:
        md += [f"## {BACKENDS_TITLE}", "", md_table(backend_headers, backend_rows), ""]
    md += ["## Accuracy per run (eager)", ""]
    md += [md_table(["variant", *labels], acc_rows), ""]
    if env_diff:
        md += ["## Environment differences", "", md_table(["key", *labels], env_diff), ""]
    paths["compare.md"] = write_bytes_atomic(out / "compare.md", "\n".join(md).encode())
    return dict(sorted(paths.items()))


def _verdict(
    entries: Sequence[RunEntry], grouped: Mapping[str, Sequence[RunEntry]], env_diff: list, cfg_diff: list
) -> str:
    parts = [f"{len(entries)} runs in {len(grouped)} environment group(s) (by fingerprint hash)."]
    if env_diff:
        parts.append(f"The environments differ in: {', '.join(r[0] for r in env_diff)}.")
    if cfg_diff:
        parts.append(
            f"The configurations differ in: {', '.join(r[0] for r in cfg_diff)}; speedups may not be comparable."
        )
    flips = []
    rows = [(f"{r[0]} at B={r[1]}", r[2:]) for r in speedup_rows(entries)]
    rows += [(f"{r[0]} on {r[1]} at B={r[2]}", r[3:]) for r in backend_speedup_rows(entries)]
    for where, cells in rows:
        verdicts = {cell.rsplit(" ", 1)[-1] for cell in cells if cell not in (fmt.MISSING, "FAILED", "skipped")}
        if "faster" in verdicts and len(verdicts) > 1:
            flips.append(where)
    if flips:
        parts.append(f"Faster than dense in some runs but not in others: {', '.join(flips)}.")
    else:
        parts.append("No variant is faster than dense in one run and not in another.")
    return " ".join(parts)
