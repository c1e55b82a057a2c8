"""Training, recovery fine-tuning with kept masks, the on_step callback and cached baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prunebench.models import EncoderConfig, LayerConfig, build_encoder, create_model, read_config, save_model
from prunebench.tasks import (
    CACHE_ENV,
    Budget,
    RecoveryCallback,
    TrainHistory,
    build_task,
    finetune,
    load_or_train_baseline,
    prunable_weights,
    resolve_cache_dir,
    train,
)
from prunebench.tasks.precision import PRECISIONS, native_bf16, resolve_precision
from prunebench.tasks.training import lr_at

CPU = torch.device("cpu")
PRECISION_PARAMS = ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    not native_bf16(CPU), reason="this CPU has no native bf16 (AMX or AVX512-BF16)"))]

VOCAB = 300
SEQ = 32



@pytest.fixture(scope="module")
def task():
    return build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=8, max_chars=30_000)


def tiny(seed: int = 0, **kw):
    return create_model("custom", seed=seed, vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                        max_positions=SEQ, **kw)


def _sparsify_(model, fraction: float = 0.5) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for w in prunable_weights(model).values():
            w.mul_((torch.rand(w.shape, generator=g) >= fraction).to(w.dtype))


def _zeros(model) -> dict[str, torch.Tensor]:
    return {n: (w == 0) for n, w in prunable_weights(model).items()}


def test_train_runs_the_budget_and_is_reproducible(task) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = tiny(), tiny()
    ha = train(a, task, 12, seed=3, batch_size=8, n_evals=2, eval_batches=1)
    hb = train(b, task, 12, seed=3, batch_size=8, n_evals=2, eval_batches=1)
    assert ha.steps == 12 and len(ha.losses) == 12 and [e["step"] for e in ha.evals] == [6, 12]
    assert ha.losses == hb.losses
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is untouched
    assert not a.training
    c = tiny()
    hc = train(c, task, 12, seed=4, batch_size=8, n_evals=0)
    assert hc.losses != ha.losses
    assert TrainHistory.from_dict(ha.to_dict()) == ha


def test_precision_names_and_native_bf16() -> None:
    assert PRECISIONS == ("auto", "fp32", "bf16")
    with pytest.raises(ValueError, match="choose from: auto, fp32, bf16"):
        resolve_precision("fp16", CPU)
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU) == ("bf16" if native_bf16(CPU) else "fp32")
    with pytest.raises(ValueError, match="needs native bf16"):
        resolve_precision("bf16", torch.device("meta"))


@pytest.mark.parametrize("precision", PRECISION_PARAMS)
def test_training_precision_is_recorded_reproducible_and_keeps_fp32_weights(task, precision: str) -> None:
    a, b = tiny(), tiny()
    ha = train(a, task, 6, seed=1, batch_size=8, n_evals=0, precision=precision)
    hb = train(b, task, 6, seed=1, batch_size=8, n_evals=0, precision=precision)
    assert ha.precision == precision and ha.losses == hb.losses
    assert all(p.dtype == torch.float32 for p in a.parameters())
    if precision == "bf16":  # mixed precision really ran: the losses differ from an fp32 run's
        assert train(tiny(), task, 6, seed=1, batch_size=8, n_evals=0, precision="fp32").losses != ha.losses


def test_training_lowers_the_loss(task) -> None:
    model = tiny()
    history = train(model, task, 60, lr=3e-3, batch_size=16, n_evals=0)
    assert sum(history.losses[-10:]) / 10 < sum(history.losses[:10]) / 10 - 0.5


def test_seconds_budget_records_steps_done(task) -> None:
    history = train(tiny(), task, "0.2s", batch_size=4, n_evals=0)
    assert history.budget == "0.2s" and history.steps == len(history.losses)


def test_lr_schedule_warms_up_then_decays() -> None:
    assert lr_at(0.0, 1.0) < lr_at(0.03, 1.0) < lr_at(0.06, 1.0)
    assert lr_at(0.5, 1.0) > lr_at(0.9, 1.0) > lr_at(1.0, 1.0) == pytest.approx(0.0)


def test_head_mismatch_is_an_error(task) -> None:
    with pytest.raises(ValueError, match="needs mlm"):
        train(tiny(head="cls", num_labels=2), task, 1)


@pytest.mark.parametrize("precision", PRECISION_PARAMS)
def test_finetune_keeps_pruned_weights_at_zero(task, precision: str) -> None:
    model = tiny()
    _sparsify_(model)
    before = _zeros(model)
    dense_before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    history = finetune(model, task, 8, lr=1e-2, batch_size=8, precision=precision)
    after = _zeros(model)
    assert history.precision == precision
    assert history.steps == 8 and history.masked_weights == sum(int(z.sum()) for z in before.values())
    for name in before:
        assert torch.equal(before[name], after[name]), name  # same sparsity, same positions
    assert any(not torch.equal(dense_before[n], w) for n, w in prunable_weights(model).items())


def test_finetune_without_masks_revives_weights(task) -> None:
    model = tiny()
    _sparsify_(model)
    before = sum(int(z.sum()) for z in _zeros(model).values())
    finetune(model, task, 3, keep_masks=False, lr=1e-2, batch_size=8)
    assert sum(int(z.sum()) for z in _zeros(model).values()) < before


def test_finetune_works_on_a_physically_shrunk_model(task) -> None:
    layers = (LayerConfig(n_heads=1, head_dim=16, d_ff=8), LayerConfig(n_heads=0, head_dim=16, d_ff=0))
    model = build_encoder(EncoderConfig(vocab_size=VOCAB, d_model=32, layers=layers, max_positions=SEQ), seed=0)
    _sparsify_(model, 0.3)
    before = _zeros(model)
    finetune(model, task, 4, lr=1e-2, batch_size=8)
    assert model.config.layers == layers
    assert all(torch.equal(before[n], z) for n, z in _zeros(model).items())


def test_recovery_callback_finetunes_each_prune_step(task) -> None:
    on_step = RecoveryCallback(task, 3, lr=1e-2, batch_size=8)
    model = tiny()
    for step, sparsity in enumerate((0.3, 0.6)):
        _sparsify_(model, sparsity)
        zeros = _zeros(model)
        on_step(step, sparsity, model)
        assert all(torch.equal(zeros[n], z) for n, z in _zeros(model).items())
    assert [h.steps for h in on_step.histories] == [3, 3]
    assert on_step.histories[0].seed != on_step.histories[1].seed
    with pytest.raises(ValueError, match="positive"):
        RecoveryCallback(task, 0)


def test_baseline_is_cached_verified_and_retrained_on_mismatch(task, tmp_path: Path) -> None:
    config = tiny().config
    first, info = load_or_train_baseline(config, task, "6", cache_dir=tmp_path, lr=2e-3)
    assert not info["cache_hit"] and info["steps"] == 6
    assert (Path(info["path"]) / "tokenizer.json").is_file()

    def untouched(*args):
        raise AssertionError("a cache hit must not train")

    second, hit = load_or_train_baseline(config, task, "6", cache_dir=tmp_path, lr=2e-3, progress=untouched)
    assert hit["cache_hit"] and hit["path"] == info["path"]
    assert all(torch.equal(x, y) for x, y in zip(first.state_dict().values(), second.state_dict().values(),
                                                  strict=True))
    _, other_seed = load_or_train_baseline(config, task, "6", seed=1, cache_dir=tmp_path, lr=2e-3)
    assert other_seed["key"] != info["key"] and not other_seed["cache_hit"]
    # Tamper with the cached entry's recorded task fingerprint: it must be retrained, not trusted.
    _, meta = read_config(info["path"])
    meta["baseline"]["task"] = {"corpus": "another python"}
    save_model(first, info["path"], meta)
    _, again = load_or_train_baseline(config, task, "6", cache_dir=tmp_path, lr=2e-3)
    assert not again["cache_hit"]
    assert info["precision"] == resolve_precision("auto", CPU)
    _, fp32 = load_or_train_baseline(config, task, "6", cache_dir=tmp_path, lr=2e-3, precision="fp32")
    assert fp32["precision"] == "fp32"
    assert (fp32["key"] == info["key"]) == (info["precision"] == "fp32")  # the resolved precision is in the key


def test_baseline_config_must_fit_the_task(task, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        config = EncoderConfig.uniform(vocab_size=VOCAB + 1, d_model=32, n_heads=2, n_layers=1, d_ff=32)
        load_or_train_baseline(config, task, "1", cache_dir=tmp_path)


def test_resolve_cache_dir_precedence(tmp_path: Path) -> None:
    env = {CACHE_ENV: str(tmp_path / "env")}
    assert resolve_cache_dir(tmp_path / "flag", env) == tmp_path / "flag"
    assert resolve_cache_dir(None, env) == tmp_path / "env"
    assert resolve_cache_dir(None, {}) == Path("~/.cache/prunebench").expanduser()
    assert Budget.parse("6") == Budget.parse(6)


def test_warm_start_sets_unigram_bias_and_sinusoidal_positions(task) -> None:
    from prunebench.tasks import warm_start_

    model = tiny()
    warm_start_(model, task)
    assert int(model.mlm_bias.argmax()) == task.trivial_prediction()
    rows = model.embed_positions.weight.detach()
    assert rows.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.allclose(rows[0, 1::2], torch.full_like(rows[0, 1::2], float(rows[0, 1])))  # cos(0) in every odd slot


def test_default_budget_follows_the_resolved_precision() -> None:
    from prunebench.tasks import default_budget

    assert str(default_budget("medium", "bf16")) == "400" and str(default_budget("medium", "fp32")) == "250"
    assert str(default_budget("small", "fp32")) == str(default_budget("small", "bf16")) == "480"
    assert str(default_budget("custom", "bf16")) == "300"


def test_cached_baseline_with_nan_weights_is_retrained(task, tmp_path: Path) -> None:
    config = tiny().config
    _, info = load_or_train_baseline(config, task, "3", cache_dir=tmp_path, lr=2e-3)
    weights = Path(info["path"]) / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["final_norm.weight"][0] = float("nan")
    save_file(tensors, str(weights))
    model, again = load_or_train_baseline(config, task, "3", cache_dir=tmp_path, lr=2e-3)
    assert not again["cache_hit"] and torch.isfinite(model.final_norm.weight).all()
