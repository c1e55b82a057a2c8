"""Sweeps and paired cells on tiny models: order, callbacks, identical inputs, failures recorded per cell."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from torch import nn

from prunebench.bench.inputs import forward_call, make_inputs
from prunebench.bench.settings import BENCH_PRESETS, BenchSettings, bench_settings
from prunebench.bench.sweep import bench_pair, bench_single, sweep
from prunebench.models.presets import create_model
from prunebench.results.cell import CellRecord

# allow_busy: these tests are about the sweep, not the machine (a busy shared machine would leave cells
# unmeasured); discarding busy blocks is tested in test_contention.py.
FAST = BenchSettings(warmup=1, min_time=0.0, min_pairs=2, max_time=0.5, target_ci=None, n_boot=50,
                     measure_memory=False, allow_busy=True)


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
                  progress=lambda done, total, cell: ticks.append((done, total, cell.variant)))
    # Returned in grid order; handed over as each one finishes (round-robin: any order).
    assert [(c.variant, c.batch_size) for c in cells] == [
        ("half", 1), ("same", 1), ("dense", 1), ("half", 2), ("same", 2), ("dense", 2)]
    assert sorted(got, key=cells.index) == cells and len(got) == 6
    assert ticks == [(i + 1, 6, c.variant) for i, c in enumerate(got)]
    for c in cells:
        assert c.ok and c.baseline == "dense" and c.seq_len == 8 and c.latency_ms is not None
        assert c.backend == "eager" and c.n_blocks >= FAST.min_blocks and c.timing["order"] == "ABBA/BAAB"
        assert c.throughput_tokens_s == pytest.approx(c.throughput_samples_s * 8)
        assert c.macs is not None and c.effective_macs == c.macs
        assert c.speedup_ci_low <= c.speedup <= c.speedup_ci_high
    # The baseline's own cell is timed against an identical twin: a measured noise floor, not a constant 1.
    dense = [c for c in cells if c.variant == "dense"]
    assert all(c.n_pairs >= FAST.min_pairs and c.flop_ideal_speedup == pytest.approx(1.0) for c in dense)
    half = cells[0]
    assert half.macs * 2 == dense[0].macs  # one of two layers
    assert half.flop_ideal_speedup == pytest.approx(2.0) and half.baseline_macs == dense[0].macs


def test_blocks_are_spread_round_robin_over_cells() -> None:
    log: list[str] = []

    class Tagged(Recorder):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            log.append(f"{self.tag}{ids.shape[0]}")
            return super().forward(ids, mask)

    settings = BenchSettings(**{**FAST.to_dict(), "min_blocks": 3, "block_pairs": 2, "block_warmup": 0})
    sweep({"dense": Tagged("d"), "x": Tagged("x")}, lambda bs, s: make_inputs(20, bs, s), batch_sizes=(1, 2),
          seq_lens=(4,), settings=settings)
    candidates = [t for t in log if t.startswith("x")]
    # x at B=1 and x at B=2 take turns block by block instead of one finishing before the other starts
    switches = sum(1 for p, q in itertools.pairwise(candidates) if p != q)
    assert switches >= 3  # one cell after the other would switch once


def test_zeros_flop_ideal_counts_nonzero_macs() -> None:
    from prunebench.pruning import PruneSpec, prune_

    dense = tiny()
    pruned = copy.deepcopy(dense)
    prune_(pruned, PruneSpec(method="magnitude", sparsity=0.5))
    cell = bench_pair(dense, pruned, 1, 8, settings=FAST, name="magnitude@0.5")
    # Stored as zeros: same dense MACs, but the FLOP-ideal counts only the non-zero weights (one meaning).
    assert cell.macs == cell.baseline_macs and cell.effective_macs < cell.macs
    assert cell.flop_ideal_speedup == pytest.approx(cell.baseline_macs / cell.effective_macs)
    assert cell.flop_ideal_speedup > 1.3


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
    by = {(c.variant, c.batch_size): c for c in cells}
    assert by[("bad", 1)].ok
    assert by[("bad", 2)].status == "error" and by[("bad", 2)].error == "RuntimeError: boom"
    assert by[("bad", 4)].status == "oom" and by[("bad", 4)].latency_ms is None
    # The baseline still gets measured (against its twin) when its only pair failed.
    assert by[("dense", 2)].ok and by[("dense", 2)].n_pairs >= 2
    assert len(cells) == 6


def test_failing_inputs_fail_that_shape_only() -> None:
    def input_fn(bs: int, s: int):
        if bs == 2:
            raise RuntimeError("out of memory while building inputs")
        return make_inputs(20, bs, s)

    cells = sweep({"dense": Recorder(), "x": Recorder()}, input_fn, batch_sizes=(1, 2), seq_lens=(4,), settings=FAST)
    assert [(c.variant, c.batch_size, c.status) for c in cells] == [
        ("x", 1, "ok"), ("dense", 1, "ok"), ("x", 2, "oom"), ("dense", 2, "oom")]
    assert cells[2].error.startswith("inputs: RuntimeError")


def test_bench_pair_and_single_directly() -> None:
    d = tiny()
    cell = bench_pair(d, copy.deepcopy(d), 2, 8, settings=FAST, name="copy")
    assert cell.ok and cell.variant == "copy" and cell.baseline == "dense" and cell.timing["order"] == "ABBA/BAAB"
    one = bench_single(d, 2, 8, settings=FAST)
    assert one.ok and one.variant == one.baseline == "dense" and one.n_pairs >= 2
    assert one.speedup_ci_low <= one.speedup <= one.speedup_ci_high


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


def test_cell_record_round_trips_through_json_and_the_store(tmp_path) -> None:
    from prunebench.results import ResultStore

    cell = bench_pair(tiny(), tiny(1), 1, 4, settings=FAST, name="half")
    again = CellRecord.from_row(json.loads(json.dumps(cell.to_row())))
    assert again == cell
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.start_run({"run_id": "r", "created": "now", "config": {}, "environment": {}})
        store.put_cell(cell)
        (stored,) = store.cell_records()
    assert stored == cell  # the store writes the record the bench produced, field for field
    with pytest.raises(ValueError, match="needs seq_len"):
        CellRecord.from_row({"variant": "x", "batch_size": 1})


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
