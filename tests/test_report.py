"""The report: every file is written, byte-stable, self-contained, escaped, loud about failures; CLI commands."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from prunebench.analysis import analyze
from prunebench.cli.main import main
from prunebench.report import build_report, summary_rows, summary_table, verdict_text
from prunebench.results import ResultStore, load_snapshot, open_run
from tests.test_results_synthetic import fill_store, make_snapshot

EXPECTED_FILES = {
    "report.html",
    "summary.md",
    "results.json",
    "results.csv",
    *(f"figures/{n}.{ext}" for n in ("speedup", "throughput", "degradation", "pareto") for ext in ("png", "svg")),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The synthetic run with its report built once for the module (figures take a few seconds)."""
    run_dir = fill_store(tmp_path_factory.mktemp("run"))
    return run_dir, build_report(run_dir)


def test_every_file_is_written(built: tuple[Path, dict[str, Path]]) -> None:
    run_dir, paths = built
    assert set(paths) == EXPECTED_FILES
    assert all(p.is_file() and p.stat().st_size > 0 and p.is_relative_to(run_dir) for p in paths.values())


def test_rebuild_is_byte_stable(built: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    run_dir, first = built
    # A copy of the store rebuilt elsewhere: the same store must give the same bytes, file for file.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run_dir / "results.sqlite", copy / "results.sqlite")
    second = build_report(copy)
    assert set(second) == set(first)
    differing = [name for name in first if first[name].read_bytes() != second[name].read_bytes()]
    assert differing == []


def test_figure_files_carry_no_date_or_software(built: tuple[Path, dict[str, Path]]) -> None:
    _, paths = built
    for name, path in paths.items():
        data = path.read_bytes()
        if name.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            assert b"tIME" not in data and b"Software" not in data
        elif name.endswith(".svg"):
            assert b"<dc:date>" not in data and b"<svg" in data


def _html(paths: dict[str, Path]) -> str:
    return paths["report.html"].read_text(encoding="utf-8")


def test_html_is_self_contained(built: tuple[Path, dict[str, Path]]) -> None:
    html = _html(built[1])
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "no network references"
    assert "<link" not in html.lower() and "@import" not in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 4
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_summary_first_and_failures_loud(built: tuple[Path, dict[str, Path]]) -> None:
    html = _html(built[1])
    summary_at, figures_at, env_at = html.index('class="summary"'), html.index("<h2>Figures"), html.index("<h2>Environ")
    assert html.index('class="verdict"') < summary_at < figures_at < env_at
    summary = html[summary_at : html.index("</table>", summary_at)]
    bad_rows = re.findall(r'<tr class="bad"><td class="l">([^<]+)</td>', summary)
    assert bad_rows == ["wanda@0.5", "nm2:4", "iterative@0.8"]
    assert "FIDELITY FAILED" in summary and "PRUNING FAILED" in summary and "1 CELL FAILED" in summary
    assert 'class="problems"' in html and "Problems (3)" in html
    for variant in ("dense", "magnitude@0.5", "magnitude@0.8", "structured@0.5"):
        assert f'<tr class=""><td class="l">{variant}</td>' in summary


def test_html_escapes_data(built: tuple[Path, dict[str, Path]]) -> None:
    html = _html(built[1])
    assert "<boom>" not in html and "&lt;boom&gt;" in html
    assert "Synthetic CPU &lt;x86&gt;" in html and "&amp;" in html


def test_summary_md(built: tuple[Path, dict[str, Path]]) -> None:
    md = built[1]["summary.md"].read_text(encoding="utf-8")
    assert md.startswith("# prunebench summary: synthetic-0001")
    assert "| variant | sparsity |" in md and "structured@0.5" in md
    assert "fidelity check FAILED" in md and "&lt;boom&gt;" in md
    assert "![figures/speedup.png](figures/speedup.png)" in md


def test_summary_table_from_store_snapshot_or_analysis(built: tuple[Path, dict[str, Path]]) -> None:
    run_dir, _ = built
    snap = load_snapshot(run_dir)
    with open_run(run_dir) as store:
        from_store = summary_rows(store)
    assert from_store == summary_rows(snap) == summary_rows(analyze(snap))
    assert [r.variant for r in from_store][:2] == ["dense", "magnitude@0.5"]
    table = summary_table(from_store)
    assert table.row_count == len(make_snapshot()["variants"])
    console = Console(record=True, width=220)
    console.print(table)
    text = console.export_text()
    assert "speedup B=4 [CI]" in text and "1.70× [1.60–1.80]" in text and "FIDELITY FAILED" in text
    with pytest.raises(ValueError, match="ResultStore, a store snapshot dict or an Analysis"):
        summary_rows(42)


def test_verdict_states_what_the_data_says() -> None:
    snap = make_snapshot()
    text = verdict_text(analyze(snap), snap["run"])
    assert "At batch size 1, 0 of 6 were measurably faster" in text
    assert ("At batch size 4, 1 of 6 were measurably faster than dense (whole CI above the noise floor of dense "
            "against its identical twin): structured@0.5.") in text
    assert "structured@0.5 becomes faster than dense at B=2" in text
    assert "The 3 variants stored as 'zeros' ran at 0.98–1.01× of dense at B=4, against a FLOP-ideal 1.92–4.00×" in text
    assert "(1 failed to prune)" in text
    assert "3 problem(s)" in text


def test_report_of_a_run_that_just_started(tmp_path: Path) -> None:
    # A run killed before any cell: the report still builds (and says the run is partial).
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run({"run_id": "early", "config": {"seq_len": 8}, "environment": {}})
        store.put_variant({"name": "dense", "method": "dense", "status": "ok", "params": 10})
    paths = build_report(tmp_path)
    html = _html(paths)
    assert "run status is &#x27;running&#x27;" in html and len(re.findall("<img ", html)) == 4


def test_cli_report_and_errors(built: tuple[Path, dict[str, Path]], tmp_path: Path, capsys) -> None:
    run_dir, _ = built
    assert main(["report", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "structured@0.5" in out and str(tmp_path / "out" / "report.html") in out
    assert (tmp_path / "out" / "summary.md").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a run folder" in err
    assert main(["report", str(tmp_path / "out")]) == 2  # a folder without a store
    assert "no results.sqlite" in capsys.readouterr().err


# -- the report in a real browser -------------------------------------------------------------------------------

_PROBE = (
    '<script>window.addEventListener("load", function () {'
    ' function preLines() { var n = 0; document.querySelectorAll("pre").forEach(function (p) {'
    " if (p.getClientRects().length) { n += p.textContent.split(String.fromCharCode(10)).length; } }); return n; }"
    ' var out = {widths: [], viewport: window.innerWidth, scroll: document.documentElement.scrollWidth,'
    ' pre: preLines(), details: document.querySelectorAll("details").length,'
    ' closed: document.querySelectorAll("details:not([open])").length};'
    ' document.querySelectorAll("img").forEach(function (im) {'
    " out.widths.push(im.complete ? im.naturalWidth : -1); });"
    # Every collapsed section opened: the widest the page gets.
    ' document.querySelectorAll("details").forEach(function (d) { d.open = true; });'
    " out.scrollOpen = document.documentElement.scrollWidth; out.preOpen = preLines();"
    ' var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);'
    " document.body.appendChild(pre); });</script>"
)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.mark.slow
def test_report_renders_in_headless_chromium(built: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    # The report itself has no script; a copy gets a probe that writes each image's decoded width into the DOM.
    html = _html(built[1])
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Virtual time lets the page settle (load event, probe) before the DOM is dumped, without real waiting.
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    probe = re.search(r'<pre id="probe">([^<]*)</pre>', dom)
    assert probe, "the probe did not run: " + dom[-500:]
    seen = json.loads(probe.group(1))
    widths = seen["widths"]
    assert len(widths) == 4 and all(w > 0 for w in widths), widths
    # Layout at a 1400-px viewport: no sideways scrolling, closed or with every section opened; no text dumps.
    assert seen["viewport"] == 1400, seen
    assert seen["scroll"] <= 1400 and seen["scrollOpen"] <= 1400, seen
    assert seen["pre"] <= 5 and seen["preOpen"] <= 20, seen
    # Per-variant details (one section each) and the cells start collapsed.
    assert seen["closed"] == seen["details"] and seen["details"] >= len(make_snapshot()["variants"]) + 1, seen
    # Read top-down: verdict, summary table, figures, then the details.
    order = [dom.index(m) for m in ('class="verdict"', '<table class="summary">', "<img ", "<details")]
    assert order == sorted(order), order
    assert '<table class="summary">' in dom and "structured@0.5" in dom


def test_pareto_legend_only_names_a_drawn_front() -> None:
    from dataclasses import replace

    from prunebench.report.plots import pareto_figure

    a = analyze(make_snapshot())
    fig = pareto_figure(a)
    legends = [ax.get_legend() for ax in fig.axes]
    assert all(lg is not None and [t.get_text() for t in lg.get_texts()] == ["Pareto front"] for lg in legends)
    # A front of one point per batch size: no line is drawn, so no legend names one.
    lone = {b: tuple(replace(p, on_front=i == 0) for i, p in enumerate(points)) for b, points in a.pareto.items()}
    fig = pareto_figure(replace(a, pareto=lone))
    assert all(ax.get_legend() is None and not ax.get_lines() for ax in fig.axes)
