"""Does structured pruning deliver its FLOP-ideal speedup? (A benchmark, not a test.)

``medium`` dense against three physically shrunk copies, timed paired and interleaved (ABBA, the
measurement harness's ``time_paired``) on the encoder at batch 1 and 16, sequence 128:

* structured 50% of heads and FFN neurons (l1 norms, per layer),
* structured 50% of the layers,
* both of the above.

Each speedup is printed beside its FLOP-ideal speedup (dense MACs / pruned MACs, ``bench.flops``) and their
ratio. Target (issue 3): realized / ideal >= 0.9. Before timing, every shrunk model is checked against its
masked (zeroed) reference with ``check_fidelity``.

A control separates our model code from what the hardware gives at these shapes: the same weights run
through a bare functional forward (``F.linear``/``F.layer_norm``/SDPA on plain tensors, no modules, no
mask handling), timed the same way. ``model code efficiency`` = our speedup / the control's speedup; 1.0
means our modules add no overhead that the pruned model pays more for than the dense one.

Measured on this project's 2-core AMX Xeon (torch 2.13.0 CPU): with 1 thread every variant meets the target
(B=1: 0.929 heads+neurons, 0.980 layers, 0.905 both; the control reaches 0.948, the 0.93-0.95 the issue
quotes). With 2 threads, B=1 heads+neurons gives 0.877-0.910 over three runs against a control of
0.892-0.931: at these shapes and thread count the hardware's ceiling sits at the target; our model code keeps
98-99% of it (95-97% for the two-narrow-layer "both" model).

Usage: python benchmarks/structured_speedup.py [--threads 2] [--batch-sizes 1,16] [--min-time 3] [--out F]
Writes benchmarks/results/structured_speedup.json (the 1-thread run: structured_speedup_1thread.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import add_timing_args, timing_kwargs

from prunebench.bench import environment, forward_call, make_inputs, time_paired
from prunebench.bench.flops import flop_ideal_speedup, forward_macs
from prunebench.models.presets import create_model
from prunebench.pruning import PruneSpec, apply_plan_, check_fidelity, plan_pruning

OUT = Path(__file__).parent / "results" / "structured_speedup.json"

VARIANTS = {
    "heads+neurons 50%": [PruneSpec(method="structured", sparsity=0.5, granularity="both")],
    "layers 50%": [PruneSpec(method="structured", sparsity=0.5, granularity="layers")],
    "heads+neurons 50% + layers 50%": [PruneSpec(method="structured", sparsity=0.5, granularity="both"),
                                       PruneSpec(method="structured", sparsity=0.5, granularity="layers")],
}


def _shrunk(dense: torch.nn.Module, specs: list[PruneSpec], batch: dict) -> tuple[torch.nn.Module, float]:
    """Apply the specs in turn (shrinking); return the model and the worst masked-vs-shrunk difference."""
    model, worst = copy.deepcopy(dense), 0.0
    for spec in specs:
        p = plan_pruning(model, spec)
        masked = copy.deepcopy(model)
        apply_plan_(masked, p, "zeros")
        apply_plan_(model, p, "shrink")
        fid = check_fidelity(masked, model, batch)
        if not fid["ok"]:
            raise SystemExit(f"fidelity check failed for {spec}: {fid}")
        worst = max(worst, fid["max_abs_diff"])
    return model.eval(), worst


def functional_forward(model: torch.nn.Module, input_ids: torch.Tensor):
    """A bare re-implementation of ``model.encode`` on ``model``'s weights (the control; no padding)."""
    tok, pos = model.embed_tokens.weight.detach(), model.embed_positions.weight.detach()
    eps = model.final_norm.eps
    layers = []
    for layer in model.layers:
        a, f = layer.attn, layer.ffn
        layers.append([t.detach() for t in (
            layer.norm1.weight, layer.norm1.bias, a.qkv_proj.weight, a.qkv_proj.bias, a.out_proj.weight,
            a.out_proj.bias, layer.norm2.weight, layer.norm2.bias, f.fc_in.weight, f.fc_in.bias,
            f.fc_out.weight, f.fc_out.bias)] + [a.n_heads, a.head_dim])
    fw, fb = model.final_norm.weight.detach(), model.final_norm.bias.detach()
    B, S = input_ids.shape
    D = tok.shape[1]

    def run() -> torch.Tensor:
        x = F.embedding(input_ids, tok) + pos[:S]  # [B, S, D]
        for n1w, n1b, qw, qb, ow, ob, n2w, n2b, iw, ib, uw, ub, H, Dh in layers:
            h = F.layer_norm(x, (D,), n1w, n1b, eps)
            q, k, v = F.linear(h, qw, qb).view(B, S, 3 * H, Dh).transpose(1, 2).split(H, dim=1)
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, S, H * Dh)
            x = x + F.linear(y, ow, ob)
            h = F.layer_norm(x, (D,), n2w, n2b, eps)
            x = x + F.linear(F.gelu(F.linear(h, iw, ib)), uw, ub)
        return F.layer_norm(x, (D,), fw, fb, eps)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--seq-len", type=int, default=128)
    add_timing_args(parser, threads=2, min_time=3.0, max_time=20.0, target_ci=0.02, unit="cell")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    dense = create_model("medium", seed=0).eval()
    check = make_inputs(dense.config.vocab_size, 2, 32, seed=1)
    models = {name: _shrunk(dense, specs, check) for name, specs in VARIANTS.items()}
    timing = timing_kwargs(args, min_pairs=10)
    rows = []
    start = time.perf_counter()
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        batch = make_inputs(dense.config.vocab_size, bs, args.seq_len, seed=0)
        f_dense = forward_call(dense, batch)
        c_dense = functional_forward(dense, batch["input_ids"])
        with torch.inference_mode():  # the control must compute what the model computes
            torch.testing.assert_close(c_dense(), f_dense(), rtol=1e-4, atol=1e-4)
        for name, (model, fid) in models.items():
            f_model, c_model = forward_call(model, batch), functional_forward(model, batch["input_ids"])
            with torch.inference_mode():
                torch.testing.assert_close(c_model(), f_model(), rtol=1e-4, atol=1e-4)
            res = time_paired(f_dense, f_model, **timing)
            ctl = time_paired(c_dense, c_model, **timing)
            ideal = flop_ideal_speedup(dense, model, bs, args.seq_len)
            row = {
                "variant": name, "batch_size": bs, "seq_len": args.seq_len, "speedup": res.speedup,
                "ci_low": res.ci_low, "ci_high": res.ci_high, "n_pairs": res.n_pairs, "stop_reason": res.stop_reason,
                "flop_ideal_speedup": ideal, "realized_over_ideal": res.speedup / ideal,
                "control_speedup": ctl.speedup, "control_ci": [ctl.ci_low, ctl.ci_high],
                "control_over_ideal": ctl.speedup / ideal, "model_code_efficiency": res.speedup / ctl.speedup,
                "dense_median_ms": res.baseline.median * 1e3, "pruned_median_ms": res.candidate.median * 1e3,
                "dense_macs": forward_macs(dense, bs, args.seq_len),
                "pruned_macs": forward_macs(model, bs, args.seq_len),
                "pruned_layers": [[layer.n_heads, layer.d_ff] for layer in model.config.layers],
                "fidelity_max_abs_diff": fid, "load_avg_1min": os.getloadavg()[0],
            }
            rows.append(row)
            print(f"bs {bs:3d}  {name:32s} speedup {res.speedup:5.2f} [{res.ci_low:.2f}, {res.ci_high:.2f}]  "
                  f"ideal {ideal:5.2f}  realized/ideal {row['realized_over_ideal']:.3f}  "
                  f"control/ideal {row['control_over_ideal']:.3f}  code eff. {row['model_code_efficiency']:.3f}  "
                  f"({res.n_pairs} pairs, {res.stop_reason}, load {row['load_avg_1min']:.1f})", flush=True)
    summary = {"min_realized_over_ideal": min(r["realized_over_ideal"] for r in rows),
               "min_control_over_ideal": min(r["control_over_ideal"] for r in rows),
               "min_model_code_efficiency": min(r["model_code_efficiency"] for r in rows),
               "target": 0.9, "met": all(r["realized_over_ideal"] >= 0.9 for r in rows),
               "wall_s": time.perf_counter() - start}
    doc = {"benchmark": "structured_speedup", "model": "medium", "threads": args.threads,
           "environment": environment("cpu", threads=args.threads), "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
