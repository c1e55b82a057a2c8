"""``prunebench train``: train (or fetch from the cache) a dense baseline on a real-data task and save it."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prunebench.cli.common import (
    console,
    folder_path,
    model_name,
    positive_int,
    precision_name,
    seed_value,
    warn_threads,
)
from prunebench.errors import PrunebenchError
from prunebench.models.io import check_batch_fits_memory, save_model
from prunebench.outdir import check_model_out, check_writable_dir, clear_model_files
from prunebench.runner.validate import check_task_file
from prunebench.tasks import (
    TASK_SPECS,
    Budget,
    Task,
    build_task,
    evaluate,
    load_or_train_baseline,
    resolve_cache_dir,
)
from prunebench.tasks.tokenizer import TOKENIZER_FILE


def cache_dir_from_args(flag: str | None) -> Path:
    """The cache folder for the CLI: ``--cache-dir``, else ``$PRUNEBENCH_CACHE``, else ``~/.cache/prunebench``.

    This is the one place the environment is read; other commands (``prunebench run``) call it too.
    """
    return resolve_cache_dir(flag, os.environ)


def add_task_args(p: argparse.ArgumentParser) -> None:
    """Task selection flags shared by ``train``, ``eval`` and the orchestrator."""
    p.add_argument("--task", default=None, metavar="SPEC", help=f"task: {' | '.join(TASK_SPECS)} (default mlm)")
    p.add_argument("--text-col", default="text", help="text column of a csv/jsonl task (default text)")
    p.add_argument("--label-col", default="label", help="label column of a csv/jsonl task (default label)")
    p.add_argument("--split-col", default=None, help="optional column with train/val/test per row")
    p.add_argument(
        "--seq-len", type=positive_int, default=None, help="tokens per sequence (default 64 for mlm, 128 for csv/jsonl)"
    )
    p.add_argument("--cache-dir", default=None, help="cache folder (default $PRUNEBENCH_CACHE or ~/.cache/prunebench)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default torch's)")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's thread count from ``--threads`` (the CLI owns process-wide settings, never the library)."""
    if getattr(args, "threads", None):
        warn_threads(args.threads)
        torch.set_num_threads(args.threads)


def task_options(args: argparse.Namespace, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """Task spec and options from flags, falling back to those ``stored`` with a saved model.

    Stored metadata may describe a task but never choose a file to read: a model trained on ``csv:PATH``
    is evaluated on a file only when the user passes ``--task`` with it (a crafted model folder must not
    make prunebench read, and echo, any file it names).

    Raises:
        PrunebenchError: the stored task names a data file and no ``--task`` was given, or stored options
            have the wrong types.
    """
    stored = stored or {}
    if args.task is None and stored.get("spec", "mlm") != "mlm":
        kind = str(stored.get("spec")).partition(":")[0][:16]
        shown = kind if kind in ("csv", "jsonl") else "csv|jsonl"
        raise PrunebenchError(f"this model was trained on a data file; pass --task {shown}:PATH to choose the "
                              "file to evaluate on (a path stored in a model folder is never read)")
    stored_len = stored.get("seq_len")
    if stored_len is not None and (not isinstance(stored_len, int) or isinstance(stored_len, bool) or stored_len < 1):
        raise PrunebenchError(f"the model folder's metadata holds an invalid task seq_len {str(stored_len)[:24]!r}")
    for key in ("text_col", "label_col", "split_col"):
        if stored.get(key) is not None and not isinstance(stored.get(key), str):
            raise PrunebenchError(f"the model folder's metadata holds an invalid task {key}")
    return {
        "spec": args.task or "mlm",
        "seq_len": args.seq_len or stored_len,
        "text_col": args.text_col if args.task else stored.get("text_col", args.text_col),
        "label_col": args.label_col if args.task else stored.get("label_col", args.label_col),
        "split_col": args.split_col if args.task else stored.get("split_col", args.split_col),
    }


def build_task_from(options: dict[str, Any], vocab_size: int, cache_dir: Path, tokenizer: Path | None = None) -> Task:
    """Build the task described by :func:`task_options` (with a saved model's tokenizer, if given)."""
    opts = dict(options)
    return build_task(opts.pop("spec"), vocab_size=vocab_size, cache_dir=cache_dir, tokenizer=tokenizer, **opts)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="train a dense baseline on real data (cached) and save it")
    p.add_argument("--model", type=model_name, default="small", help="model preset (default small)")
    add_task_args(p)
    p.add_argument("--budget", default=None,
                   help="steps (500) or time (90s, 2m); default depends on the model and precision")
    p.add_argument("--seed", type=seed_value, default=0, help="init, data order and dropout seed (default 0)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default by model width)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="sequences per step (default by model)")
    p.add_argument("--precision", type=precision_name, default="auto",
                   help="training precision: auto (bf16 mixed precision where the CPU/GPU has native bf16, "
                        "else fp32) | fp32 | bf16 (default auto)")
    p.add_argument("--out", required=True, type=folder_path,
                   help="folder to save the trained model in (new or empty; never inside a run folder)")
    p.add_argument("--force", action="store_true", help="replace the model in a non-empty --out")
    p.set_defaults(handler=run)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("training"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("step {task.fields[step]}  loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
        console=console(stderr=True), transient=True,
    )


def run(args: argparse.Namespace) -> int:
    """Build the task, train or load the baseline, save it to ``--out`` and print its test accuracy."""
    from prunebench.models.presets import preset_config

    target = check_model_out(args.out, force=args.force)
    options = task_options(args)
    check_task_file(options["spec"])
    budget = Budget.parse(args.budget) if args.budget else None  # None: the preset's default for the precision
    if args.batch_size is not None:
        # Before the cache or the task exist: the task's shortest default sequence gives a lower bound.
        check_batch_fits_memory(preset_config(args.model), args.batch_size, options["seq_len"] or 64,
                                f"--batch-size {args.batch_size}")
    cache = cache_dir_from_args(args.cache_dir)
    check_writable_dir(cache, "--cache-dir")
    apply_threads(args)
    out = console()
    vocab = preset_config(args.model).vocab_size
    task = build_task_from(options, vocab, cache)
    options["seq_len"] = task.seq_len  # recorded with the model, so `prunebench eval` rebuilds the same task
    with _progress_bar() as bar:
        handle = bar.add_task("train", total=1.0, step=0, loss=float("nan"))

        def on_progress(fraction: float, step: int, loss: float) -> None:
            bar.update(handle, completed=fraction, step=step, loss=loss)

        model, info = load_or_train_baseline(
            args.model, task, budget, seed=args.seed, cache_dir=cache, progress=on_progress, lr=args.lr,
            batch_size=args.batch_size, precision=args.precision,
        )
    result = evaluate(model, task, split="test")
    meta = {"task": options, "task_fingerprint": task.fingerprint(), "baseline": info, "test": result.to_dict()}
    if args.force and target.is_dir():
        clear_model_files(target)
    folder = save_model(model, target, metadata=meta)
    shutil.copyfile(Path(info["path"]) / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    table = Table(title=f"{args.model} on {task.name} ({'cached' if info['cache_hit'] else 'trained'})")
    for col in ("budget", "steps", "precision", "train s", f"test {result.metric}", "trivial baseline", "test loss"):
        table.add_column(col, justify="right")
    table.add_row(
        info["budget"], str(info["steps"]), info["history"]["precision"], f"{info['train_seconds']:.1f}",
        f"{result.accuracy:.4f}",
        f"{result.trivial_accuracy:.4f}", f"{result.loss:.4f}",
    )
    out.print(table)
    out.print(f"saved to {folder}")
    return 0
