"""Does gradual pruning with recovery keep more accuracy than one-shot? (A benchmark, not a test.)

On the trained (cached) dense baseline, at each sparsity: one-shot magnitude; one-shot magnitude followed by
the same number of fine-tuning steps (the control that separates "gradual" from "more training"); and
iterative magnitude (cubic schedule) with recovery fine-tuning between steps. Prints a table and writes JSON.

    python benchmarks/accuracy_recovery.py --model small --steps 10 --finetune 30
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

from prunebench.bench import environment
from prunebench.models import preset_config
from prunebench.pruning import PruneSpec, prune_
from prunebench.tasks import RecoveryCallback, build_task, evaluate, finetune
from prunebench.tasks.baseline import load_or_train_baseline, resolve_cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", choices=("small", "medium"))
    parser.add_argument("--sparsities", default="0.5,0.9")
    parser.add_argument("--steps", type=int, default=10, help="iterative pruning steps")
    parser.add_argument("--finetune", type=int, default=30, help="recovery fine-tuning steps per pruning step")
    parser.add_argument("--cache-dir", default=None, help="default: $PRUNEBENCH_CACHE or ~/.cache/prunebench")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "accuracy_recovery.json")
    args = parser.parse_args()
    cache = resolve_cache_dir(args.cache_dir, os.environ)
    task = build_task("mlm", vocab_size=preset_config(args.model).vocab_size, cache_dir=cache)
    dense, info = load_or_train_baseline(args.model, task, cache_dir=cache)
    base = evaluate(dense, task)
    print(f"dense {args.model}: accuracy {base.accuracy:.4f} (trivial {base.trivial_accuracy:.4f}), "
          f"{info['steps']} training steps, cache hit {info['cache_hit']}")
    total_ft = args.steps * args.finetune
    rows = []

    def record(label: str, sparsity: float, ft_steps: int, model, seconds: float) -> None:
        r = evaluate(model, task, reference=dense)
        rows.append({"method": label, "sparsity": sparsity, "finetune_steps": ft_steps, "accuracy": r.accuracy,
                     "agreement": r.agreement, "kl": r.kl_divergence, "seconds": seconds})
        print(f"{label:<44} s={sparsity:.2f}  ft={ft_steps:>4}  acc {r.accuracy:.4f}  "
              f"agree {r.agreement:.3f}  kl {r.kl_divergence:.3f}  ({seconds:.0f} s)")

    for sparsity in (float(s) for s in args.sparsities.split(",")):
        t0 = time.perf_counter()
        one_shot = copy.deepcopy(dense)
        prune_(one_shot, PruneSpec(method="magnitude", sparsity=sparsity))
        record("one-shot magnitude", sparsity, 0, one_shot, time.perf_counter() - t0)
        t0 = time.perf_counter()
        finetune(one_shot, task, total_ft)
        record("one-shot magnitude + fine-tune (same steps)", sparsity, total_ft, one_shot, time.perf_counter() - t0)
        t0 = time.perf_counter()
        gradual = copy.deepcopy(dense)
        spec = PruneSpec(method="iterative", sparsity=sparsity, steps=args.steps, schedule="cubic")
        prune_(gradual, spec, on_step=RecoveryCallback(task, args.finetune))
        record("iterative magnitude (cubic) + recovery", sparsity, total_ft, gradual, time.perf_counter() - t0)
    doc = {"benchmark": "accuracy_recovery", "model": args.model, "steps": args.steps, "finetune": args.finetune,
           "dense_accuracy": base.accuracy, "trivial_accuracy": base.trivial_accuracy,
           "environment": environment(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
