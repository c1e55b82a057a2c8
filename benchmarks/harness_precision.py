"""How precise is the paired timing harness on this machine? (A benchmark, not a test.)

Times ``medium`` (encoder only) against an identical copy of itself and against a copy keeping the first
half of its layers, ``--reps`` times each, alternating the two comparisons. Targets (issue 4):

* identical copy: speedup 1.00 with a 95% CI half-width <= 3% in every repetition;
* half-layer copy: the repetitions agree within their CIs (all intervals share a point);
* measured / FLOP-ideal speedup of the half-layer copy reported.

For contrast, each identical-copy repetition also times the two models the naive way (two separate loops,
ratio of mean latencies), which is what drifts on a shared machine.

Usage: python benchmarks/harness_precision.py [--batch-size 4] [--seq-len 128] [--threads N] [--reps 5]
Writes benchmarks/results/harness_precision.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from _common import add_timing_args, timing_kwargs
from torch import nn

from prunebench.bench import environment, fingerprint_hash, forward_call, make_inputs, measure, time_paired
from prunebench.bench.flops import flop_ideal_speedup
from prunebench.models.presets import create_model

OUT = Path(__file__).parent / "results" / "harness_precision.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    add_timing_args(parser, threads=None, min_time=4.0, max_time=20.0, target_ci=0.01, unit="run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    dense = create_model("medium", seed=0).eval()
    same = copy.deepcopy(dense)
    half = copy.deepcopy(dense)
    half.layers = nn.ModuleList(list(half.layers)[: len(half.layers) // 2])
    batch = make_inputs(dense.config.vocab_size, args.batch_size, args.seq_len, seed=0)
    f_dense, f_same, f_half = (forward_call(m, batch) for m in (dense, same, half))
    budget = timing_kwargs(args, min_pairs=20)
    ideal = flop_ideal_speedup(dense, half, args.batch_size, args.seq_len)

    runs: dict[str, list[dict]] = {"identical": [], "half_layers": []}
    start = time.perf_counter()
    for rep in range(args.reps):
        for label, fn in (("identical", f_same), ("half_layers", f_half)):
            res = time_paired(f_dense, fn, seed=rep, **budget)
            row = {
                "rep": rep, "speedup": res.speedup, "ci_low": res.ci_low, "ci_high": res.ci_high,
                "ci_half_width_rel": res.ci_half_width_rel, "n_pairs": res.n_pairs, "stop_reason": res.stop_reason,
                "baseline_median_ms": res.baseline.median * 1e3, "candidate_median_ms": res.candidate.median * 1e3,
                "baseline_cv": res.baseline.cv, "candidate_cv": res.candidate.cv,
            }
            if label == "identical":
                # The naive method for contrast: two separate loops, ratio of means.
                a = measure(f_dense, warmup=2, min_time=1.5, min_iters=10, max_time=10, threads=args.threads)
                b = measure(f_same, warmup=2, min_time=1.5, min_iters=10, max_time=10, threads=args.threads)
                row["naive_ratio_of_means"] = a.mean / b.mean
            else:
                row["measured_over_ideal"] = res.speedup / ideal
            runs[label].append(row)
            print(f"rep {rep} {label:12s} speedup {res.speedup:.3f} [{res.ci_low:.3f}, {res.ci_high:.3f}] "
                  f"+-{100 * res.ci_half_width_rel:.1f}% pairs {res.n_pairs} ({res.stop_reason})"
                  + (f" naive {row['naive_ratio_of_means']:.3f}" if label == "identical" else ""), flush=True)
    wall = time.perf_counter() - start

    ident, halves = runs["identical"], runs["half_layers"]
    overlap_lo, overlap_hi = max(r["ci_low"] for r in halves), min(r["ci_high"] for r in halves)
    pairs = [(x, y) for i, x in enumerate(halves) for y in halves[i + 1:]]
    overlapping = sum(max(x["ci_low"], y["ci_low"]) <= min(x["ci_high"], y["ci_high"]) for x, y in pairs)
    summary = {
        "identical_max_ci_half_width_rel": max(r["ci_half_width_rel"] for r in ident),
        "identical_max_abs_deviation": max(abs(r["speedup"] - 1.0) for r in ident),
        "identical_all_cis_contain_1": all(r["ci_low"] <= 1.0 <= r["ci_high"] for r in ident),
        "identical_target_met": all(r["ci_half_width_rel"] <= 0.03 and abs(r["speedup"] - 1) <= 0.03 for r in ident),
        "naive_ratio_range": [min(r["naive_ratio_of_means"] for r in ident),
                              max(r["naive_ratio_of_means"] for r in ident)],
        "half_speedups": [r["speedup"] for r in halves],
        "half_cis_common_point": overlap_lo <= overlap_hi,
        "half_ci_intersection": [overlap_lo, overlap_hi],
        "half_pairwise_ci_overlaps": f"{overlapping}/{len(pairs)}",
        "half_flop_ideal_speedup": ideal,
        "half_measured_over_ideal_median": sorted(r["measured_over_ideal"] for r in halves)[len(halves) // 2],
        "wall_s": wall,
    }
    env = environment("cpu", threads=args.threads or torch.get_num_threads())
    doc = {"benchmark": "harness_precision", "command": " ".join(["python", *sys.argv]), "model": "medium",
           "batch_size": args.batch_size,
           "seq_len": args.seq_len, "budget": budget, "environment": env, "fingerprint": fingerprint_hash(env),
           "runs": runs, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
