"""``prunebench eval MODEL_DIR``: task accuracy of a saved model, and its fidelity to a reference model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from prunebench.cli.common import console, positive_int, seed_value
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
from prunebench.tasks import evaluate
from prunebench.tasks.tokenizer import TOKENIZER_FILE


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser("eval", help="evaluate a saved model on its task (optionally against a dense reference)")
    p.add_argument("model_dir", help="folder of a saved model")
    add_task_args(p)
    p.add_argument("--reference", default=None, metavar="DENSE_DIR", help="saved dense model to compare against")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="split (default test)")
    p.add_argument("--max-batches", type=positive_int, default=16, help="evaluated batches of 32 (default 16)")
    p.add_argument("--seed", type=seed_value, default=0, help="evaluation sample and masking seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print a table (or JSON)."""
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
    result = evaluate(model, task, reference=reference, split=args.split, max_batches=args.max_batches, seed=args.seed)
    if args.json:
        console().print_json(json.dumps(result.to_dict()))
        return 0
    table = Table(title=f"{args.model_dir} on {task.name} ({args.split}, {result.n_predictions} predictions)")
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
