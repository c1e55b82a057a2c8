"""``prunebench search``: the most accurate model meeting each measured speedup target (one family per run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table
from torch import nn

from prunebench.backends import BACKENDS
from prunebench.cli.common import (
    EXIT_UNTRUSTED,
    add_busy_args,
    add_pipeline_args,
    console,
    float_list,
    folder_path,
    load_hf_arg,
    load_hf_folder_arg,
    positive_int,
)
from prunebench.cli.train_cmd import apply_threads, build_task_from, cache_dir_from_args
from prunebench.config import RunConfig
from prunebench.models.adapters import adapter_for
from prunebench.models.io import load_model, read_config
from prunebench.models.presets import model_names, preset_config
from prunebench.outdir import check_writable_dir
from prunebench.pruning.criteria import loss_change_criteria
from prunebench.runner.backend_stage import CALIBRATION_SEQUENCES
from prunebench.runner.budgets import Budgets
from prunebench.search import (
    KEEP_CHOICES,
    SearchOptions,
    check_search_backend,
    check_targets,
    search_family,
)
from prunebench.sources import HFSource, ModelSource, PresetSource
from prunebench.tasks import TASK_SPECS
from prunebench.tasks.hf_text import labelled_text_task
from prunebench.tasks.tokenizer import TOKENIZER_FILE

#: Sequences of task text the search scores importance on (and refits on) by default.
CALIB_SEQUENCES = 256
#: Seconds of recovery after each searched (and uniform) model's refit: ``prunebench run``'s default, so a
#: search and a run's ``--targets`` give the same model. Without it the searched MiniLM at 1.5x scored 1.75-2.4
#: pp under dense depending on the calibration sample's seed; with it, 1.5x measured -0.56 pp (docs/benchmarks.md).
RECOVERY_SECONDS = RunConfig.recovery_seconds
#: Test batches of 32 our encoder is evaluated on by default.
EVAL_BATCHES = 16


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``search`` subcommand."""
    p = sub.add_parser(
        "search", help="prune to measured speedup targets (latency-budget search, then 20 s of recovery per "
        "model unless --recovery-seconds 0)",
        description="Measure a latency model of MODEL on this machine, score every head and FFN neuron on "
        "calibration data, and for each target search per-layer widths that keep the most importance; "
        "every result is verified by paired timing (up to 4 tries per target: a miss aims higher, a result more "
        "than 10% above its target aims lower, and the least-pruned model that met is kept) and compared with "
        "uniform pruning at the same measured speed.",
    )
    p.add_argument("--model", required=True, metavar="PRESET|DIR",
                   help=f"a preset ({', '.join(model_names()[:-1])}: its trained baseline, cached) or a saved "
                        "model folder with its tokenizer.json, or a Hugging Face encoder folder (scored as the HF run "
                        "scores it: embedding cosine and a frozen probe on --task, tweets by default)")
    p.add_argument("--targets", required=True, type=float_list, help="speedups over dense, e.g. 1.5,2,3")
    p.add_argument("--batch-size", type=positive_int, default=1, help="timed batch size (default 1)")
    p.add_argument("--seq-len", type=positive_int, default=128, help="timed sequence length (default 128)")
    p.add_argument("--backend", default="eager",
                   help=f"the runtime the targets are met on: {', '.join(BACKENDS.names())} (default eager; one "
                        "that cannot run here is refused). Speedups are against dense eager; the eager latency table "
                        "is corrected by whole-model timings on the backend and checked on held-out ones; every "
                        "model is checked against eager on the backend before it is timed, and its accuracy is "
                        "also measured there where the backend changes the numerics")
    p.add_argument("--task", default=None, metavar="SPEC",
                   help=f"calibration/eval task: {' | '.join(TASK_SPECS)} (HF folders: tweets | csv:PATH | jsonl:PATH)")
    p.add_argument("--text-col", default="text", help="text column of a csv/jsonl task")
    p.add_argument("--label-col", default="label", help="label column of a csv/jsonl task")
    add_pipeline_args(p, refit="default: on; kept only where it lowers held-out loss, for the searched and the "
                      "uniform model alike", recovery="default: 20, as prunebench run; after the refit, for the "
                      "searched and the uniform model alike; 0: none", calib="default 256, in batches of 8",
                      defaults=(True, RECOVERY_SECONDS, CALIB_SEQUENCES))
    p.add_argument("--criterion", default="fisher", help=f"importance: {', '.join(loss_change_criteria())}")
    p.add_argument("--neuron-step", type=positive_int, default=None,
                   help="kept FFN widths: 1 and multiples of this, each measured (default d_ff / 16)")
    p.add_argument("--no-rescale", dest="refit", action="store_false", help=argparse.SUPPRESS)  # old --no-refit
    p.add_argument("--keep", choices=KEEP_CHOICES, default=None,
                   help="which groups stay at a width: obs (greedy OBS, assumes the refit; default with --refit) "
                        "or score (top importance; default with --no-refit)")
    p.add_argument("--check-configs", type=int, default=20, help="random widths to check the latency model on")
    p.add_argument("--no-uniform", action="store_true", help="skip the uniform-pruning comparison")
    p.add_argument("--eval-batches", type=positive_int, default=None,
                   help=f"test batches of 32 evaluated (default {EVAL_BATCHES}; prunebench's own encoder only: a "
                   "pretrained model is scored on every test example)")
    p.add_argument("--cache-dir", default=None, help="cache folder (default $PRUNEBENCH_CACHE or ~/.cache/prunebench)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of calibration sample, inputs and checks")
    p.add_argument("--out", required=True, type=folder_path, help="output folder")
    add_busy_args(p, strict=False, help="search on with a latency model that missed its held-out check, and "
                  "judge targets on measurements taken while other processes held the cores (marked)")
    p.epilog = (f"The search stops before any pruning (exit {EXIT_UNTRUSTED}, one line) when the latency model's "
                "held-out median error is above 10%, and judges a target only on a verifying measurement taken "
                "while no other process held the cores (else: not met, 'BUSY', exit "
                f"{EXIT_UNTRUSTED}); --allow-busy lets both through, marked in search.json.")
    p.set_defaults(handler=run)


def _source(args: argparse.Namespace) -> tuple[nn.Module, ModelSource]:
    """The dense model of ``--model`` and its model source (as ``prunebench run`` builds them): calibration,
    evaluation, the loss of a base encoder, recovery. A saved prunebench folder is our encoder with its own
    tokenizer over the task's text."""
    cache = cache_dir_from_args(args.cache_dir)
    spec = args.task or "mlm"
    options = {"spec": spec, "seq_len": None, "text_col": args.text_col, "label_col": args.label_col,
               "split_col": None}
    run_options = {"seed": args.seed, "calib_sequences": args.calib_sequences, "refit": args.refit,
                   "recovery_seconds": args.recovery_seconds}
    hf_folder = load_hf_folder_arg(args.model)
    if hf_folder is not None:
        HFSource.refuse_unsupported({"eval_batches": "--eval-batches"} if args.eval_batches is not None else {})
        dense = load_hf_arg(args.model).eval()  # type: ignore[union-attr]
        # A user file with its own column names: the labelled task is read here with them (the source reads a
        # task spec with the default columns).
        columns = (args.text_col, args.label_col) != ("text", "label") and ":" in spec
        given = labelled_text_task(spec, text_col=args.text_col, label_col=args.label_col) if columns else None
        return dense, HFSource.of_model(hf_folder, dense, cache_dir=cache, given_task=given, task=spec,
                                        **run_options)
    run_options["eval_batches"] = args.eval_batches or EVAL_BATCHES
    path = Path(args.model)
    if path.is_dir():
        config, _ = read_config(path)
        if not (path / TOKENIZER_FILE).is_file():
            raise ValueError(f"no calibration data for {path}: it has no {TOKENIZER_FILE}, so its task's text "
                             "cannot be tokenized as it was trained; save the model with its tokenizer "
                             "(prunebench train does) and pass --task")
        task = build_task_from(options, config.vocab_size, cache, path / TOKENIZER_FILE)
        # Our encoder, loaded from its folder (the preset name only fills the run config's model field).
        run = RunConfig(model="small", **run_options)
        return load_model(path).eval(), PresetSource(run, Budgets.of(run), cache_dir=cache, task=task)
    if args.model not in model_names():
        presets = ", ".join(model_names()[:-1])
        raise ValueError(f"--model {args.model!r} is neither a folder nor a preset; presets: {presets}")
    task = build_task_from(options, preset_config(args.model).vocab_size, cache)
    run = RunConfig(model=args.model, seq_len=args.seq_len, **run_options)
    source = PresetSource(run, Budgets.of(run), cache_dir=cache, task=task)
    dense, _ = source.load_dense(lambda *a, **k: None)  # the cached trained baseline (trained once if missing)
    return dense, source


def _evaluate_backend(source: ModelSource) -> Any:
    """The source's evaluation on a backend's hidden states, as the search records it (a mapping, or the
    one-line reason this source cannot evaluate there)."""
    def evaluate(model: nn.Module, runnable: Any, reference: nn.Module) -> dict[str, Any] | str:
        result = source.evaluate_backend(model, runnable, reference)
        return result if isinstance(result, str) else result.to_dict()

    return evaluate


def _ci(d: dict[str, Any] | None, key: str = "accuracy") -> str:
    if not d:
        return "-"
    if key == "agreement" and d.get("agreement") is None:  # HF encoders: the embedding cosine to dense instead
        return f"cos {d['hidden_cosine']:.3f}" if d.get("hidden_cosine") is not None else "-"
    lo, hi = d[f"{key}_ci"]
    return f"{d[key]:.2%} [{lo:.2%}-{hi:.2%}]"


def _check_shape(dense: nn.Module, seq_len: int, neuron_step: int | None) -> None:
    """Refuse a timed shape the model cannot take before any table is measured (``--seq-len 100000`` was
    measured until it failed; a ``--neuron-step`` wider than every FFN leaves no width to choose)."""
    adapter = adapter_for(dense)
    limit = adapter.max_seq_len
    if limit is not None and seq_len > limit:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's max_positions {limit}")
    widest = max((adapter.group_count("neurons", layer) for layer in range(adapter.n_layers)), default=0)
    if neuron_step is not None and neuron_step > widest:
        raise ValueError(f"--neuron-step {neuron_step} is wider than the model's widest FFN ({widest} neurons)")


def run(args: argparse.Namespace) -> int:
    """Run the search and print one row per target."""
    apply_threads(args)
    check_targets(args.targets)  # before loading or training anything
    check_search_backend(args.backend)
    check_writable_dir(args.out)  # before minutes of measuring, not when search.json is written
    options = SearchOptions(targets=args.targets, batch_size=args.batch_size, seq_len=args.seq_len,
                            backend=args.backend, criterion=args.criterion, neuron_step=args.neuron_step,
                            rescale=args.refit, keep=args.keep, check_configs=args.check_configs,
                            compare_uniform=not args.no_uniform, seed=args.seed, allow_busy=bool(args.allow_busy))
    dense, source = _source(args)
    _check_shape(dense, args.seq_len, args.neuron_step)
    calib = source.search_calibration(args.calib_sequences, args.seed)
    err = console(stderr=True)
    on_backend = args.backend != "eager"
    report = search_family(dense, calib, options, evaluate=lambda m, d: source.evaluate(m, d).to_dict(),
                           out_dir=args.out, loss_fn=source.loss_fn(dense),
                           recover=lambda model: source.recover(model, dense),
                           progress=lambda line: err.print(f"search: {line}", style="dim"),
                           evaluate_backend=_evaluate_backend(source) if on_backend else None,
                           backend_calibration=source.calibration(CALIBRATION_SEQUENCES, args.seed)
                           if getattr(BACKENDS.get(args.backend), "needs_calibration", False) else (),
                           backend_check_text=source.check_text(args.seed) if on_backend else None).report
    # On a backend that changes the numerics, accuracy is the backend's (the eager one stays in search.json).
    def acc(d: dict[str, Any]) -> dict[str, Any] | None:
        return d.get("backend_accuracy") or d.get("accuracy")

    where = "" if not on_backend else f" on {args.backend} (speedups against dense eager)"
    t = Table(title=f"prunebench search {args.model} at B={args.batch_size}, S={args.seq_len}{where} -> {args.out}")
    for col in ("target", "met", "tries", "heads / neurons per layer", "measured [CI]", "accuracy [95% CI]",
                "agreement / cosine", "uniform: measured", "uniform: accuracy"):
        t.add_column(col)
    dense_speedup = report.get("backend", {}).get("dense_speedup", 1.0)
    t.add_row("dense", "", "", "", f"{dense_speedup:.2f}x", _ci(acc(report["dense"])), "", "", "")
    for e in report["targets"]:
        m, u = e["measured"], e.get("uniform")
        t.add_row(f"{e['target']:g}x", "yes" if e["met"] else "BUSY" if e.get("machine_busy") else "NO",
                  str(len(e["tries"])),
                  " ".join(f"{w['heads']}/{w['neurons']}" for w in e["widths"]),
                  f"{m['speedup']:.2f}x [{m['ci'][0]:.2f}-{m['ci'][1]:.2f}]", _ci(acc(e)),
                  _ci(acc(e), "agreement"),
                  f"{u['measured']['speedup']:.2f}x" if u else "-", _ci(acc(u)) if u else "-")
    console().print(t)
    for e in report["targets"]:
        if e.get("backend_accuracy_note"):
            console().print(f"{e['target']:g}x: accuracy on {args.backend} not measured: {e['backend_accuracy_note']}")
    bcheck = report.get("backend_check")
    if bcheck:
        console().print(f"latency model on {args.backend}: median |error| {bcheck['median_abs_error']:.1%}, max "
                        f"{bcheck['max_abs_error']:.1%} over {len(bcheck['configs'])} random configurations")
    check = report.get("latency_check")
    if check:
        console().print(f"latency model: median |error| {check['median_abs_error']:.1%}, max "
                        f"{check['max_abs_error']:.1%} over {len(check['configs'])} random configurations; "
                        f"search (table + check + importance) {report['search_seconds']:.0f}s")
    if report.get("stopped"):
        console().print(f"--allow-busy: {report['stopped']}")
    if any(e.get("machine_busy") for e in report["targets"]):
        console().print("BUSY: other processes held the cores during every verifying measurement of that target; "
                        "it was not judged (rerun on a quiet machine, or --allow-busy)")
        return EXIT_UNTRUSTED
    return 0 if all(e["met"] for e in report["targets"]) else 1
