"""Does 2:4 pruning make an encoder faster on a CUDA GPU, at equal precision? (A benchmark, not a test.)

For each preset (random init: speed does not depend on training), seq 128: the dense model and its N:M 2:4
twin (``PruneSpec(method="nm", sparsity=0.5)``). Runnables, each checked against its own eager model on the
timed batch before its first timed call (``backends.time_runnables``):

* ``eager`` dense, fp32: what every run's speedups are measured against;
* ``semi-structured`` on the dense model: the whole model in fp16, no sparse kernel (the fp16 baseline);
* ``semi-structured`` on the 2:4 twin: fp16, its 2:4 Linears as torch semi-structured sparse tensors.

Three paired, interleaved comparisons per batch size, timed with CUDA events: dense fp16 against dense fp32
eager (what precision alone gives), 2:4 against dense fp32 eager (what a run's "against dense eager" column
shows), and **2:4 against dense fp16** (the pruning's own gain at equal precision, the figure that answers the
question). Without a CUDA GPU of compute capability >= 8.0 the script says so and exits 0 with nothing timed.

Usage: python benchmarks/semistructured_cuda.py [--models medium,large] [--batch-sizes 1,8,32,128]
       [--seq-len 128] [--min-time 1] [--max-time 4] [--out F]
Writes benchmarks/results/semistructured_cuda.json.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_timing_args, timing_kwargs

from prunebench.backends import BACKENDS, FidelityError, PrepareOptions, time_runnables
from prunebench.bench import environment, make_inputs
from prunebench.bench.timing import time_paired, timer_for
from prunebench.models.presets import create_model
from prunebench.pruning import PruneSpec, prune_

OUT = Path(__file__).parent / "results" / "semistructured_cuda.json"

#: (label, baseline runnable key, candidate runnable key)
COMPARISONS = (
    ("fp16 dense vs fp32 eager", "eager dense", "fp16 dense"),
    ("2:4 fp16 vs fp32 eager", "eager dense", "fp16 2:4"),
    ("2:4 fp16 vs fp16 dense", "fp16 dense", "fp16 2:4"),
)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['speedup']:.2f}x [{r['ci'][0]:.2f}-{r['ci'][1]:.2f}]"


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's parameters hold on the device (a semi-structured tensor: its packed values + metadata)."""
    total = 0
    for p in model.parameters():
        packed = getattr(p, "packed", None)  # SparseSemiStructuredTensor keeps values and metadata in .packed
        if packed is not None:
            total += packed.numel() * packed.element_size()
            meta = getattr(p, "meta", None)
            total += 0 if meta is None else meta.numel() * meta.element_size()
        else:
            total += p.numel() * p.element_size()
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="medium,large", help="presets, comma-separated")
    ap.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32, 128])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--out", type=Path, default=OUT)
    add_timing_args(ap, threads=None, min_time=1.0, max_time=4.0, target_ci=0.01, unit="comparison")
    args = ap.parse_args()
    backend = BACKENDS.get("semi-structured")
    reason = backend.availability()
    if reason:
        print(f"nothing timed: {reason}")
        return 0
    timing = timing_kwargs(args, min_pairs=20)
    paired = functools.partial(time_paired, timer=timer_for("cuda"))  # CUDA events, synchronized around each call
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 eager is the reference: no silent TF32
    opts = PrepareOptions(device="cuda", shapes=tuple((b, args.seq_len) for b in args.batch_sizes))

    rows: list[dict[str, Any]] = []
    sizes: dict[str, Any] = {}
    for preset in [m.strip() for m in args.models.split(",") if m.strip()]:
        dense = create_model(preset, seed=0).eval().cuda()
        two_four = copy.deepcopy(dense)
        prune_(two_four, PruneSpec(method="nm", sparsity=0.5))
        two_four.eval()
        t0 = time.perf_counter()
        runnables = {
            "eager dense": (BACKENDS.get("eager").prepare(dense, opts), dense),
            "fp16 dense": (backend.prepare(dense, opts), dense),
            "fp16 2:4": (backend.prepare(two_four, opts), two_four),
        }
        swapped = runnables["fp16 2:4"][0].info["semi_structured_linears"]
        print(f"{preset}: prepared in {time.perf_counter() - t0:.1f} s; {len(swapped)} Linears as 2:4 tensors",
              flush=True)
        sizes[preset] = {"swapped_linears": len(swapped),
                         "weight_bytes": {k: weight_bytes(r[0].modules[0]) for k, r in runnables.items()}}
        for batch_size in args.batch_sizes:
            batch = make_inputs(dense.config.vocab_size, batch_size, args.seq_len, seed=0, device="cuda")
            for label, base, cand in COMPARISONS:
                row: dict[str, Any] = {"model": preset, "batch_size": batch_size, "seq_len": args.seq_len,
                                       "comparison": label}
                try:
                    res, fb, fc = time_runnables(runnables[base], runnables[cand], batch, timer=paired, **timing)
                except FidelityError as exc:
                    rows.append(row | {"status": "fidelity", "message": str(exc)})
                    print(f"{preset} B={batch_size:3d} {label:26s} NOT TIMED: {exc}", flush=True)
                    continue
                row |= {"status": "ok", "speedup": res.speedup, "ci": [res.ci_low, res.ci_high],
                        "n_pairs": res.n_pairs, "baseline_ms": res.baseline.median * 1e3,
                        "candidate_ms": res.candidate.median * 1e3,
                        "fidelity": {"baseline_cosine": fb.cosine, "candidate_cosine": fc.cosine,
                                     "candidate_max_abs": fc.max_abs}}
                rows.append(row)
                print(f"{preset} B={batch_size:3d} {label:26s} {_fmt(row)}  ({row['baseline_ms']:.3f} -> "
                      f"{row['candidate_ms']:.3f} ms, cos {fc.cosine:.5f})", flush=True)
        del runnables, dense, two_four
        torch.cuda.empty_cache()

    out = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "environment": environment(torch.device("cuda")), "torch": torch.__version__,
           "sizes": sizes, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
