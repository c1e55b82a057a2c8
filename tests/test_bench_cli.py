"""``prunebench bench``: a real (tiny, fast) run writing JSON, and every bad input as one line + exit 2."""

from __future__ import annotations

import json

import pytest

from prunebench.bench.records import BenchReport
from prunebench.cli.main import main
from prunebench.models.io import save_model
from prunebench.models.presets import create_model

FAST = ["--budget", "quick", "--min-time", "0", "--max-time", "0.05", "--seq-len", "8", "--no-memory", "--allow-busy"]


@pytest.fixture()
def folders(tmp_path):
    kw = {"vocab_size": 40, "d_model": 16, "n_heads": 2, "d_ff": 32, "max_positions": 32}
    dense = save_model(create_model("custom", n_layers=2, **kw), tmp_path / "dense")
    half = save_model(create_model("custom", n_layers=1, **kw), tmp_path / "half")
    return dense, half


def test_bench_folders_writes_json(folders, tmp_path, capsys) -> None:
    dense, half = folders
    out = tmp_path / "res" / "bench.json"
    code = main(["bench", str(half), "--baseline", str(dense), "--batch-sizes", "1,2", "--threads", "1", *FAST,
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "half" in printed and "FLOP-ideal" in printed
    doc = json.loads(out.read_text())
    assert doc["kind"] == "prunebench-bench" and doc["baseline"] == "dense" and len(doc["fingerprint"]) == 12
    assert doc["environment"]["threads"] == 1 and doc["settings"]["threads"] == 1
    report = BenchReport.from_dict(doc)
    assert report.to_dict() == doc
    cells = report.cells
    assert [(c.variant, c.batch_size) for c in cells] == [("half", 1), ("dense", 1), ("half", 2), ("dense", 2)]
    assert all(c.ok and c.threads == 1 for c in cells)
    # FLOP-ideal has the run's meaning: dense MACs / the candidate's non-zero MACs (half the layers: 2x)
    assert all(c.flop_ideal_speedup == pytest.approx(2.0 if c.variant == "half" else 1.0) for c in cells)
    assert doc["models"]["half"]["memory"]["disk_bytes"] > 0


def test_bench_preset_alone(capsys) -> None:
    assert main(["bench", "small", "--batch-sizes", "1", *FAST]) == 0
    assert "(twin)" in capsys.readouterr().out  # timed alone = against an identical twin: the noise floor


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--batch-sizes", "0"], "must be a positive integer"),
        (["--batch-sizes", "-2"], "must be a positive integer"),
        (["--batch-sizes", "two"], "is not an integer"),
        (["--batch-sizes", "1.5"], "is not an integer"),
        (["--seq-len", "600"], "exceeds"),
        (["--device", "tpu"], "unknown device"),
        (["--threads", "0"], "must be a positive integer"),
        (["--min-time", "-1"], "seconds >= 0"),
        (["--pad-fraction", "1.5"], "fraction"),
        (["--budget", "slow"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, needle, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        code = main(["bench", "small", *argv])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cuda_without_cuda_is_one_line(capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "small", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and len(err.strip().splitlines()) == 1


def test_not_a_model_folder_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["bench", str(tmp_path / "empty")]) == 2
    assert "is not a prunebench model" in capsys.readouterr().err
    assert main(["bench", "smal"]) == 2
    err = capsys.readouterr().err
    assert "neither a model folder nor a preset" in err and "small" in err and len(err.strip().splitlines()) == 1
