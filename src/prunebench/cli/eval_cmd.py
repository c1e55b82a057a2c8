"""``prunebench eval MODEL_DIR``: task accuracy of a saved model, and its fidelity to a reference model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from prunebench.cli.common import console, load_hf_arg, load_hf_folder_arg, positive_int, seed_value
from prunebench.cli.train_cmd import (
    add_task_args,
    apply_threads,
    build_task_from,
    cache_dir_from_args,
    task_options,
)
from prunebench.models.io import load_model, read_config
from prunebench.outdir import check_writable_dir
from prunebench.runner.validate import check_task_file
from prunebench.sources import HFSource
from prunebench.tasks import evaluate
from prunebench.tasks.hf_text import labelled_text_task
from prunebench.tasks.tokenizer import TOKENIZER_FILE

#: Test batches of 32 a saved model of ours is evaluated on by default.
MAX_BATCHES = 16


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser("eval", help="evaluate a saved model on its task (optionally against a dense reference)")
    p.add_argument("model_dir", help="folder of a saved model (or a Hugging Face model folder)")
    add_task_args(p)
    p.add_argument("--reference", default=None, metavar="DENSE_DIR", help="saved dense model to compare against")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="split (default test; a pretrained model: test only)")
    p.add_argument("--max-batches", type=positive_int, default=None,
                   help=f"evaluated batches of 32 (default {MAX_BATCHES}; a pretrained model is scored on every "
                   "test example)")
    p.add_argument("--seed", type=seed_value, default=0, help="evaluation sample and masking seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print a table (or JSON)."""
    if load_hf_folder_arg(args.model_dir) is not None:
        return _run_hf(args)
    config, meta = read_config(args.model_dir)
    options = task_options(args, meta.get("task") if isinstance(meta.get("task"), dict) else None)
    if options["seq_len"] is not None and options["seq_len"] > config.max_positions:
        raise ValueError(f"task seq_len {options['seq_len']} exceeds the model's max_positions {config.max_positions}")
    check_task_file(options["spec"])
    if args.reference:
        read_config(args.reference)  # a bad --reference is an error before the task is built
    cache = check_writable_dir(cache_dir_from_args(args.cache_dir), "--cache-dir")
    apply_threads(args)
    model = load_model(args.model_dir)
    saved_tok = Path(args.model_dir) / TOKENIZER_FILE
    # Tokenizer training is not bit-reproducible, so a model is always evaluated with its own tokenizer.
    task = build_task_from(
        options, config.vocab_size, cache, saved_tok if saved_tok.is_file() else None
    )
    reference = load_model(args.reference) if args.reference else None
    result = evaluate(model, task, reference=reference, split=args.split or "test",
                      max_batches=args.max_batches or MAX_BATCHES, seed=args.seed)
    if args.json:
        console().print_json(json.dumps(result.to_dict()))
        return 0
    table = Table(title=f"{args.model_dir} on {task.name} ({args.split or 'test'}, {result.n_predictions} predictions)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(result.metric, f"{result.accuracy:.4f}")
    table.add_row("trivial baseline", f"{result.trivial_accuracy:.4f}")
    table.add_row("loss", f"{result.loss:.4f}")
    if result.macro_f1 is not None:
        table.add_row("macro-F1", f"{result.macro_f1:.4f}")
    if result.agreement is not None:
        table.add_row("top-1 agreement with reference", f"{result.agreement:.4f}")
        table.add_row("mean KL(reference || model)", f"{result.kl_divergence:.4f}")
        table.add_row("cosine of pooled hidden states", f"{result.hidden_cosine:.4f}")
    console().print(table)
    return 0


def _run_hf(args: argparse.Namespace) -> int:
    """Score a Hugging Face model folder through the model source ``prunebench run`` uses (the same evaluator:
    the reference, by default the model itself, is the dense model the frozen probe is fitted on and every delta
    is measured against, on exactly the same test examples); print a table, or the evaluation record as JSON."""
    asked = {"eval_split": ("--split", args.split), "eval_batches": ("--max-batches", args.max_batches),
             "task_seq_len": ("--seq-len", args.seq_len)}
    HFSource.refuse_unsupported({name: flag for name, (flag, value) in asked.items() if value is not None})
    reference_dir = args.reference or args.model_dir
    apply_threads(args)
    model, reference = load_hf_arg(args.model_dir), load_hf_arg(reference_dir)
    if model is None or reference is None:
        raise ValueError(f"--reference {reference_dir} is no Hugging Face model folder; a pretrained model is "
                         "compared with the pretrained folder it was pruned from")
    spec = args.task or "mlm"  # the source's rule: a base or classifier model is scored on tweets by default
    columns = (args.text_col, args.label_col, args.split_col) != ("text", "label", None) and ":" in spec
    given_task = labelled_text_task(spec, text_col=args.text_col, label_col=args.label_col,
                                    split_col=args.split_col) if columns else None
    source = HFSource.of_model(reference_dir, reference.eval(), cache_dir=cache_dir_from_args(args.cache_dir),
                               given_task=given_task, task=spec, seed=args.seed)
    evaluator = source.evaluator(reference)
    res = evaluator.score(model.eval())
    if args.json:
        console().print_json(json.dumps(evaluator.result(res).to_dict()))  # the record `eval --json` prints for all
        return 0
    text = source.task or source.corpus
    table = Table(title=f"{args.model_dir} on {text.name} (test, {res.n_examples} examples, reference {reference_dir})")
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
