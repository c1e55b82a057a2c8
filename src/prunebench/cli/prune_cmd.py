"""``prunebench prune``: prune a preset or saved model; write the model, plan.json and prune_report.json."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from rich.table import Table
from torch import nn

from prunebench.cli.common import (
    add_pipeline_args,
    console,
    folder_path,
    load_hf_arg,
    load_hf_folder_arg,
    positive_int,
    seed_value,
)
from prunebench.cli.train_cmd import cache_dir_from_args
from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.models.adapters import adapter_for, with_loss
from prunebench.models.io import load_model
from prunebench.models.presets import create_model as build_preset
from prunebench.models.presets import model_names
from prunebench.outdir import check_model_out, clear_model_files
from prunebench.pruning import (
    GRANULARITIES,
    MATERIALIZATIONS,
    METHODS,
    SCHEDULES,
    SCOPES,
    PruneReport,
    PruneSpec,
    prune_with_plan_,
    save_pruned,
)
from prunebench.pruning.criteria import CRITERIA
from prunebench.pruning.refit import refit_outputs_
from prunebench.pruning.spec import GRADUAL_METHOD, ITERATIVE_BASES, MAX_STEPS
from prunebench.report.notes import FIDELITY_WARNING
from prunebench.runner.budgets import Budgets
from prunebench.runner.validate import check_tasks
from prunebench.runner.variants import REFIT_RIDGE
from prunebench.sources import HFSource, ModelSource, PresetSource, source_class
from prunebench.tasks.factory import task_forms

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prune`` subcommand."""
    p = sub.add_parser(
        "prune", help="prune a model and save it with its plan and report",
        description="Prune MODEL (a preset, randomly initialized, or a saved model folder) and write the pruned "
        "model, plan.json and prune_report.json to --out. --steps > 1 runs the method gradually (iterative).",
    )
    p.add_argument("--model", required=True, metavar="PRESET|DIR",
                   help=f"{', '.join(model_names()[:-1])}, a saved folder, or a Hugging Face model folder")
    p.add_argument("--method", default="magnitude", help=f"one of: {', '.join(METHODS.names())}")
    p.add_argument("--sparsity", type=float, default=None, help="fraction in [0, 1) (nm: fixed by N:M)")
    p.add_argument("--scope", default="layer", help=f"one of: {', '.join(SCOPES)}")
    p.add_argument("--granularity", default="both", help=f"structured: one of {', '.join(GRANULARITIES)}")
    p.add_argument("--criterion", default=None, help=f"{', '.join(CRITERIA.names())} (default: the method's own)")
    p.add_argument("--steps", type=positive_int, default=1, help=f"pruning steps (> 1: gradual; at most {MAX_STEPS})")
    p.add_argument("--schedule", default="one_shot", help=f"one of: {', '.join(SCHEDULES)}")
    p.add_argument("--base-method", default="magnitude",
                   help=f"for --method {GRADUAL_METHOD}: {', '.join(ITERATIVE_BASES)}")
    p.add_argument("--n", type=positive_int, default=2, help="N of N:M (default 2)")
    p.add_argument("--m", type=positive_int, default=4, help="M of N:M (default 4)")
    p.add_argument("--round-to", type=positive_int, default=1, help="structured: kept counts multiples of this")
    p.add_argument("--allow-empty-layers", action="store_true", help="structured: a layer may lose every head")
    p.add_argument("--materialize", default="default", help=f"one of: {', '.join(MATERIALIZATIONS)}")
    p.add_argument("--task", default=None, metavar="SPEC",
                   help=f"the task whose held-out test text the fidelity check reads, and the default calibration: "
                   f"{' | '.join(task_forms())} (default: tweets for a pretrained base or classifier encoder, mlm, "
                   "the stdlib corpus, for a masked LM and for our own encoder; text:PATH, your own corpus, one "
                   "text a line: a masked LM; prunebench list tasks); never random tokens")
    p.add_argument("--calib-task", dest="calib_tasks", action="append", default=None, metavar="SPEC[,SPEC]",
                   help="a pretrained model: calibrate, and refit, on a mix of these tasks' text in equal shares "
                   "(repeatable or comma-separated, e.g. tweets,text:notes.txt; default: --task)")
    add_pipeline_args(p, refit="256 sequences; default: off, so the saved model is exactly its plan replayed; "
                      "structured methods only", recovery="default: 0, none; structured methods only, after the refit",
                      calib="wanda, taylor, fisher, activation; default 32", defaults=(None, 0.0, 32))
    p.add_argument("--cache-dir", default=None,
                   help="cache of the built-in task's tokenizer (default $PRUNEBENCH_CACHE or ~/.cache/prunebench)")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of preset weights, calibration data and 'random'")
    p.add_argument("--out", required=True, type=folder_path,
                   help="output folder (new or empty; never inside a run folder)")
    p.add_argument("--force", action="store_true", help="replace the model in a non-empty --out")
    p.set_defaults(handler=run)


def _load(name: str, seed: int) -> nn.Module:
    hf = load_hf_arg(name)  # a transformers folder (a name with a "/" that is none: one-line error)
    if hf is not None:
        return hf
    path = Path(name)
    if path.is_dir():
        return load_model(path)
    if name not in model_names():
        raise ValueError(f"--model {name!r} is neither a folder nor a preset; presets: {', '.join(model_names())}")
    return build_preset(name, seed=seed).eval()


def _spec(args: argparse.Namespace) -> PruneSpec:
    method, base = args.method, args.base_method
    if args.steps > 1 and method in ITERATIVE_BASES:
        method, base = GRADUAL_METHOD, args.method  # "--method structured --steps 4" = gradual structured
    criterion = args.criterion
    if criterion is None and method == "structured" and args.granularity != "layers":  # activation: groups only
        # the criterion `prunebench run` ranks this kind of model's heads and neurons by (activation for a
        # pretrained encoder): one structured method whichever command prunes it
        criterion = source_class(args.model).structured_criterion or None
    return PruneSpec(
        method=method, sparsity=args.sparsity, scope=args.scope, granularity=args.granularity,
        criterion=criterion, schedule=args.schedule, steps=args.steps, base_method=base, n=args.n, m=args.m,
        round_to=args.round_to, allow_empty_layers=args.allow_empty_layers, seed=args.seed,
    )


def _table(report: PruneReport, out: Path, calib_note: str) -> Table:
    t = Table(title=f"prunebench prune -> {out}")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    spec, info = report.spec, METHODS.get(report.method)
    detail = spec["base_method"] if info.gradual else spec.get("granularity")
    t.add_row("method", f"{report.method} ({detail}, {spec['criterion']}, {spec['scope']})"
              if info.structured or info.gradual else f"{report.method} ({spec['criterion']})")
    t.add_row("requested sparsity", f"{report.requested_sparsity:.3f}")
    t.add_row("measured sparsity (prunable weights)", f"{report.measured_sparsity:.3f}")
    for kind, frac in (report.group_sparsity or {}).items():
        t.add_row(f"{kind} removed", f"{frac:.3f}")
    t.add_row("encoder params", f"{report.params_before['encoder']:,} -> {report.params_after['encoder']:,}")
    t.add_row("encoder fraction removed", f"{report.encoder_fraction_removed:.3f}")
    shape = report.reference_shape
    t.add_row(f"MACs @ {shape['batch_size']}x{shape['seq_len']} (dense / effective)",
              f"{report.macs_before:,} -> {report.macs_after:,} / {report.macs_after_effective:,}")
    t.add_row("materialization", report.materialization)
    t.add_row("calibration", calib_note)
    t.add_row("wall seconds", f"{report.wall_seconds:.2f}")
    return t


def _source(args: argparse.Namespace, model: nn.Module, needed: bool) -> ModelSource | None:
    """The model source whose task text calibrates, refits and checks ``model`` (the built-in task's tokenizer for
    our encoder, the folder's own for a pretrained one); None for our encoder when nothing ``needed`` task text
    and no ``--task`` was given, or no task fits its vocabulary (then the fidelity check is skipped, and the
    table says so)."""
    options = {"seed": args.seed, "calib_sequences": args.calib_sequences, "recovery_seconds": args.recovery_seconds,
               "calib_tasks": tuple(args.calib_tasks or ())}
    folder = load_hf_folder_arg(args.model)
    if folder is not None:  # the model loaded once, by _load
        return HFSource.of_model(folder, model, cache_dir=cache_dir_from_args(args.cache_dir),
                                 task=args.task or "mlm", **options)
    from prunebench.tasks import build_task

    if not needed and args.task is None:
        return None  # our encoder needs the task's tokenizer: built only when asked for or needed
    try:
        task = build_task(args.task or "mlm", vocab_size=adapter_for(model).vocab_size, seed=args.seed,
                          cache_dir=cache_dir_from_args(args.cache_dir))
    except (ValueError, PrunebenchError) as exc:
        if not needed:
            return None  # nothing reads task text: prune without, and say the fidelity was not measured
        files = " or ".join(form for form in task_forms("preset") if ":" in form)
        raise PrunebenchError(f"no usable task text for {args.model} ({exc}); this method needs calibration "
                              f"text: pass --task {files} (prunebench never calibrates on random tokens)") from None
    config = RunConfig(model="small", task=args.task or "mlm", **options)  # our encoder (the preset name only
    # fills the model field)
    return PresetSource(config, Budgets.of(config), cache_dir=cache_dir_from_args(args.cache_dir), task=task)


def _check_tasks(args: argparse.Namespace, spec: PruneSpec) -> tuple[str, ...]:
    """Refuse, before ``--out`` is touched, a ``--task`` or ``--calib-task`` this model cannot use or whose file is
    unusable (one line each); returns the calibration mix (empty: the task's text alone)."""
    calib = RunConfig(calib_tasks=tuple(args.calib_tasks or ())).calib_tasks  # parsed and checked as a run's
    folder = load_hf_folder_arg(args.model)
    model_kind = "preset" if folder is None else HFSource.check(str(folder))
    labelled = spec.needs_calib and CRITERIA.get(spec.criterion).needs_labels
    if args.task is not None or calib or folder is not None:
        check_tasks(args.task or "mlm", calib, model_kind, args.calib_sequences, labelled_calibration=labelled)
    return calib


def run(args: argparse.Namespace) -> int:
    """Prune (on real task text where the criterion needs data), optionally refit, check fidelity to dense on
    held-out text (and, for a sentence encoder, on prose of another domain), save, print the summary table."""
    spec = _spec(args)
    shrinks = METHODS.get(spec.method).structured  # one-shot structured: heads / neurons / layers removed
    for asked, flag, what in ((args.refit, "--refit", "refits output projections that lost heads or neurons"),
                              (args.recovery_seconds > 0, "--recovery-seconds", "recovers a model that lost heads, "
                               "neurons or layers")):
        if asked and not shrinks:
            raise ValueError(f"{flag} {what}; --method {spec.method} removes none (use --method structured)")
    args.calib_tasks = _check_tasks(args, spec)
    out: Path = check_model_out(args.out, force=args.force)
    model = _load(args.model, args.seed)
    recovering = args.recovery_seconds > 0
    source = _source(args, model, needed=spec.needs_calib or bool(args.refit) or recovering)
    dense = copy.deepcopy(model)
    calib, note = None, "none"
    if spec.needs_calib and source is not None:
        calib = source.calibration(args.calib_sequences, args.seed)
        note = f"{sum(int(b['input_ids'].shape[0]) for b in calib)} sequences of {_calib_name(source)} (train split)"
    # A gradient criterion on a model without a loss of its own (a base encoder) scores through the task's.
    needs_loss = source is not None and spec.needs_calib and CRITERIA.get(spec.criterion).needs_labels
    report, the_plan = prune_with_plan_(with_loss(model, source.loss_fn(dense) if needs_loss else None), spec,
                                        calib, materialize=args.materialize)
    refit = "no"
    if args.refit and source is not None:
        fit = source.refit_batches(args.seed)
        names = refit_outputs_(model, dense, fit, ridge=REFIT_RIDGE, prior="zero")
        refit = f"{len(names)} projections on {sum(int(b['input_ids'].shape[0]) for b in fit)} sequences"
    recovery = source.recover(model, dense) if recovering and source is not None else None
    model.eval()
    fidelity = source.fidelity(model, dense) if source is not None else None
    if args.force and out.is_dir():
        clear_model_files(out)
    save_pruned(model, out, the_plan, report,
                metadata={"pruning": {"spec": spec.to_dict(), "source": str(args.model), "refit": bool(args.refit),
                                      "recovery": recovery, "task": _task_name(source) if source else None,
                                      "calibrated_on": source.calibrated_on() if source else None,
                                      "fidelity": fidelity}})
    table = _table(report, out, note)
    table.add_row("least-squares refit", refit)
    table.add_row("recovery", "no" if recovery is None else f"{recovery['kind']}, {recovery['steps']} steps")
    if fidelity is None:
        table.add_row("fidelity to dense (held out)", "not measured: pass --task (text this model's vocabulary "
                      "fits) to check it on held-out text")
    else:
        shown = f"cosine {fidelity['cosine']:.3f}" + (f", agreement {fidelity['agreement']:.3f}"
                                                     if fidelity["agreement"] is not None else "")
        table.add_row("fidelity to dense (held out)", f"{shown} on {fidelity['n']} {fidelity['on']}")
        other = fidelity.get("other_domain")
        if other is not None:
            table.add_row("fidelity to dense (another domain)", f"cosine {other['cosine']:.3f} on {other['n']} "
                          f"paragraphs of {other['on']}")
    console().print(table)
    if fidelity is not None:
        for cosine, where in ((fidelity["cosine"], "held-out text"),
                              ((fidelity.get("other_domain") or {}).get("cosine"), "text of another domain")):
            if cosine is not None and cosine < FIDELITY_WARNING:
                console(stderr=True).print(
                    f"warning: the pruned model's outputs have cosine {cosine:.2f} to dense on {where} "
                    f"(below {FIDELITY_WARNING}): it no longer computes what the dense model did; try a lower "
                    "sparsity, " + ("" if args.refit else "--refit, ") + "or another granularity"
                    + (", or --calib-task with text of more domains" if where != "held-out text" else ""),
                    markup=False)
    return 0


def _task_name(source: ModelSource) -> str:
    task = getattr(source, "task", None) or getattr(source, "corpus", None)
    return str(getattr(task, "name", "task"))


def _calib_name(source: ModelSource) -> str:
    """What the calibration was drawn from: the task, or the ``--calib-task`` mix in equal shares."""
    specs = source.calibrated_on()
    return _task_name(source) if len(specs) == 1 else f"{' + '.join(specs)} (equal shares)"


def methods_table() -> Table:
    """``prunebench list methods``: every pruning method with its criteria and scopes."""
    t = Table(title="Pruning methods (--method NAME / PruneSpec(method=NAME))")
    for col in ("name", "criteria (first = default)", "scopes", "description"):
        t.add_column(col)
    for name, info in METHODS:
        criteria = ", ".join(info.criteria) or f"those of the base method ({', '.join(ITERATIVE_BASES)})"
        t.add_row(name, criteria, ", ".join(info.scopes), info.description)
    return t
