"""Sweeps and paired cells on tiny models: order, callbacks, identical inputs, failures recorded per cell."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from prunebench.bench.inputs import forward_call, make_inputs
from prunebench.bench.records import CellResult
from prunebench.bench.settings import BENCH_PRESETS, BenchSettings, bench_settings
from prunebench.bench.sweep import bench_pair, bench_single, sweep
from prunebench.models.presets import create_model

FAST = BenchSettings(warmup=1, min_time=0.0, min_pairs=2, max_time=0.5, target_ci=None, n_boot=50,
                     measure_memory=False)


def tiny(n_layers: int = 2, **kw):
    return create_model("custom", vocab_size=50, d_model=16, n_heads=2, n_layers=n_layers, d_ff=32, **kw).eval()


class Recorder(nn.Module):
    """Records the inputs it is called with; fails on chosen batch sizes."""

    def __init__(self, fail_on: dict[int, Exception] | None = None) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fail_on = fail_on or {}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if ids.shape[0] in self.fail_on:
            raise self.fail_on[ids.shape[0]]
        self.seen.append((ids, mask))
        return ids.float().sum()


def test_sweep_order_callbacks_and_baseline_cell() -> None:
    models = {"dense": tiny(), "half": tiny(1), "same": tiny()}
    got, ticks = [], []
    cells = sweep(models, batch_sizes=(1, 2), seq_lens=(8,), settings=FAST, on_cell=got.append,
                  progress=lambda done, total, cell: ticks.append((done, total, cell.model)))
    assert [(c.model, c.batch_size) for c in cells] == [
        ("half", 1), ("same", 1), ("dense", 1), ("half", 2), ("same", 2), ("dense", 2)]
    assert got == cells
    assert ticks == [(i + 1, 6, c.model) for i, c in enumerate(cells)]
    for c in cells:
        assert c.ok and c.baseline == "dense" and c.seq_len == 8 and c.latency is not None
        assert c.tokens_per_s == pytest.approx(c.samples_per_s * 8)
        assert c.macs is not None and c.macs_effective == c.macs
    dense = [c for c in cells if c.model == "dense"]
    assert all(c.speedup == 1.0 and c.comparison is None for c in dense)
    # The baseline cell pools the baseline side of both paired runs at its shape.
    pairs = [c for c in cells if c.batch_size == 1 and c.model != "dense"]
    assert dense[0].latency.n == sum(c.comparison.baseline.n for c in pairs)
    half = cells[0]
    assert half.n_pairs >= 2 and half.ci_low <= half.speedup <= half.ci_high
    assert half.macs * 2 == dense[0].macs  # one of two layers


def test_identical_inputs_for_every_model() -> None:
    a, b = Recorder(), Recorder()
    sweep({"dense": a, "b": b}, lambda bs, s: make_inputs(20, bs, s, seed=3), batch_sizes=(2,), seq_lens=(4,),
          settings=FAST)
    assert a.seen and b.seen
    ids = a.seen[0][0]
    assert all(torch.equal(x, ids) for x, _ in a.seen + b.seen)


def test_failing_cell_is_recorded_and_sweep_goes_on() -> None:
    bad = Recorder(fail_on={2: RuntimeError("boom\nsecond line"), 4: torch.OutOfMemoryError("CPU out of memory")})
    cells = sweep({"dense": Recorder(), "bad": bad}, lambda bs, s: make_inputs(20, bs, s, seed=0),
                  batch_sizes=(1, 2, 4), seq_lens=(4,), settings=FAST)
    by = {(c.model, c.batch_size): c for c in cells}
    assert by[("bad", 1)].ok
    assert by[("bad", 2)].status == "error" and by[("bad", 2)].message == "RuntimeError: boom"
    assert by[("bad", 4)].status == "oom" and by[("bad", 4)].latency is None
    # The baseline still gets measured on its own when its only pair failed.
    assert by[("dense", 2)].ok and by[("dense", 2)].latency.n >= 2
    assert len(cells) == 6


def test_failing_inputs_fail_that_shape_only() -> None:
    def input_fn(bs: int, s: int):
        if bs == 2:
            raise RuntimeError("out of memory while building inputs")
        return make_inputs(20, bs, s)

    cells = sweep({"dense": Recorder(), "x": Recorder()}, input_fn, batch_sizes=(1, 2), seq_lens=(4,), settings=FAST)
    assert [(c.model, c.batch_size, c.status) for c in cells] == [
        ("x", 1, "ok"), ("dense", 1, "ok"), ("x", 2, "oom"), ("dense", 2, "oom")]
    assert cells[2].message.startswith("inputs: RuntimeError")


def test_bench_pair_and_single_directly() -> None:
    d = tiny()
    cell = bench_pair(d, copy.deepcopy(d), 2, 8, settings=FAST, name="copy")
    assert cell.ok and cell.model == "copy" and cell.baseline == "dense" and cell.comparison.order == "ABBA"
    one = bench_single(d, 2, 8, settings=FAST)
    assert one.ok and one.speedup == 1.0 and one.latency.n >= 2


def test_include_head_is_recorded_and_changes_the_call() -> None:
    d = tiny()
    heads = bench_pair(d, d, 1, 8, settings=BenchSettings(**{**FAST.to_dict(), "include_head": True}))
    plain = bench_pair(d, d, 1, 8, settings=FAST)
    assert heads.include_head and not plain.include_head
    assert heads.macs > plain.macs
    batch = make_inputs(50, 1, 8)
    assert forward_call(d, batch)().shape == (1, 8, 16)  # encoder only
    assert forward_call(d, batch, include_head=True)().shape == (1, 8, 50)  # MLM logits


def test_memory_measured_when_asked() -> None:
    cell = bench_pair(tiny(), tiny(1), 2, 8, settings=BenchSettings(**{**FAST.to_dict(), "measure_memory": True}))
    assert cell.peak_memory_bytes and cell.peak_memory_bytes >= 2 * 8 * 16 * 4  # at least the output


def test_bad_sweep_arguments() -> None:
    models = {"dense": tiny()}
    with pytest.raises(ValueError, match="choose from: dense"):
        sweep(models, baseline="base", settings=FAST)
    for sizes in ((0,), (-1,), (1.5,), ()):
        with pytest.raises(ValueError):
            sweep(models, batch_sizes=sizes, settings=FAST)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            sweep(models, settings=BenchSettings(device="cuda"))
    with pytest.raises(ValueError, match="unknown device"):
        BenchSettings(device="tpu")


def test_cell_json_round_trip() -> None:
    cell = bench_pair(tiny(), tiny(1), 1, 4, settings=FAST, name="half")
    again = CellResult.from_dict(json.loads(json.dumps(cell.to_dict())))
    assert again == cell and again.comparison.baseline == cell.comparison.baseline
    with pytest.raises(ValueError, match="schema_version"):
        CellResult.from_dict({**cell.to_dict(), "schema_version": 99})
    with pytest.raises(ValueError, match="unknown CellResult keys: bogus"):
        CellResult.from_dict({**cell.to_dict(), "bogus": 1})


def test_make_inputs_is_seeded_and_pads_realistically() -> None:
    a = make_inputs(100, 64, 32, seed=1, pad_fraction=0.25)
    b = make_inputs(100, 64, 32, seed=1, pad_fraction=0.25)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], make_inputs(100, 64, 32, seed=2, pad_fraction=0.25)["input_ids"])
    ids, mask = a["input_ids"], a["attention_mask"]
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (64, 32)
    assert 0.15 < 1 - mask.float().mean().item() < 0.35
    assert (mask.sum(1) >= 1).all() and len(set(mask.sum(1).tolist())) > 3  # varied lengths
    assert (ids[mask == 0] == 0).all() and (ids[mask == 1] >= 1).all() and (ids < 100).all()
    assert (mask[:, 1:] <= mask[:, :-1]).all()  # padding at the end
    assert make_inputs(100, 4, 8)["attention_mask"].all()
    assert 0.8 < 1 - make_inputs(100, 256, 64, pad_fraction=0.9)["attention_mask"].float().mean() < 0.95
    for bad in ({"pad_fraction": 1.0}, {"pad_fraction": -0.1}):
        with pytest.raises(ValueError):
            make_inputs(100, 4, 8, **bad)
    with pytest.raises(ValueError):
        make_inputs(100, 0, 8)


def test_settings_presets_and_validation() -> None:
    assert set(BENCH_PRESETS.names()) >= {"quick", "default", "precise"}
    quick = bench_settings("quick", threads=1, min_time=None)
    assert quick.threads == 1 and quick.min_time == BENCH_PRESETS.get("quick").min_time
    assert BenchSettings.from_dict(quick.to_dict()) == quick
    with pytest.raises(ValueError, match="choose from"):
        bench_settings("fast")
    with pytest.raises(ValueError, match="unknown bench setting"):
        bench_settings("quick", speed=1)
    with pytest.raises(ValueError):
        BenchSettings(min_pairs=5, max_pairs=4)


def test_forward_call_drops_only_a_mask_without_padding(tiny_model) -> None:
    model = tiny_model.eval()
    full = make_inputs(model.config.vocab_size, 2, 16, seed=3)
    padded = make_inputs(model.config.vocab_size, 4, 16, seed=3, pad_fraction=0.4)
    assert full["attention_mask"].all() and not padded["attention_mask"].all()
    with torch.inference_mode():
        torch.testing.assert_close(forward_call(model, full)(), model.encode(full["input_ids"], full["attention_mask"]))
        torch.testing.assert_close(forward_call(model, full)(), model.encode(full["input_ids"]), rtol=0, atol=0)
        with_mask = model.encode(padded["input_ids"], padded["attention_mask"])
        assert torch.equal(forward_call(model, padded)(), with_mask)
        assert not torch.allclose(with_mask, model.encode(padded["input_ids"]))  # the padding mask still applies
