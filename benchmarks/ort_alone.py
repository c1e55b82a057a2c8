"""ONNX Runtime against eager with no interleaving: each runnable timed alone, and ORT's transformer optimizer.

``benchmarks/backends.py`` times every runnable paired and interleaved against dense eager. Two runtimes
interleaved call after call could slow each other (thread pools that spin or sleep), so this script times
dense ``medium`` at B=1, seq 128, on eager and on ONNX Runtime (fp32, int8; the exported graph as prunebench
runs it, and after ``onnxruntime.transformers.optimizer`` with its BERT fusions) each *alone*, in rounds of
``--calls`` back-to-back calls, and reports eager time / ORT time per round (median, min, max). Each ORT output
is checked against eager first (fp32: max |diff| <= 1e-4; int8: cosine >= 0.99).

    python benchmarks/ort_alone.py            # -> benchmarks/results/ort_alone.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunebench.backends.onnx import export_encoder, quantize_int8
from prunebench.bench import environment, make_inputs
from prunebench.models.presets import create_model

OUT = Path(__file__).parent / "results" / "ort_alone.json"


def _per_call(fn: Callable[[], Any], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=30, help="back-to-back calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    torch.set_num_threads(args.threads)
    model = create_model("medium").eval()
    cfg = model.config
    batch = make_inputs(cfg.vocab_size, 1, 128, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="prunebench-ort-alone-"))
    plain = tmp / "plain.onnx"
    export_encoder(model, plain, with_mask=False)
    opt = optimize_model(str(plain), model_type="bert", num_heads=cfg.layers[0].n_heads, hidden_size=cfg.d_model)
    fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(str(tmp / "optimized.onnx"))
    float_default = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # the optimizer's fused ops lack shape info
    for name in ("plain", "optimized"):
        quantize_int8(tmp / f"{name}.onnx", tmp / f"{name}.int8.onnx", extra_options=float_default)

    from prunebench.backends import BACKENDS, PrepareOptions

    eager = BACKENDS.get("eager").prepare(model, PrepareOptions(threads=args.threads, shapes=((1, 128),)))
    eager_call = eager.bind(batch)
    ref = eager.outputs(batch).numpy()  # [1, 128, d_model]: what every ORT graph must reproduce
    rows = []
    for name in ("plain", "optimized", "plain.int8", "optimized.int8"):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as prunebench's ORT backends
        sess = ort.InferenceSession(str(tmp / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: batch["input_ids"].numpy()}
        out = sess.run(None, feed)[0]  # [1, 128, d_model]
        diff = float(np.abs(out - ref).max())
        cos = float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref)))
        ok = cos >= 0.99 if "int8" in name else diff <= 1e-4
        row: dict[str, Any] = {"graph": name, "max_abs_diff": diff, "cosine": cos, "fidelity_ok": ok}
        if ok:
            ratios = []
            for _ in range(args.rounds):  # eager alone, then ORT alone, so neither sees the other's threads
                e = _per_call(eager_call, args.calls)
                o = _per_call(lambda s=sess, f=feed: s.run(None, f), args.calls)
                ratios.append(e / o)
            row.update(speedup_median=float(np.median(ratios)), speedup_min=min(ratios), speedup_max=max(ratios))
            print(f"{name:15s} eager/ORT {row['speedup_median']:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}), "
                  f"max|d| {diff:.2g}, cos {cos:.5f}")
        else:
            print(f"{name:15s} failed its fidelity check (max|d| {diff:.2g}, cos {cos:.5f}); not timed")
        rows.append(row)
    print("fusions by onnxruntime.transformers.optimizer:", fused)
    result = {"command": "python benchmarks/ort_alone.py", "threads": args.threads, "calls": args.calls,
              "rounds": args.rounds, "fusions": fused, "rows": rows, "environment": environment(),
              "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
