"""Issue #14 (bad input) and #16 items 3-5: each case is a one-line error with exit code 2 before any
expensive work, and leaves nothing behind that would block the corrected command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.cli.common import warn_threads
from prunebench.cli.main import main
from prunebench.errors import CheckpointError, PrunebenchError
from prunebench.models import EncoderConfig, save_model
from prunebench.models.io import check_fits_memory, count_parameters
from prunebench.pruning import PruneSpec
from prunebench.runner.variants import make_variant
from tests.test_results_synthetic import fill_store

QUICK = ["--model", "small", "--quick", "--batch-sizes", "1", "--seq-len", "32", "--threads", "1"]
BIG_SEED = str(2**63)


def _fails(capsys, argv: list[str], message: str) -> str:
    """Run the CLI; assert exit 2 and a single stderr line holding ``message`` and no traceback."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit from inside parse_args
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().count("\n") == 0 and err.endswith("\n") and "Traceback" not in err, err
    assert message in err, err
    return err


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text("not a folder\n")
    return path


@pytest.fixture
def tiny_dir(tmp_path: Path, tiny_model) -> Path:
    return save_model(tiny_model, tmp_path / "tiny")


def _bad_outs(a_file: Path) -> list[tuple[Path, str]]:
    return [(a_file, "is an existing file"), (a_file / "sub", "which is a file"),
            (Path("/proc/prunebench-test/run"), "is not writable")]


# -- --out of every command that writes ---------------------------------------------------------------------


def test_run_out_unusable(capsys, a_file: Path, tmp_path: Path) -> None:
    for out, message in _bad_outs(a_file):
        _fails(capsys, ["run", *QUICK, "--out", str(out), "--cache-dir", str(tmp_path / "c")], message)
    assert not (tmp_path / "c").exists()


def test_prune_and_train_out_unusable(capsys, a_file: Path, tmp_path: Path) -> None:
    for out, message in _bad_outs(a_file):
        _fails(capsys, ["prune", "--model", "small", "--sparsity", "0.5", "--out", str(out)], message)
        _fails(capsys, ["train", "--model", "small", "--out", str(out), "--cache-dir", str(tmp_path / "c")], message)
    assert not (tmp_path / "c").exists()


def test_eval_paths_unusable(capsys, a_file: Path) -> None:
    _fails(capsys, ["eval", str(a_file)], "no model folder")
    _fails(capsys, ["eval", str(a_file / "sub")], "no model folder")
    _fails(capsys, ["eval", str(a_file), "--out", "x"], "unrecognized arguments")  # eval writes no folder


def test_report_out_unusable(capsys, a_file: Path, tmp_path: Path) -> None:
    run_dir = fill_store(tmp_path / "run")
    for out, message in _bad_outs(a_file):
        _fails(capsys, ["report", str(run_dir), "--out", str(out)], message)
    other = fill_store(tmp_path / "other")
    before = (other / "results.sqlite").stat().st_mtime_ns
    _fails(capsys, ["report", str(run_dir), "--out", str(other / "figs")], "inside another run's folder")
    assert (other / "results.sqlite").stat().st_mtime_ns == before and not (other / "figs").exists()


def test_bench_json_unusable(capsys, a_file: Path, tmp_path: Path) -> None:
    _fails(capsys, ["bench", "small", "--json", str(a_file / "out.json")], "not a folder")
    _fails(capsys, ["bench", "small", "--json", str(tmp_path)], "is a folder")


# -- model folders: deep, huge, NaN ---------------------------------------------------------------------------


def _model_dir(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "crafted"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder


def test_deeply_nested_config_json(capsys, tmp_path: Path) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    folder = _model_dir(tmp_path, '{"format": "prunebench-model", "schema_version": 1, "config": ' + deep + "}")
    for argv in (["eval", str(folder)], ["bench", str(folder)], ["prune", "--model", str(folder), "--sparsity",
                                                                   "0.5", "--out", str(tmp_path / "o")]):
        _fails(capsys, argv, "nested too deeply")


HUGE = {"vocab_size": 2**20, "d_model": 2**16, "max_positions": 512,
        "layers": [{"n_heads": 64, "head_dim": 1024, "d_ff": 2**18}] * 48}


def test_huge_config_is_refused_before_allocation(capsys, tmp_path: Path) -> None:
    doc = {"format": "prunebench-model", "schema_version": 1, "config": HUGE, "metadata": {}}
    folder = _model_dir(tmp_path, json.dumps(doc))
    for argv in (["eval", str(folder)], ["bench", str(folder)], ["prune", "--model", str(folder), "--sparsity",
                                                                   "0.5", "--out", str(tmp_path / "o")]):
        _fails(capsys, argv, "refusing to allocate it")


def test_memory_check_compares_parameter_bytes_with_what_is_available(tiny_config) -> None:
    need = count_parameters(tiny_config)["total"] * 4
    check_fits_memory(tiny_config, "x", available=need)
    with pytest.raises(CheckpointError, match="more than the"):
        check_fits_memory(tiny_config, "x", available=need - 1)
    with pytest.raises(CheckpointError, match="GiB as float32"):
        check_fits_memory(EncoderConfig.from_dict(HUGE), "x", available=2**40)


def _nan_dir(tmp_path: Path, tiny_model) -> Path:
    with torch.no_grad():
        tiny_model.layers[0].ffn.fc_in.weight[0, 0] = float("nan")
    return save_model(tiny_model, tmp_path / "nan")


def test_nan_weights_are_refused_by_bench(capsys, tmp_path: Path, tiny_model) -> None:
    folder = _nan_dir(tmp_path, tiny_model)
    _fails(capsys, ["bench", str(folder), "--batch-sizes", "1", "--seq-len", "8"], "NaN/Inf weights")


def test_nan_weights_fail_the_variants_fidelity_check(tiny_model) -> None:
    with torch.no_grad():
        tiny_model.layers[1].attn.out_proj.weight[0, 0] = float("inf")
    batch = {"input_ids": torch.randint(0, 97, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    with pytest.raises(PrunebenchError, match="fidelity check failed: magnitude@0.5 has NaN/Inf weights"):
        make_variant(tiny_model, "magnitude@0.5", PruneSpec(method="magnitude", sparsity=0.5), seq_len=8,
                     calib=None, on_step=None, check_batch=batch, save_dir=None)


# -- option values ----------------------------------------------------------------------------------------------


def test_run_seq_len_above_max_positions(capsys, tmp_path: Path) -> None:
    out = tmp_path / "never"
    _fails(capsys, ["run", "--model", "small", "--seq-len", "1000", "--out", str(out)], "max_positions 512")
    assert not out.exists()


@pytest.mark.parametrize("command", [["run", "--model", "small"], ["bench", "small"]])
def test_empty_list_item(capsys, command: list[str]) -> None:
    _fails(capsys, [*command, "--batch-sizes", "1,,2"], "empty item in '1,,2'")
    _fails(capsys, [*command, "--batch-sizes", "1,2,"], "empty item")


def test_sparsity_list_with_an_empty_item(capsys) -> None:
    _fails(capsys, ["run", "--sparsity", "0.5,,0.7"], "empty item")


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_min_time_must_be_finite_and_non_negative(capsys, tmp_path: Path, value: str) -> None:
    _fails(capsys, ["bench", "small", "--min-time", value], "finite number of seconds")
    _fails(capsys, ["bench", "small", "--max-time", value], "finite number of seconds")
    out = tmp_path / "never"
    toml_value = {"inf": "inf", "nan": "nan", "-1": "-1"}[value]
    _fails(capsys, ["run", "--model", "small", "--set", f"min_time={toml_value}", "--out", str(out)],
           "min_time must be a finite number")
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ["run", "--model", "small"], ["prune", "--model", "small", "--out", "x"], ["train", "--out", "x"],
    ["eval", "x"], ["bench", "small"],
])
def test_seed_above_2_63(capsys, command: list[str]) -> None:
    _fails(capsys, [*command, "--seed", BIG_SEED], "seed must be an integer in [0, 2^63 - 1]")
    _fails(capsys, [*command, "--seed", "-1"], "[0, 2^63 - 1]")


def test_seed_from_toml_and_set(capsys, tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(f"[run]\nseed = {2**63}\n")
    _fails(capsys, ["run", "--config", str(toml), "--out", str(tmp_path / "n")], "[0, 2^63 - 1]")
    _fails(capsys, ["run", "--set", f"seed={2**64}", "--out", str(tmp_path / "n")], "[0, 2^63 - 1]")
    assert not (tmp_path / "n").exists()


def test_threads_above_the_cores_warn_in_one_line(capsys, tmp_path: Path) -> None:
    assert warn_threads(3, cores=2) and not warn_threads(2, cores=2) and not warn_threads(None, cores=2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--threads 3 exceeds the 2 CPU core(s)" in err
    # The CLI warns before its checks, and then the bad input still fails on its own line.
    code = main(["run", "--model", "small", "--threads", "999", "--task", f"csv:{tmp_path / 'no.csv'}",
                 "--out", str(tmp_path / "n")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "--threads 999 exceeds" in lines[0] and "does not exist" in lines[1]
    assert not (tmp_path / "n").exists()


# -- validation before creation (#16 item 4) --------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--train-budget", "abc"], "invalid budget 'abc'"),
    (["--task", "csv:/nonexistent/data.csv"], "task file /nonexistent/data.csv does not exist"),
    (["--task", "tsv:x"], "unknown task 'tsv:x'"),
    (["--seed", BIG_SEED], "[0, 2^63 - 1]"),
])
def test_run_validates_before_the_folder_exists(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "never"
    _fails(capsys, ["run", *QUICK, *args, "--out", str(out), "--cache-dir", str(tmp_path / "c")], message)
    assert not out.exists() and not (tmp_path / "c").exists()


def test_eval_cache_dir_under_a_file(capsys, a_file: Path, tiny_dir: Path) -> None:
    _fails(capsys, ["eval", str(tiny_dir), "--cache-dir", str(a_file / "cache")], "--cache-dir")
