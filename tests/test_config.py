"""RunConfig: defaults, variant expansion, TOML loading, type checks and one-line errors."""

from __future__ import annotations

import pytest

from prunebench.config import RUN_METHODS, RunConfig, load_toml


def test_defaults_are_the_issue_defaults():
    cfg = RunConfig()
    assert cfg.model == "medium" and cfg.seq_len == 128 and cfg.seed == 0
    assert cfg.batch_sizes == (1, 2, 4, 8, 16)
    assert [v[0] for v in cfg.variants()] == [
        "magnitude@0.5", "structured@0.5", "iterative@0.8", "wanda@0.5", "nm2:4",
    ]


def test_sparsity_sweep_expands_every_method_but_nm():
    cfg = RunConfig(methods=("magnitude", "nm"), sparsities=(0.3, 0.9))
    assert [v[0] for v in cfg.variants()] == ["magnitude@0.3", "magnitude@0.9", "nm2:4"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ("magnitude", "lottery")}, "unknown method 'lottery'; choose from: " + ", ".join(RUN_METHODS)),
        ({"sparsities": (0.5, 1.0)}, r"sparsity 1 is outside \[0, 1\)"),
        ({"sparsities": (-0.1,)}, r"outside \[0, 1\)"),
        ({"model": "huge"}, "unknown model 'huge'; choose from: small, medium, large"),
        ({"batch_sizes": (1, 0)}, "batch_sizes must be positive integers"),
        ({"device": "tpu"}, "unknown device 'tpu'; choose from: cpu, cuda"),
        ({"seq_len": 0}, "seq_len must be an integer >= 1"),
        ({"iterative_steps": 101}, r"iterative_steps must be an integer in \[1, 100\], got 101"),
        ({"calib_sequences": 4097}, r"calib_sequences must be an integer in \[1, 4096\], got 4097"),
        ({"threads": 0}, r"threads must be an integer in \[1, 4096\], got 0"),
        ({"threads": 10**20}, r"threads must be an integer in \[1, 4096\]"),
        ({"schedule": "cosine"}, "unknown schedule 'cosine'"),
        ({"train_precision": "fp16"}, "unknown train_precision 'fp16'; choose from: auto, fp32, bf16"),
        ({"methods": ()}, "methods is empty"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def test_toml_round_trip_and_precedence(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nmodel = "small"\nmethods = ["magnitude", "wanda"]\nsparsities = [0.5, 0.7]\nseq_len = 64\n')
    cfg = RunConfig.from_dict(load_toml(path))
    assert (cfg.model, cfg.methods, cfg.sparsities, cfg.seq_len) == ("small", ("magnitude", "wanda"), (0.5, 0.7), 64)
    cli_wins = cfg.merged({"seq_len": 32, "model": None})
    assert cli_wins.seq_len == 32 and cli_wins.model == "small"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_top_level_toml_keys_work_too(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("batch_sizes = [1, 4]\nquick = true\n")
    cfg = RunConfig.from_dict(load_toml(path))
    assert cfg.batch_sizes == (1, 4) and cfg.quick is True


def test_malformed_toml_reports_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('model = "small"\nseq_len = = 3\n')
    with pytest.raises(ValueError, match=r"malformed TOML in .*line 2"):
        load_toml(path)


def test_unknown_and_mistyped_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown run option.*modle; valid: allow_busy, backends, batch_sizes"):
        RunConfig.from_dict({"modle": "small"})
    with pytest.raises(ValueError, match="seq_len must be an integer"):
        RunConfig.from_dict({"seq_len": "128"})
    with pytest.raises(ValueError, match="quick must be true or false"):
        RunConfig.from_dict({"quick": 1})
    with pytest.raises(ValueError, match="cannot read config file"):
        load_toml(tmp_path / "missing.toml")


def test_quick_shrinks_every_stage_but_explicit_settings_win():
    from prunebench.runner import Budgets

    full = Budgets.of(RunConfig())
    quick = Budgets.of(RunConfig(quick=True))
    assert full.bench_preset == "default" and quick.bench_preset == "quick"
    assert quick.finetune_steps < full.finetune_steps and quick.calib_sequences < full.calib_sequences
    assert quick.train_budget == "40" and full.train_budget is None  # None: the model's own default
    explicit = Budgets.of(RunConfig(quick=True, train_budget="7", eval_batches=5, min_time=0.2))
    assert (explicit.train_budget, explicit.eval_batches, explicit.bench_min_time) == ("7", 5, 0.2)


def test_backends_are_validated_and_eager_always_comes_first():
    assert RunConfig().backends == ("eager",)
    assert RunConfig(backends=("onnxruntime-int8", "eager", "sparse")).backends == ("eager", "onnxruntime-int8",
                                                                                    "sparse")
    assert RunConfig.from_dict({"backends": ["int8"]}).backends == ("eager", "int8")
    with pytest.raises(ValueError, match="unknown backend 'trt'; choose from: eager, int8"):
        RunConfig(backends=("trt",))
