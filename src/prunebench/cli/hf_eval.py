"""``prunebench eval HF_DIR [--reference DENSE_HF_DIR] [--task tweets|csv:PATH|jsonl:PATH]`` for HF folders.

The reference (default: the model itself) is the dense model the frozen probe is fitted on and every delta
is measured against; the model is scored on exactly the same test examples (see ``tasks.hf_suite``).
"""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from prunebench.cli.common import console


def run_hf_eval(args: argparse.Namespace) -> int:
    """Score an HF model folder (and its deltas to ``--reference``); print a table or JSON."""
    from prunebench.models.adapters import adapter_for
    from prunebench.models.hf import load_hf_model, load_hf_tokenizer
    from prunebench.tasks.hf_eval import read_pooling
    from prunebench.tasks.hf_suite import HFEvaluator
    from prunebench.tasks.hf_text import corpus_text_task, labelled_text_task

    reference_dir = args.reference or args.model_dir
    model, reference = load_hf_model(args.model_dir), load_hf_model(reference_dir)
    tokenizer, pooling = load_hf_tokenizer(reference_dir), read_pooling(reference_dir)
    kind = adapter_for(reference).head_kind
    spec = args.task or "tweets"
    task = None if kind == "mlm" and args.task is None else labelled_text_task(
        spec, text_col=args.text_col, label_col=args.label_col, split_col=args.split_col)
    corpus = corpus_text_task() if kind == "mlm" else None
    evaluator = HFEvaluator(reference, tokenizer, task=task, corpus=corpus, pooling=pooling, seed=args.seed)
    res = evaluator.score(model)
    if args.json:
        console().print_json(json.dumps(evaluator.result(res).to_dict()))  # the record `eval --json` prints for all
        return 0
    table = Table(title=f"{args.model_dir} on {task.name if task else 'corpus'} (test, {res.n_examples} examples, "
                        f"reference {reference_dir})")
    for col in ("measure", "value", "delta to reference [95% CI]"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for name, value in res.metrics.items():
        delta = res.deltas.get(name)
        if name == "embedding_cosine":
            table.add_row(name, f"{value:.4f}", f"CI [{res.cosine_ci[0]:.4f}, {res.cosine_ci[1]:.4f}]")
        else:
            table.add_row(name, f"{value:.4f}", delta.describe() if delta else "")
    table.add_row("trivial baseline", f"{evaluator.trivial_accuracy():.4f}", "")
    console().print(table)
    return 0
