"""Issue #16 items 3-5: model outputs never silently replace a model or write into a run folder; a store that
measured nothing does not block a retry; a model folder's metadata never chooses a file to read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.cli import eval_cmd
from prunebench.cli.main import main
from prunebench.config import RunConfig
from prunebench.models import save_model
from prunebench.outdir import OutDirError, check_model_out, check_writable_dir, find_run_folder
from prunebench.results import ResultStore
from prunebench.runner.rundir import RunFolderError, prepare
from tests.test_results_synthetic import fill_store

PRUNE = ["prune", "--model", "small", "--method", "magnitude", "--sparsity", "0.3"]


def _one_line_exit_2(capsys, argv: list[str], message: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err and message in err, err


def test_writable_checks_leave_nothing_behind(tmp_path: Path) -> None:
    check_writable_dir(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutDirError, match="existing file"):
        check_writable_dir(tmp_path / "f")
    with pytest.raises(OutDirError, match="lies under .*f, which is a file"):
        check_writable_dir(tmp_path / "f" / "g" / "h")
    with pytest.raises(OutDirError, match="not writable"):
        check_writable_dir("/proc/prunebench/x")


def test_run_folders_are_found_from_inside(tmp_path: Path) -> None:
    run = fill_store(tmp_path / "run")
    assert find_run_folder(run / "models" / "magnitude_0.5") == run.absolute()
    assert find_run_folder(tmp_path / "elsewhere") is None
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "run.lock").write_text("")
    assert find_run_folder(tmp_path / "locked" / "x") == (tmp_path / "locked").absolute()


def test_prune_refuses_a_non_empty_out_unless_forced(capsys, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert main([*PRUNE, "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "model.safetensors").read_bytes()
    _one_line_exit_2(capsys, [*PRUNE, "--sparsity", "0.6", "--out", str(out)], "is not empty; use --force")
    assert (out / "model.safetensors").read_bytes() == before
    (out / "tokenizer.json").write_text("stale")  # a file of an earlier model that --force must not keep
    assert main([*PRUNE, "--sparsity", "0.6", "--out", str(out), "--force"]) == 0
    assert (out / "model.safetensors").read_bytes() != before and not (out / "tokenizer.json").exists()
    assert json.loads((out / "prune_report.json").read_text())["requested_sparsity"] == pytest.approx(0.6)


def test_prune_and_train_never_write_into_a_run_folder(capsys, tmp_path: Path) -> None:
    run = fill_store(tmp_path / "run")
    target = run / "models" / "magnitude_0.5"
    for force in ([], ["--force"]):
        _one_line_exit_2(capsys, [*PRUNE, "--out", str(target), *force], "is inside the run folder")
        _one_line_exit_2(capsys, ["train", "--model", "small", "--out", str(target), *force,
                                  "--cache-dir", str(tmp_path / "c")], "is inside the run folder")
        _one_line_exit_2(capsys, [*PRUNE, "--out", str(run), *force], "is inside the run folder")
    assert not target.exists() and not (tmp_path / "c").exists()
    with pytest.raises(OutDirError, match="inside the run folder"):
        check_model_out(run, force=True)


def test_train_refuses_a_non_empty_out_before_training(capsys, tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_line_exit_2(capsys, ["train", "--model", "small", "--out", str(out), "--cache-dir", str(tmp_path / "c")],
                     "is not empty")
    assert not (tmp_path / "c").exists()  # refused before the task (tokenizer, corpus) was built


def test_run_out_inside_another_run_is_refused(capsys, tmp_path: Path) -> None:
    run = fill_store(tmp_path / "run")
    _one_line_exit_2(capsys, ["run", "--model", "small", "--out", str(run / "models" / "x")],
                     "lies inside the run folder")
    assert not (run / "models" / "x").exists()


def test_a_store_that_measured_nothing_does_not_block_a_retry(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with ResultStore(out / "results.sqlite") as store:
        store.start_run({"run_id": "early", "config": RunConfig(model="small", seed=1).to_dict(), "environment": {}})
        store.set_run_status("failed")
    run_dir, config = prepare(out, RunConfig(model="small"), resume=False, force=False)
    assert config.seed == 0 and not run_dir.store.exists()
    # A run that measured something is kept: only --resume or --force may touch it.
    with ResultStore(out / "results.sqlite") as store:
        store.start_run({"run_id": "later", "config": RunConfig(model="small", seed=1).to_dict(), "environment": {}})
        store.put_variant({"name": "dense", "method": "dense", "status": "ok", "params": 10})
        store.set_run_status("failed")
    with pytest.raises(RunFolderError, match="already holds a different run"):
        prepare(out, RunConfig(model="small"), resume=False, force=False)
    assert run_dir.store.exists()


def _crafted_model(tmp_path: Path, tiny_model, task: dict) -> Path:
    folder = save_model(tiny_model, tmp_path / "crafted", metadata={"task": task})
    return folder


def test_model_metadata_never_chooses_a_file_to_read(capsys, tmp_path: Path, tiny_model, monkeypatch) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    folder = _crafted_model(tmp_path, tiny_model, {"spec": f"csv:{secret}", "seq_len": 16})

    def no_build(*args, **kwargs):
        raise AssertionError("eval must not build a task from a path stored in a model folder")

    monkeypatch.setattr(eval_cmd, "build_task_from", no_build)
    code = main(["eval", str(folder), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "pass --task csv:PATH" in err and "root:" not in err and str(secret) not in err
    assert err.strip().count("\n") == 0


def test_model_metadata_with_a_bad_seq_len_is_refused(capsys, tmp_path: Path, tiny_model) -> None:
    folder = _crafted_model(tmp_path, tiny_model, {"spec": "mlm", "seq_len": 10**12})
    _one_line_exit_2(capsys, ["eval", str(folder), "--cache-dir", str(tmp_path / "c")], "max_positions")
    folder2 = save_model(tiny_model, tmp_path / "crafted2", metadata={"task": {"spec": "mlm", "seq_len": "x"}})
    _one_line_exit_2(capsys, ["eval", str(folder2), "--cache-dir", str(tmp_path / "c")], "invalid task seq_len")
    assert not (tmp_path / "c").exists()
    assert torch.isfinite(tiny_model.embed_tokens.weight).all()
