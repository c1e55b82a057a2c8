"""``prunebench compare``: one report across runs, grouped by environment fingerprint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prunebench.cli.compare_cmd import default_out
from prunebench.cli.main import main
from prunebench.report import build_comparison
from prunebench.report.compare import backend_speedup_rows, speedup_rows
from prunebench.report.runs import differing, groups, load_runs
from tests.test_results_synthetic import fill_store, make_snapshot


def _write(run_dir: Path, run_id: str, fingerprint: str, torch: str, structured_b1: tuple[float, float, float]) -> Path:
    snap = make_snapshot()
    snap["run"].update(run_id=run_id)
    snap["run"]["environment"].update(fingerprint_hash=fingerprint, torch=torch)
    for c in snap["cells"]:
        if c["variant"] == "structured@0.5" and c["batch_size"] == 1:
            c.update(zip(("speedup", "speedup_ci_low", "speedup_ci_high"), structured_b1, strict=True))
    return fill_store(run_dir, snap, finish=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [
        _write(root / "a", "run-a", "fp-old", "2.12.0", (1.05, 0.98, 1.12)),
        _write(root / "b", "run-b", "fp-new", "2.13.0", (1.3, 1.2, 1.4)),
        _write(root / "c", "run-c", "fp-old", "2.12.0", (1.04, 0.97, 1.1)),
    ]


def test_grouping_and_differences(runs: list[Path]) -> None:
    entries = load_runs(runs)
    assert [e.label for e in entries] == ["#1 run-a", "#2 run-b", "#3 run-c"]
    assert {fp: [e.label for e in members] for fp, members in groups(entries).items()} == {
        "fp-old": ["#1 run-a", "#3 run-c"],
        "fp-new": ["#2 run-b"],
    }
    assert differing([e.env for e in entries]) == ["fingerprint_hash", "torch"]
    assert differing([{"a": 1}, {"a": 1, "b": 2}]) == ["b"]


def test_comparison_report(runs: list[Path], tmp_path: Path, capsys) -> None:
    paths = build_comparison(runs, tmp_path / "one")
    assert set(paths) == {
        "compare.html",
        "compare.md",
        *(f"figures/compare_{n}.{ext}" for n in ("speedup", "latency") for ext in ("png", "svg")),
    }
    html = paths["compare.html"].read_text(encoding="utf-8")
    assert "<script" not in html and len(re.findall(r'<img src="data:image/png;base64,', html)) == 2
    assert "3 runs in 2 environment group(s)" in html
    assert "The environments differ in: fingerprint_hash, torch." in html
    # structured@0.5 at B=1 is faster only on the new stack: the verdict says so
    assert "Faster than dense in some runs but not in others: structured@0.5 at B=1." in html
    assert "<b>fp-old</b>: #1 run-a, #3 run-c" in html
    md = paths["compare.md"].read_text(encoding="utf-8")
    assert "| variant | B | #1 run-a | #2 run-b | #3 run-c |" in md and "1.30× [1.20–1.40] faster" in md
    # the CLI writes the same bytes for the same runs
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "two")]) == 0
    assert "compare.html" in capsys.readouterr().out
    for name, path in paths.items():
        assert (tmp_path / "two" / name).read_bytes() == path.read_bytes(), name


def test_compare_bad_input(runs: list[Path], tmp_path: Path, capsys) -> None:
    assert main(["compare", str(runs[0])]) == 2
    assert "at least two run folders" in capsys.readouterr().err
    assert main(["compare", str(runs[0]), str(runs[0]), "--out", str(tmp_path)]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["compare", str(runs[0]), str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a run folder" in err


def test_default_out_is_stable(runs: list[Path]) -> None:
    assert default_out(runs) == default_out(list(reversed(runs)))
    assert default_out(runs).parent == Path("runs") and default_out(runs) != default_out(runs[:2])


def _backend_cell(variant: str, b: int, figures: tuple[float, float, float]) -> dict:
    s, lo, hi = figures
    return {"variant": variant, "backend": "int8", "batch_size": b, "seq_len": 32, "status": "ok",
            "speedup": s, "speedup_ci_low": lo, "speedup_ci_high": hi, "latency_ms": 3.0 / s,
            "baseline_backend": "eager", "n_pairs": 20}


def test_backend_cells_are_compared_per_backend_not_mixed_with_eager(tmp_path: Path) -> None:
    dirs = []
    for name, structured in (("a", (1.5, 1.45, 1.55)), ("b", (0.9, 0.85, 0.95))):
        snap = make_snapshot()
        snap["run"].update(run_id=f"run-{name}")
        # Stored before the eager cells: a lookup by (variant, B) alone would return these.
        snap["cells"] = [_backend_cell("dense", 1, (1.8, 1.75, 1.85)), _backend_cell("structured@0.5", 1, structured),
                         *snap["cells"]]
        assert {c["seq_len"] for c in snap["cells"][2:]} == {32}
        dirs.append(fill_store(tmp_path / name, snap))
    entries = load_runs(dirs)
    eager_row = next(r for r in speedup_rows(entries) if r[:2] == ["structured@0.5", "1"])
    assert eager_row[2:] == ["1.05× [0.98–1.12] same"] * 2  # eager's own cells only
    rows = {tuple(r[:3]): r[3:] for r in backend_speedup_rows(entries)}
    assert set(rows) == {("dense", "int8", "1"), ("structured@0.5", "int8", "1")}
    # Judged against the eager twin's noise floor (its baseline), not dense-int8-vs-dense-eager's 1.8x band.
    assert rows["structured@0.5", "int8", "1"] == ["1.50× [1.45–1.55] faster", "0.90× [0.85–0.95] slower"]
    md = build_comparison(dirs, tmp_path / "out")["compare.md"].read_text(encoding="utf-8")
    assert "## Other backends: speedup vs dense eager per run" in md
    assert "| structured@0.5 | int8 | 1 | 1.50× [1.45–1.55] faster |" in md
    assert "structured@0.5 on int8 at B=1" in md  # the verdict names the backend of a flip
