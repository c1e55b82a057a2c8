"""Do the speedup CIs hold across reruns? (A benchmark, not a test.)

The same three pairs on ``medium`` at one batch size (dense against an identical twin, structured 50% heads +
neurons shrunk, the first half of the layers) are measured by the one sweep (``prunebench.bench.sweep``, the
budget of ``prunebench run``) in ``--runs`` separate processes, one after the other. For each cell it reports
how often a run's CI holds the median pooled over all runs (all runs' per-pair ratios together) and the CI
half-widths. Targets (issue 14): >= 90% of cells hold the pooled median, half-width <= +-4% at B=1.

Usage: python benchmarks/rerun_stability.py [--runs 5] [--batch-size 1] [--seq-len 128] [--threads 2]
Writes benchmarks/results/rerun_stability.json. Run it under the shared lock:
``flock /tmp/prunebench-bench.lock python benchmarks/rerun_stability.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunebench.bench import environment, fingerprint_hash, sweep
from prunebench.bench.settings import bench_settings
from prunebench.models.presets import create_model
from prunebench.pruning import PruneSpec, prune_

OUT = Path(__file__).parent / "results" / "rerun_stability.json"
CELLS = ("dense", "structured@0.5", "half_layers")


def _child(args: argparse.Namespace) -> None:
    """One run: build the three models, sweep them once, print the cells as JSON on stdout."""
    torch.manual_seed(0)
    dense = create_model("medium", seed=0).eval()
    structured = copy.deepcopy(dense)
    prune_(structured, PruneSpec(method="structured", sparsity=0.5, granularity="both"))
    half = copy.deepcopy(dense)
    half.layers = nn.ModuleList(list(half.layers)[: len(half.layers) // 2])
    models = {"dense": dense, "structured@0.5": structured.eval(), "half_layers": half.eval()}
    # The budget `prunebench run` uses by default (runner/budgets.py: preset "default", min_time 0.5).
    settings = bench_settings("default", min_time=args.min_time, threads=args.threads, seed=args.seed)
    cells = sweep(models, batch_sizes=(args.batch_size,), seq_lens=(args.seq_len,), settings=settings)
    print(json.dumps([c.to_row() for c in cells]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    start = time.perf_counter()
    runs = []
    for run in range(args.runs):
        argv = [sys.executable, __file__, "--child", "--batch-size", str(args.batch_size), "--seq-len",
                str(args.seq_len), "--threads", str(args.threads), "--min-time", str(args.min_time),
                "--seed", str(args.seed + run)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        cells = {c["variant"]: c for c in json.loads(proc.stdout.strip().splitlines()[-1])}
        bad = [f"{n}: {c['status']} ({c.get('error')})" for n, c in cells.items() if c["status"] != "ok"]
        if bad:  # e.g. unmeasured: the machine was busy (this benchmark needs a quiet one)
            raise SystemExit(f"run {run}: " + "; ".join(bad))
        runs.append(cells)
        print(f"run {run}: " + "  ".join(
            f"{n} {cells[n]['speedup']:.3f} [{cells[n]['speedup_ci_low']:.3f}, {cells[n]['speedup_ci_high']:.3f}]"
            f" {cells[n]['n_blocks']}blk{' CONTENDED' if cells[n]['contended'] else ''}" for n in CELLS), flush=True)
    wall = time.perf_counter() - start

    per_cell = {}
    held_total = 0
    for name in CELLS:
        pooled = float(np.median([r for run in runs for r in run[name]["timing"]["ratios"]]))
        rows = [run[name] for run in runs]
        held = [r["speedup_ci_low"] <= pooled <= r["speedup_ci_high"] for r in rows]
        half = [(r["speedup_ci_high"] - r["speedup_ci_low"]) / 2 / r["speedup"] for r in rows]
        held_total += sum(held)
        per_cell[name] = {
            "pooled_median": pooled, "speedups": [r["speedup"] for r in rows],
            "cis": [[r["speedup_ci_low"], r["speedup_ci_high"]] for r in rows], "ci_holds_pooled": held,
            "ci_half_width_rel": half, "max_ci_half_width_rel": max(half), "n_pairs": [r["n_pairs"] for r in rows],
            "n_blocks": [r["n_blocks"] for r in rows], "contended": [r["contended"] for r in rows],
            "load_1m": [r["load_1m_after"] for r in rows],
        }
    n_cells = len(CELLS) * len(runs)
    summary = {
        "coverage": held_total / n_cells,
        "coverage_target_met": held_total / n_cells >= 0.9,
        "max_ci_half_width_rel": max(c["max_ci_half_width_rel"] for c in per_cell.values()),
        "half_width_target_met": all(c["max_ci_half_width_rel"] <= 0.04 for c in per_cell.values()),
        "contended_cells": sum(sum(c["contended"]) for c in per_cell.values()),
        "wall_s": wall,
    }
    env = environment("cpu", threads=args.threads)
    doc = {"benchmark": "rerun_stability", "command": " ".join(["python", *sys.argv]), "model": "medium",
           "batch_size": args.batch_size, "seq_len": args.seq_len, "runs": args.runs, "summary": summary,
           "cells": per_cell, "environment": env, "fingerprint": fingerprint_hash(env)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
