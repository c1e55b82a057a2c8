"""``prunebench prune`` and ``prunebench list methods``."""

from __future__ import annotations

import json

import pytest
import torch

from prunebench.cli.main import main
from prunebench.models import load_model, save_model
from prunebench.pruning import PrunePlan, PruneReport, apply_plan_, check_fidelity


@pytest.fixture
def model_dir(tmp_path, tiny_model):
    return save_model(tiny_model, tmp_path / "dense")


def test_prune_structured_writes_model_plan_and_report(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "pruned"
    rc = main(["prune", "--model", str(model_dir), "--method", "structured", "--sparsity", "0.5",
               "--granularity", "heads", "--criterion", "l2", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "measured sparsity" in printed and "shrunk" in printed
    pruned = load_model(out)
    assert [layer.n_heads for layer in pruned.config.layers] == [2, 2]
    report = PruneReport.from_dict(json.loads((out / "prune_report.json").read_text()))
    assert report.group_sparsity["heads"] == 0.5 and report.macs_after < report.macs_before
    # plan.json replays on the original model and gives the saved model
    replay = load_model(model_dir)
    apply_plan_(replay, PrunePlan.from_dict(json.loads((out / "plan.json").read_text())))
    batch = {"input_ids": torch.arange(10)[None, :], "attention_mask": torch.ones(1, 10, dtype=torch.long)}
    assert check_fidelity(replay, pruned, batch, atol=0.0)["ok"]


def test_prune_gradual_with_steps_and_calibration_on_real_text(tmp_path, capsys) -> None:
    out = tmp_path / "gradual"
    rc = main(["prune", "--model", "small", "--method", "magnitude", "--criterion", "taylor", "--sparsity",
               "0.6", "--steps", "3", "--schedule", "cubic", "--calib-sequences", "8", "--task", "mlm",
               "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "8 sequences of mlm (train split)" in printed and "random" not in printed
    assert "fidelity to dense (held out)" in printed and "cosine" in printed
    report = json.loads((out / "prune_report.json").read_text())
    assert report["method"] == "iterative" and report["spec"]["base_method"] == "magnitude"
    assert len(report["schedule"]) == 3 and abs(report["measured_sparsity"] - 0.6) < 0.01


def test_no_usable_task_text_is_one_line_never_random_tokens(model_dir, tmp_path, capsys) -> None:
    """A toy encoder (97 ids) that no built-in task's tokenizer fits: a data-driven criterion is refused."""
    out = tmp_path / "x"
    rc = main(["prune", "--model", str(model_dir), "--method", "wanda", "--sparsity", "0.5",
               "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "never calibrates on random tokens" in err
    assert not out.exists()
    rc = main(["prune", "--model", str(model_dir), "--method", "magnitude", "--refit", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--method magnitude removes none" in err and not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "snip"], "unknown pruning method 'snip'; choose from"),
        (["--sparsity", "1.0"], "sparsity must lie in [0, 1)"),
        (["--method", "nm", "--n", "5"], "n <= m"),
        (["--method", "structured", "--granularity", "rows"], "choose from: heads, neurons, both, layers"),
        (["--schedule", "exp"], "choose from: one_shot, linear, cubic"),
        (["--method", "structured", "--sparsity", "0.9", "--granularity", "layers"], "would remove all 2 layers"),
        (["--materialize", "shrink"], "only a structured plan"),
    ],
)
def test_bad_input_exits_2_with_one_line(model_dir, tmp_path, capsys, extra, message) -> None:
    rc = main(["prune", "--model", str(model_dir), *extra, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1


def test_unknown_model_exits_2(tmp_path, capsys) -> None:
    assert main(["prune", "--model", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "neither a folder nor a preset" in capsys.readouterr().err


def test_list_methods(capsys) -> None:
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("magnitude", "structured", "iterative", "wanda", "nm"):
        assert name in out
