"""The terminal: a fast --version, -v anywhere, --json on stdout, markup-free messages, the summary at 100 and 160
columns, and the progress counter moving within a unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from prunebench.analysis import analyze
from prunebench.cli.common import console
from prunebench.cli.main import build_parser, main
from prunebench.report import summary_cells, summary_rows, summary_table
from prunebench.report.summary import summary_dicts
from prunebench.runner.stages import Ticker
from tests.test_results_synthetic import make_snapshot

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_fast_and_does_not_import_torch() -> None:
    code = ("import sys, time; t = time.perf_counter(); from prunebench.cli.main import main; rc = main(['--version']);"
            " print(rc, 'torch' in sys.modules, time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    wall = time.perf_counter() - start
    version_line, result = out.splitlines()
    rc, torch_loaded, seconds = result.split()
    assert version_line.startswith("prunebench ") and rc == "0"
    assert torch_loaded == "False"
    assert float(seconds) < 0.5 and wall < 1.5  # torch alone takes seconds to import


def test_public_api_still_resolves_lazily() -> None:
    import prunebench

    assert callable(prunebench.create_model) and prunebench.RunConfig.__name__ == "RunConfig"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        prunebench.nope  # noqa: B018


@pytest.mark.parametrize("argv, verbose", [
    (["list", "models"], False), (["-v", "list", "models"], True), (["list", "models", "-v"], True),
    (["run", "--quick", "-v"], True), (["report", "x", "--verbose"], True),
])
def test_verbose_before_or_after_the_subcommand(argv: list[str], verbose: bool) -> None:
    assert build_parser().parse_args(argv).verbose is verbose


def test_list_json_is_only_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows][:3] == ["small", "medium", "large"]
    assert rows[0]["layers"] == "2"


def test_messages_keep_their_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    hint = "onnxruntime is not installed; install it with: pip install -e '.[onnx]' [bold]x[/]"
    con = console()
    con.print(hint)
    from rich.table import Table

    table = Table()
    table.add_column("why")
    table.add_row(hint)
    con.print(table)
    out = capsys.readouterr().out
    assert out.count("pip install -e '.[onnx]' [bold]x[/]") == 2


def _rows():
    rows = summary_rows(analyze(make_snapshot()))
    # The longest cells a run makes: many statuses, an accuracy change with its CI, "no measurable change".
    rows[1] = replace(rows[1], contended_cells=3, skipped_cells=2, unmeasured_cells=1,
                      accuracy_verdict="no measurable change", accuracy_delta_ci_low=-0.01, accuracy_delta_ci_high=0.01)
    rows[2] = replace(rows[2], accuracy_delta_ci_low=-0.21, accuracy_delta_ci_high=-0.1)
    return rows


@pytest.mark.parametrize("width", [100, 160])
def test_summary_table_keeps_every_column_at_width(width: int) -> None:
    rows = _rows()
    con = Console(record=True, width=width)
    con.print(summary_table(rows, width=width))
    text = con.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text  # nothing cut
    words = " ".join(text.split())
    header = " ".join(lines[2:6])
    assert all(h in header for h in ("variant", "spar-", "stored", "params", "accuracy", "B=1", "B=4", "FLOP-",
                                     "disk", "status"))
    for row in rows:
        for cell in summary_cells(row):
            # Every figure and every status word is there whole (a narrow layout may stack a cell's parts).
            for part in cell.replace(",", " ").split():
                assert part in words or part in ("cell", "cells"), (part, cell)
    # The status wraps at words (checked above: every word whole), and not absurdly: the longest status,
    # "2 cells skipped, 1 cell unmeasured, 3 cells contended", takes one line a tag.
    column = next(line for line in lines if "status" in line).index("status")
    start = next(i for i, line in enumerate(lines) if line.startswith(" magnitude@0.5"))
    status = [line[column:].strip() for line in lines[start:start + 8]]
    assert "contended" in " ".join(status) and len([s for s in status[:status.index("")] if s]) <= 3


def test_summary_table_wide_when_it_fits() -> None:
    rows = summary_rows(analyze(make_snapshot()))
    con = Console(record=True, width=220)
    con.print(summary_table(rows, width=220))
    assert "1.70× [1.60–1.80]" in con.export_text()  # one line per row


def test_summary_dicts_are_json() -> None:
    rows = _rows()
    doc = json.loads(json.dumps(summary_dicts(rows)))
    assert [d["variant"] for d in doc] == [r.variant for r in rows]
    structured = next(d for d in doc if d["variant"] == "structured@0.5")
    assert structured["large"]["speedup"] == pytest.approx(1.70)
    assert structured["columns"]["status"] == "ok"


def test_ticker_reports_progress_within_a_unit() -> None:
    seen: list[float] = []
    tick = Ticker(10, lambda stage, detail, done, total: seen.append(done), clock=lambda: 0.0,
                  load=lambda: None, cpu_clock=lambda: 0.0)
    tick("data", "ready")
    for fraction in (0.25, 0.5, 1.0):
        tick("train", f"{fraction:.0%}", 0, within=fraction)
    tick("train", "trained")
    assert seen[0] == 1 and seen[1:4] == [1.25, 1.5, pytest.approx(1.999)] and seen[4] == 2


def test_missing_backend_package_is_refused_before_the_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name))
    out = tmp_path / "run"
    assert main(["run", "--model", "small", "--quick", "--backends", "eager,onnxruntime", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[onnx]"' in err and "onnxruntime" in err
    assert not out.exists()


def test_ray_executor_without_ray_is_refused_before_the_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "run"
    assert main(["run", "--model", "small", "--quick", "--executor", "ray", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[ray]"' in err
    assert not out.exists()


def test_save_model_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    from prunebench import create_model, load_model, save_model
    from prunebench.errors import CheckpointError

    model = create_model("small", seed=0)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="holds other files and no prunebench model"):
        save_model(model, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]  # nothing written
    save_model(model, foreign, overwrite=True)  # asked for: written beside the other file
    assert (foreign / "config.json").is_file()
    ours = save_model(model, tmp_path / "m")
    save_model(model, ours)  # a prunebench folder is saved again in place
    assert load_model(ours) is not None
    with pytest.raises(CheckpointError, match="is a file"):
        save_model(model, foreign / "cat.jpg")


def test_importing_the_hf_models_keeps_the_terminal_clean() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("torchao")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", "import prunebench.models.hf.io, transformers, torchao"],
                          capture_output=True, text=True, env=env, check=True)
    assert "torchao" not in done.stderr and "register_constant" not in done.stderr, done.stderr[-500:]
