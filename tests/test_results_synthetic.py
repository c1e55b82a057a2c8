"""A synthetic run (hand-made rows) shared by the results, analysis and report tests, and checks of it.

The run has: dense; magnitude at 0.5 and 0.8 (zeros: no speedup, the degradation curve has two points);
structured@0.5 (shrunk: same speed at B=1, faster from B=2: a crossover); wanda@0.5 whose fidelity check
failed; nm2:4 whose B=4 cell failed; iterative@0.8 whose pruning failed (no cells, no evaluation).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from prunebench.results import ResultStore

BATCH_SIZES = (1, 2, 4)
SEQ_LEN = 32

_DENSE_MACS = 1_000_000
_DENSE_PARAMS = 100_000

#: name -> (method, sparsity, materialization, params, nonzero, effective macs, accuracy, fidelity ok, status)
_VARIANTS = {
    "dense": ("dense", 0.0, "dense", _DENSE_PARAMS, _DENSE_PARAMS, _DENSE_MACS, 0.86, None, "ok"),
    "magnitude@0.5": ("magnitude", 0.5, "zeros", _DENSE_PARAMS, 55_000, 520_000, 0.84, True, "ok"),
    "magnitude@0.8": ("magnitude", 0.8, "zeros", _DENSE_PARAMS, 28_000, 250_000, 0.71, True, "ok"),
    "structured@0.5": ("structured", 0.5, "shrunk", 52_000, 52_000, 500_000, 0.78, True, "ok"),
    "wanda@0.5": ("wanda", 0.5, "zeros", _DENSE_PARAMS, 55_000, 520_000, 0.85, False, "ok"),
    "nm2:4": ("nm", 0.5, "zeros", _DENSE_PARAMS, 55_000, 520_000, 0.83, True, "ok"),
    "iterative@0.8": ("iterative", 0.8, "zeros", None, None, None, None, None, "failed"),
}

#: name -> per batch size (speedup, ci_low, ci_high); None = a failed cell.
_SPEEDUPS: dict[str, tuple[Any, ...]] = {
    "dense": ((1.0, 1.0, 1.0),) * 3,
    "magnitude@0.5": ((0.99, 0.97, 1.02), (1.0, 0.98, 1.03), (0.98, 0.95, 1.01)),
    "magnitude@0.8": ((0.98, 0.96, 1.01), (0.97, 0.95, 0.99), (0.99, 0.97, 1.02)),
    "structured@0.5": ((1.05, 0.98, 1.12), (1.4, 1.3, 1.5), (1.7, 1.6, 1.8)),
    "wanda@0.5": ((1.0, 0.97, 1.03), (0.99, 0.96, 1.02), (1.01, 0.98, 1.04)),
    "nm2:4": ((0.9, 0.85, 0.95), (0.92, 0.88, 0.96), None),
}


def make_snapshot() -> dict[str, Any]:
    """The synthetic run as a store snapshot (plain data, deterministic)."""
    run = {
        "run_id": "synthetic-0001",
        "created": "2026-01-02T03:04:05+00:00",
        "status": "finished",
        "config": {
            "model": "small",
            "methods": ["magnitude", "structured", "wanda", "nm2:4", "iterative"],
            "sparsities": [0.5, 0.8],
            "batch_sizes": list(BATCH_SIZES),
            "seq_len": SEQ_LEN,
            "threads": 2,
            "seed": 0,
            "device": "cpu",
            "quick": True,
        },
        "environment": {
            "fingerprint_hash": "abc123",
            "torch": "2.13.0",
            "cpu_model": "Synthetic CPU <x86>",
            "threads": 2,
        },
        "corpus": {},
    }
    variants, evaluations, cells = [], [], []
    for name, (method, sp, mat, params, nonzero, eff, acc, fid_ok, status) in _VARIANTS.items():
        variants.append(
            {
                "name": name,
                "method": method,
                "requested_sparsity": sp,
                "measured_sparsity": None if status == "failed" else (sp + 0.004 if sp else 0.0),
                "materialization": mat,
                "params": params,
                "nonzero_params": nonzero,
                "encoder_params": None if params is None else params - 20_000,
                "disk_bytes": None if params is None else params * 4 + 1000,
                "macs": None if status == "failed" else (500_000 if mat == "shrunk" else _DENSE_MACS),
                "effective_macs": eff,
                "prune_seconds": 0.5,
                "fidelity": None if fid_ok is None else {"max_abs_diff": 1e-6 if fid_ok else 0.25, "ok": fid_ok},
                "status": status,
                "error": "RuntimeError: recovery fine-tuning diverged <nan>" if status == "failed" else None,
                "details": {"report": {"layers": 2}},
            }
        )
        if acc is not None:
            evaluations.append(
                {
                    "variant": name,
                    "accuracy": acc,
                    "loss": 1.0 - acc,
                    "agreement": 1.0 if name == "dense" else acc + 0.05,
                    "kl": 0.0 if name == "dense" else 0.02,
                    "cosine": 1.0 if name == "dense" else 0.97,
                    "trivial_accuracy": 0.5,
                    "metric_name": "accuracy",
                    "details": {},
                }
            )
        for i, b in enumerate(BATCH_SIZES):
            if name not in _SPEEDUPS:
                continue
            figures = _SPEEDUPS[name][i]
            base_ms = 2.0 * b + 1.0
            if figures is None:
                cells.append(_failed_cell(name, b))
                continue
            s, lo, hi = figures
            lat = base_ms / s
            cells.append(
                {
                    "variant": name,
                    "batch_size": b,
                    "seq_len": SEQ_LEN,
                    "status": "ok",
                    "error": None,
                    "latency_ms": lat,
                    "latency_p90_ms": lat * 1.1,
                    "latency_cv": 0.05,
                    "baseline_latency_ms": base_ms,
                    "speedup": s,
                    "speedup_ci_low": lo,
                    "speedup_ci_high": hi,
                    "flop_ideal_speedup": _DENSE_MACS / eff,
                    "throughput_samples_s": 1000.0 * b / lat,
                    "throughput_tokens_s": 1000.0 * b * SEQ_LEN / lat,
                    "peak_memory_bytes": int(1e6 * b * (0.6 if mat == "shrunk" else 1.0)),
                    "n_pairs": 30,
                    "timing": {"ratios": [s, lo, hi]},
                }
            )
    return {"schema_version": 2, "run": run, "variants": variants, "evaluations": evaluations, "cells": cells}


def _failed_cell(name: str, b: int) -> dict[str, Any]:
    return {
        "variant": name,
        "batch_size": b,
        "seq_len": SEQ_LEN,
        "status": "error",
        "error": "RuntimeError: out of memory & <boom>",
        "timing": {},
    }


def fill_store(run_dir: Path, snap: dict | None = None, finish: bool = True) -> Path:
    """Write a snapshot (default: the synthetic run) into ``run_dir/results.sqlite``; returns ``run_dir``."""
    snap = make_snapshot() if snap is None else snap
    run_dir.mkdir(parents=True, exist_ok=True)
    with ResultStore(run_dir / "results.sqlite") as store:
        store.start_run(snap["run"])
        for v in snap["variants"]:
            store.put_variant(v)
        for e in snap["evaluations"]:
            store.put_evaluation(e)
        for c in snap["cells"]:
            store.put_cell(c)
        if finish:
            store.set_run_status("finished")
    return run_dir


def test_synthetic_store_round_trips_every_record(tmp_path: Path) -> None:
    fill_store(tmp_path)
    expected = make_snapshot()
    with ResultStore(tmp_path / "results.sqlite", create=False) as store:
        got = store.snapshot()
    assert got["run"] == expected["run"]
    for kind in ("variants", "evaluations", "cells"):
        assert len(got[kind]) == len(expected[kind]) > 0
        for g, e in zip(got[kind], expected[kind], strict=True):
            # Every given field comes back equal; contract fields that were not given come back as None.
            assert {k: g[k] for k in e} == e
            # (a cell stored without a backend or node class is an eager one timed in-process: the key's defaults)
            assert all(g[k] is None for k in g.keys() - e.keys() - {"backend", "node_class"})
            assert kind != "cells" or (g["backend"], g["node_class"]) == ("eager", "local")


def test_snapshot_is_not_aliased(tmp_path: Path) -> None:
    # make_snapshot must hand out fresh data: tests mutate it.
    a = make_snapshot()
    b = copy.deepcopy(a)
    a["variants"][0]["name"] = "changed"
    assert make_snapshot() == b
