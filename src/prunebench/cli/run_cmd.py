"""``prunebench run``: the whole job (train or load dense, prune, check, evaluate, benchmark, report)."""

from __future__ import annotations

import argparse
import logging
import os
import time
import tomllib
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from prunebench.analysis import analyze, mostly_busy
from prunebench.analysis.deploy import recommend
from prunebench.backends import BACKENDS, parse_backends
from prunebench.cli.common import (
    EXIT_UNTRUSTED,
    add_busy_args,
    add_json_arg,
    add_pipeline_args,
    console,
    float_list,
    folder_path,
    int_list,
    positive_int,
    print_json,
    seed_value,
    warn_threads,
)
from prunebench.config import DEVICES, RUN_METHODS, RunConfig, load_toml, parse_target
from prunebench.outdir import check_writable_dir
from prunebench.report import summary_rows, summary_table
from prunebench.report.deploy import eager_only, recommendation_lines, snapshot_rows
from prunebench.report.hardware import main_snapshot
from prunebench.report.notes import contention_line, fidelity_lines
from prunebench.report.summary import summary_dicts
from prunebench.results import load_snapshot
from prunebench.runner import default_out, execute_run
from prunebench.runner.executors import EXECUTORS, check_executor, make_executor
from prunebench.runner.rundir import RunDir, check_target, claim, inspect_unlocked
from prunebench.runner.validate import check_explicit_options, check_run_inputs
from prunebench.serde import comma_items, reject_duplicates
from prunebench.tasks.baseline import resolve_cache_dir
from prunebench.tasks.factory import task_forms

#: CLI option -> RunConfig field, for options that map one to one.
FIELDS = {
    "model": "model", "methods": "methods", "sparsity": "sparsities", "batch_sizes": "batch_sizes",
    "seq_len": "seq_len", "threads": "threads", "seed": "seed", "device": "device", "quick": "quick",
    "task": "task", "train_budget": "train_budget", "targets": "targets", "backends": "backends",
    "refit": "refit", "recovery_seconds": "recovery_seconds", "calib_sequences": "calib_sequences",
    "allow_busy": "allow_busy", "calib_tasks": "calib_tasks", "max_accuracy_drop": "max_accuracy_drop",
}


def _methods(value: str) -> tuple[str, ...]:
    try:
        items = tuple(comma_items(value, f"methods ({', '.join(RUN_METHODS)})"))
        reject_duplicates(items, value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    for item in items:
        if item not in RUN_METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {item!r}; choose from: {', '.join(RUN_METHODS)}")
    return items


def _backends(value: str) -> tuple[str, ...]:
    try:
        return parse_backends(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _targets(value: str) -> tuple[float | str, ...]:
    """``1.5,3@onnxruntime-int8``: each a number or NUMBER@BACKEND (checked by :func:`parse_target`)."""
    try:
        items = comma_items(value, "speedup targets, e.g. 1.5,3@onnxruntime-int8")
        parsed = [(item, parse_target(item)) for item in items]
        reject_duplicates([t if b is None else f"{t:g}@{b}" for _, (t, b) in parsed], value)  # the one list rule
        return tuple(t if b is None else item for item, (t, b) in parsed)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _points(value: str) -> float:
    """argparse type: a number (of percentage points); its range is RunConfig's to check, as for ``--set``."""
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of percentage points") from None


def _setting(value: str) -> tuple[str, Any]:
    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    try:
        parsed = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = raw  # a bare word such as small: treat it as a string
    except RecursionError:  # raised inside argparse, it would escape the CLI's one-line handler
        raise argparse.ArgumentTypeError(f"the value of {key.strip()!r} is nested too deeply") from None
    return key.strip(), parsed


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser(
        "run", help="the whole job: prune every method, check, evaluate, benchmark vs dense, write a report",
        description="Train (or load the cached) dense model on real text, prune it with every method, check each "
        "pruned model against its masked reference, evaluate accuracy, time every variant paired and interleaved "
        "against dense across batch sizes, and write report.html, summary.md, results.json/csv and figures.",
    )
    p.add_argument("--model", help="small | medium | large, or a Hugging Face model folder (default: medium)")
    p.add_argument("--methods", type=_methods, help=f"comma list of {','.join(RUN_METHODS)} (default: all; "
                   "a Hugging Face model: structured,wanda)")
    p.add_argument("--sparsity", type=float_list, help="one sparsity or a list (e.g. 0.3,0.5,0.7,0.9): the sweep "
                   "that draws degradation curves (default: magnitude/structured/wanda 0.5, iterative 0.8; "
                   "a Hugging Face model: 0.3,0.5,0.7)")
    p.add_argument("--targets", type=_targets, metavar="T[@BACKEND],...",
                   help="speedup targets against dense eager for the latency-budget search, e.g. 1.5,2: adds "
                   "search@<t>x variants. A plain number is searched on the fastest of --backends (targets' own "
                   "included; dense timed on each, the choice recorded; eager alone by default); "
                   "3@onnxruntime-int8 searches on that backend (variant search@3x@onnxruntime-int8), which is then "
                   "timed for every variant too")
    p.add_argument("--batch-sizes", type=int_list, help="benchmark batch sizes (default: 1,2,4,8,16; "
                   "a Hugging Face model: 1,16)")
    p.add_argument("--seq-len", type=positive_int, help="sequence length (default: 128)")
    p.add_argument("--threads", type=positive_int, help="torch threads, pinned for the run (default: torch's)")
    p.add_argument("--seed", type=seed_value, help="seed of init, data, masking and inputs (default: 0)")
    p.add_argument("--device", choices=DEVICES, help="cpu | cuda (default: cpu)")
    p.add_argument("--task", help=f"the task that scores every variant: {' | '.join(task_forms())} (default: mlm, the "
                   "Python stdlib source; a pretrained base or classifier model: tweets; text:PATH, your own corpus "
                   "one text a line, scores a masked LM; prunebench list tasks says which model each task fits)")
    p.add_argument("--calib-task", dest="calib_tasks", action="append", metavar="SPEC[,SPEC]",
                   help="a pretrained model: calibrate, refit and distil on a mix of these tasks' text in equal "
                   "shares (repeatable or comma-separated, e.g. tweets,text:notes.txt; default: --task); stored with "
                   "each variant")
    add_pipeline_args(p, refit="256 sequences; default: on; one-shot structured variants and search targets",
                      recovery="default: 20, --quick: at most 1; also after each search target's refit, and for "
                      "a pretrained model between iterative steps; our own encoder recovers between iterative "
                      "steps by --set finetune_steps", calib="Wanda, Taylor, activation; default 256")
    p.add_argument("--train-budget", help="dense training budget: steps (600) or seconds (90s)")
    p.add_argument("--backends", type=_backends, metavar="B,B",
                   help="execution backends to time every variant on, e.g. eager,int8,onnxruntime-int8,sparse "
                   f"(default: eager; choose from: {', '.join(BACKENDS.names())})")
    p.add_argument("--max-accuracy-drop", type=_points, metavar="PP",
                   help="accuracy budget of the recommendation the report and this summary open with: the "
                   "percentage points a (variant, backend) may lose against dense eager to be named for "
                   "deployment at a batch size (default: 1; 0 to 100)")
    p.add_argument("--quick", action="store_true", default=None, help="small budgets everywhere, for a first look")
    p.add_argument("--config", type=Path, help="TOML file with any of these options (the command line wins)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="any run option by name, e.g. --set finetune_steps=50 (repeatable)")
    p.add_argument("--out", type=folder_path, help="run folder (default: runs/<timestamp>-<model>)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="finish the run stored in DIR (only what is missing)")
    p.add_argument("--force", action="store_true", help="replace the run stored in --out (only its own files are "
                   "removed; a folder holding files a run did not write where a run writes is refused)")
    p.add_argument("--executor", choices=EXECUTORS.names(), default="local",
                   help="where prepare and timing units run: local (this process, default) | ray (Ray tasks; "
                   "every node class times every cell; needs pip install -e \".[ray]\")")
    p.add_argument("--ray-address", metavar="auto|HOST:PORT",
                   help="the Ray cluster to use with --executor ray (default: start a one-node Ray here); "
                   "HOST:PORT must accept a connection within 5 s")
    p.add_argument("--cache-dir", type=Path, help="cache of tokenizers and trained dense models "
                   "(default: $PRUNEBENCH_CACHE or ~/.cache/prunebench)")
    add_busy_args(p)
    add_json_arg(p, "the run summary (one object per variant)")
    p.set_defaults(handler=run)


def build_config(args: argparse.Namespace) -> tuple[RunConfig, frozenset[str]]:
    """The run config from defaults < TOML < --set < options, and the names set explicitly."""
    data: dict[str, Any] = load_toml(args.config) if args.config else {}
    data.update(dict(args.settings))
    data.update({field: getattr(args, opt) for opt, field in FIELDS.items() if getattr(args, opt) is not None})
    return RunConfig.from_dict(data), frozenset(data)


def _shown(field: str) -> str:
    """How a run option is written on the command line (its flag, else ``--set NAME``)."""
    flags = {f: opt for opt, f in FIELDS.items()}
    return f"--{flags[field].replace('_', '-')}" if field in flags else f"--set {field}"


def stage_line(seconds: dict[str, float], load: dict[str, float | None], cpu: dict[str, float] | None = None) -> str:
    """One line: where the run's time went (wall, and CPU where known), and the machine's load (figures from a
    shared machine need it)."""
    cpu = cpu or {}
    stages = ", ".join(f"{stage} {s:.0f} s" + (f" (CPU {cpu[stage]:.0f} s)" if stage in cpu else "")
                       for stage, s in seconds.items()) or "none"
    shown = {k: f"{v:.1f}" for k, v in load.items() if v is not None}
    loads = ", ".join(f"{k} {v}" for k, v in shown.items()) or "unknown"
    return f"stages: {stages}; 1-minute load average: {loads} (on {os.cpu_count()} cores)"


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("prunebench")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


def run(args: argparse.Namespace) -> int:
    """Validate everything cheap first, then lock the run folder and run; print progress and the summary."""
    if args.resume is not None and args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ValueError(f"--out {args.out} cannot be given with --resume: the run resumes in its own folder "
                         f"{args.resume}")
    config, explicit = build_config(args)
    check_executor(args.executor, args.ray_address)
    out = Path(args.resume or args.out or default_out(config.model))
    resume = args.resume is not None
    if not resume:
        warn_threads(config.threads)
    # Every check that can fail on bad input runs before the folder, its lock or a store is created, so a
    # refused command leaves the folder as it found it.
    check_run_inputs(config)
    check_explicit_options(config, {name: _shown(name) for name in explicit})
    check_target(out, resume=resume)
    cache_dir = resolve_cache_dir(args.cache_dir, os.environ)
    check_writable_dir(cache_dir, "--cache-dir")
    plan = inspect_unlocked(out, config, resume=resume, force=args.force, explicit=explicit)
    if resume:
        check_run_inputs(plan.config)  # the stored config, which the run actually uses
        warn_threads(plan.config.threads)
    with claim(out, config, resume=resume, force=args.force, explicit=explicit) as (run_dir, config):
        return _execute(config, run_dir, cache_dir, args.executor, args.ray_address, strict=args.strict,
                        as_json=args.json)


def _execute(config: RunConfig, run_dir: RunDir, cache_dir: Path, executor_name: str, address: str | None,
             strict: bool = False, as_json: bool = False) -> int:
    """The run itself, in a prepared and locked folder, its units run by the named executor; ``strict``: exit
    3 when most timed cells were contended or unmeasured; ``as_json``: the summary as JSON on stdout, the rest
    on stderr."""
    handler = _attach_log(run_dir.log)
    con = console(stderr=as_json)
    con.print(f"prunebench run -> {run_dir.root}  (model {config.model}, "
              f"{len(config.variants())} variants, batch sizes {list(config.batch_sizes)}, seq {config.seq_len})")
    start = time.perf_counter()
    # markup=False: the details carry variant names and error messages (brackets included).
    columns = (TextColumn("{task.fields[stage]:<6}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
               TextColumn("{task.description}", markup=False))
    try:
        with Progress(*columns, console=con, transient=False) as bar:
            task_id = bar.add_task("starting", total=1, stage="")

            def progress(stage: str, detail: str, done: int, total: int) -> None:
                bar.update(task_id, completed=done, total=total, description=detail, stage=stage)

            with make_executor(executor_name, address) as executor:
                outcome = execute_run(config, run_dir, cache_dir=cache_dir, progress=progress, executor=executor)
    finally:
        logging.getLogger("prunebench").removeHandler(handler)
        handler.close()
    elapsed = time.perf_counter() - start
    snapshot = load_snapshot(run_dir.root)
    # The table is about eager cells, as summary.md's; other backends' skips are listed, not counted as failures.
    analysis = analyze(main_snapshot(eager_only(snapshot)))
    rows = summary_rows(analysis)
    # The summary opens with what to deploy at each batch size, over every backend (as the reports do).
    recommendations = recommend(main_snapshot(snapshot))
    for line in recommendation_lines(recommendations):
        con.print(line, markup=False, style="bold")
    con.print(summary_table(rows, width=con.width))
    for line in fidelity_lines(snapshot):
        con.print(line, markup=False)
    if as_json:
        print_json({"run_dir": str(run_dir.root), "report": str(run_dir.root / "report.html"),
                    "recommendation": [r.to_dict() for r in recommendations], "variants": summary_dicts(rows)})
    busy = contention_line(analysis)
    if busy:
        con.print(f"{busy} (the report lists the cells)", style="bold yellow")
    skips = snapshot_rows(snapshot)[1]
    if skips:
        con.print(f"skipped (variant / backend): {'; '.join(f'{k}: {v}' for k, v in skips.items())}")
    con.print(f"finished in {elapsed:.0f} s; report: {run_dir.root / 'report.html'}  log: {run_dir.log}")
    con.print(stage_line(outcome.stage_seconds, outcome.load, outcome.stage_cpu_seconds))
    problems = [f"{name} (pruning failed)" for name in outcome.failed_variants]
    problems += [f"{v['name']} (FIDELITY CHECK FAILED)" for v in snapshot["variants"]
                 if v.get("status") == "ok" and not (v.get("fidelity") or {}).get("ok", False)]
    if outcome.failed_cells:
        problems.append(f"{outcome.failed_cells} benchmark cell(s)")
    if problems:
        con.print(f"finished with failures: {', '.join(problems)} (see the report and run.log)", style="bold red")
        return 1
    if strict and mostly_busy(analysis.cells):
        con.print(f"--strict: most timed cells were contended or unmeasured (exit {EXIT_UNTRUSTED})", style="bold red")
        return EXIT_UNTRUSTED
    return 0
