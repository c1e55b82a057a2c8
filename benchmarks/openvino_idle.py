"""Do OpenVINO's idle threads slow the eager calls they are interleaved with? (A benchmark, not a test.)

Paired timing interleaves the two runnables call after call (dense eager, then the candidate on its backend).
A runtime whose worker threads keep spinning after a call returns would steal the cores from the next eager
call, and every speedup against dense eager would be inflated. So this script times dense ``medium`` (random
init, B=1, seq 128, pinned threads) on eager **alone**, in rounds of ``--calls`` back-to-back calls, and
**interleaved** with OpenVINO calls (eager, openvino, eager, ...), and compares the eager call times of the two
(the same for OpenVINO alone and interleaved). A ratio near 1 says the interleaving costs neither side. Each
OpenVINO output is checked against eager first (max |diff| <= 1e-4, the backend's own tolerance).

    python benchmarks/openvino_idle.py       # -> benchmarks/results/openvino_idle.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunebench.backends import BACKENDS, PrepareOptions, check_fidelity
from prunebench.bench import environment, make_inputs
from prunebench.bench.timing import pinned_threads
from prunebench.models.presets import create_model

OUT = Path(__file__).parent / "results" / "openvino_idle.json"


def _round(calls: list[Callable[[], Any]], n: int) -> list[list[float]]:
    """``n`` passes over ``calls`` (one after the other); the seconds of each call, per callable."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(n):
        for i, call in enumerate(calls):
            t0 = time.perf_counter()
            call()
            times[i].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=30, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dense = create_model("medium").eval()
    batch = make_inputs(dense.config.vocab_size, 1, 128, seed=0)
    opts = PrepareOptions(threads=args.threads, shapes=((1, 128),))
    eager = BACKENDS.get("eager").prepare(dense, opts).bind(batch)
    runnable = BACKENDS.get("openvino").prepare(dense, opts)
    fidelity = check_fidelity(runnable, dense, batch)
    if not fidelity.ok:
        raise SystemExit(f"openvino does not match eager: {fidelity}")
    ov = runnable.bind(batch)
    load_start = os.getloadavg()[0]
    rounds: list[dict[str, float]] = []
    with pinned_threads(args.threads):
        for _ in range(3):  # warm both
            eager(), ov()
        for _ in range(args.rounds):
            (e_alone,) = _round([eager], args.calls)
            (o_alone,) = _round([ov], args.calls)
            e_mixed, o_mixed = _round([eager, ov], args.calls)
            rounds.append({"eager_alone_ms": float(np.median(e_alone) * 1e3),
                           "eager_interleaved_ms": float(np.median(e_mixed) * 1e3),
                           "openvino_alone_ms": float(np.median(o_alone) * 1e3),
                           "openvino_interleaved_ms": float(np.median(o_mixed) * 1e3)})
    eager_ratio = [r["eager_interleaved_ms"] / r["eager_alone_ms"] for r in rounds]
    ov_ratio = [r["openvino_interleaved_ms"] / r["openvino_alone_ms"] for r in rounds]
    result = {
        "model": "medium", "batch_size": 1, "seq_len": 128, "threads": args.threads, "calls": args.calls,
        "fidelity": {"max_abs": fidelity.max_abs, "cosine": fidelity.cosine}, "rounds": rounds,
        "eager_interleaved_over_alone": {"median": float(np.median(eager_ratio)), "min": min(eager_ratio),
                                          "max": max(eager_ratio)},
        "openvino_interleaved_over_alone": {"median": float(np.median(ov_ratio)), "min": min(ov_ratio),
                                             "max": max(ov_ratio)},
        "load_1m": [load_start, os.getloadavg()[0]], "environment": environment(),
    }
    for r in rounds:
        print(f"eager alone {r['eager_alone_ms']:.2f} ms, interleaved {r['eager_interleaved_ms']:.2f} ms; "
              f"openvino alone {r['openvino_alone_ms']:.2f} ms, interleaved {r['openvino_interleaved_ms']:.2f} ms")
    e, o = result["eager_interleaved_over_alone"], result["openvino_interleaved_over_alone"]
    print(f"eager interleaved / alone: median {e['median']:.3f} [{e['min']:.3f}-{e['max']:.3f}]; "
          f"openvino: {o['median']:.3f} [{o['min']:.3f}-{o['max']:.3f}]; load {result['load_1m']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
