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
question). A fourth, **2:4 graph vs fp16 graph**, times both fp16 models replayed from CUDA graphs, where no
host work is left per call; each graph's output is checked against its eager model first. Where the 2:4 model
is slower, two readings say why: a profile of the 2:4 model at each preset's second batch size (host time and
GPU kernel time per sparse matmul call) and whether torch's CUTLASS 2:4 kernels run on this GPU at all.
Without a CUDA GPU of compute capability >= 8.0 the script says so and exits 0 with nothing timed.

Usage: python benchmarks/semistructured_cuda.py [--models medium,large] [--batch-sizes 1,8,32,128]
       [--seq-len 128] [--min-time 1] [--max-time 4] [--out F]
Writes benchmarks/results/semistructured_cuda.json.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import add_timing_args, timing_kwargs

from prunebench.backends import BACKENDS, FidelityError, PrepareOptions, time_runnables
from prunebench.backends.fidelity import compare
from prunebench.backends.semistructured import FP16
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
    """Bytes the model's parameters hold on the device (a semi-structured tensor: its packed values + metadata,
    the cuSPARSELt layout; CUTLASS also keeps transposed copies, not counted here)."""
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


def graphed(call: Callable[[], torch.Tensor]) -> tuple[Callable[[], Any], torch.Tensor]:
    """``call`` captured in a CUDA graph (after warm-up on a side stream): (replay, the graph's output tensor)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(side):
            for _ in range(3):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = call()
    return graph.replay, out


def sparse_call_profile(call: Callable[[], Any], calls: int = 5) -> dict[str, Any]:
    """Host and GPU time per call of the sparse matmul ops inside ``call`` (torch profiler, after warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                call()
            torch.cuda.synchronize()
    events = prof.key_averages()

    def device_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))

    ops = [e for e in events if "sparse_mm" in e.key or "semi_structured" in e.key]
    kernels = [e for e in events if "sparse" in e.key.lower() and device_us(e) > 0 and e not in ops]
    n = sum(e.count for e in ops)
    return {"ops": sorted({e.key for e in ops}), "kernels": sorted({e.key for e in kernels}), "calls": n,
            "host_us_per_call": sum(e.self_cpu_time_total for e in ops) / n if n else None,
            "kernel_us_per_call": sum(device_us(e) for e in kernels) / n if n else None}


def cutlass_probe(weight: torch.Tensor, tokens: torch.Tensor) -> str:
    """"ok" when torch's CUTLASS 2:4 path converts and multiplies ``weight`` here, else its error."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    before = SparseSemiStructuredTensor._FORCE_CUTLASS
    try:
        SparseSemiStructuredTensor._FORCE_CUTLASS = True
        with torch.inference_mode():
            torch.nn.functional.linear(tokens, to_sparse_semi_structured(weight))
        torch.cuda.synchronize()
        return "ok"
    except RuntimeError as exc:
        return str(exc).splitlines()[0]
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = before


def graph_row(runnables: dict[str, Any], eager_two_four: Any, batch: Any, preset: str, seq_len: int,
              paired: Callable[..., Any], timing: dict[str, Any]) -> dict[str, Any]:
    """2:4 fp16 against dense fp16, both replayed from CUDA graphs, each graph checked against its eager model."""
    row: dict[str, Any] = {"model": preset, "batch_size": batch["input_ids"].shape[0], "seq_len": seq_len,
                           "comparison": "2:4 graph vs fp16 graph"}
    replays, checks = [], []
    for key, reference in (("fp16 dense", runnables["eager dense"][0]), ("fp16 2:4", eager_two_four)):
        replay, out = graphed(runnables[key][0].bind(batch))
        replay()
        torch.cuda.synchronize()
        check = compare(f"{key} graph", out.detach().float().cpu(), reference.outputs(batch), FP16)
        if not check.ok:
            return row | {"status": "fidelity", "message": check.message}
        replays.append(replay)
        checks.append(check)
    res = paired(replays[0], replays[1], **timing)
    return row | {"status": "ok", "speedup": res.speedup, "ci": [res.ci_low, res.ci_high], "n_pairs": res.n_pairs,
                  "baseline_ms": res.baseline.median * 1e3, "candidate_ms": res.candidate.median * 1e3,
                  "fidelity": {"baseline_cosine": checks[0].cosine, "candidate_cosine": checks[1].cosine}}


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
    profiles: dict[str, Any] = {}
    cutlass = None
    load_start = os.getloadavg()[0]
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
        eager_two_four = BACKENDS.get("eager").prepare(two_four, opts)
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
            try:  # a failure here is recorded with the row; the three comparisons above are kept either way
                rows.append(graph_row(runnables, eager_two_four, batch, preset, args.seq_len, paired, timing))
            except RuntimeError as exc:
                rows.append({"model": preset, "batch_size": batch_size, "seq_len": args.seq_len,
                             "comparison": "2:4 graph vs fp16 graph", "status": "error", "message": str(exc)})
            print(f"{preset} B={batch_size:3d} {'2:4 graph vs fp16 graph':26s} " + (
                _fmt(rows[-1]) if rows[-1]["status"] == "ok" else f"NOT TIMED: {rows[-1]['message']}"), flush=True)
            if batch_size == args.batch_sizes[min(1, len(args.batch_sizes) - 1)]:
                profiles[preset] = {"batch_size": batch_size,
                                    **sparse_call_profile(runnables["fp16 2:4"][0].bind(batch))}
                print(f"{preset} B={batch_size:3d} profile of the 2:4 model: {profiles[preset]}", flush=True)
        if preset == args.models.split(",")[0].strip():
            name = swapped[0]
            weight = two_four.get_submodule(name).weight.detach().half()
            cutlass = cutlass_probe(weight, torch.randn(1024, weight.shape[1], device="cuda", dtype=torch.half))
            print(f"CUTLASS 2:4 on this GPU: {cutlass}", flush=True)
        del runnables, dense, two_four, eager_two_four
        torch.cuda.empty_cache()

    out = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "environment": environment(torch.device("cuda")), "torch": torch.__version__,
           "sizes": sizes, "rows": rows, "profiles": profiles, "cutlass": cutlass,
           "host_load_1m": [load_start, os.getloadavg()[0]]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
