"""``prunebench prune``: prune a preset or saved model; write the model, plan.json and prune_report.json."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from rich.table import Table
from torch import nn

from prunebench.cli.common import console, load_hf_arg, positive_int, seed_value
from prunebench.models.adapters import adapter_for
from prunebench.models.batch import IGNORE_INDEX, Batch
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
from prunebench.pruning.spec import GRADUAL_METHOD, ITERATIVE_BASES

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
    p.add_argument("--steps", type=positive_int, default=1, help="pruning steps (> 1: gradual)")
    p.add_argument("--schedule", default="one_shot", help=f"one of: {', '.join(SCHEDULES)}")
    p.add_argument("--base-method", default="magnitude",
                   help=f"for --method {GRADUAL_METHOD}: {', '.join(ITERATIVE_BASES)}")
    p.add_argument("--n", type=positive_int, default=2, help="N of N:M (default 2)")
    p.add_argument("--m", type=positive_int, default=4, help="M of N:M (default 4)")
    p.add_argument("--round-to", type=positive_int, default=1, help="structured: kept counts multiples of this")
    p.add_argument("--allow-empty-layers", action="store_true", help="structured: a layer may lose every head")
    p.add_argument("--materialize", default="default", help=f"one of: {', '.join(MATERIALIZATIONS)}")
    p.add_argument("--calib-batches", type=positive_int, default=4,
                   help="synthetic random-token calibration batches of 8 sequences for wanda/taylor (default 4)")
    p.add_argument("--calib-seq-len", type=positive_int, default=128, help="tokens per calibration sequence")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of preset weights, calibration data and 'random'")
    p.add_argument("--out", required=True, type=Path, help="output folder (new or empty; never inside a run folder)")
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


def synthetic_calib(model: nn.Module, batches: int, seq_len: int, seed: int) -> list[Batch]:
    """Random-token batches with labels (MLM: 15% of positions; CLS: random classes).

    The CLI has no task data; the accuracy pipeline passes real batches to ``prune_`` instead.
    """
    adapter = adapter_for(model)
    seq = min(seq_len, adapter.max_seq_len or seq_len)
    mlm, num_labels = _label_kind(model)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        ids = torch.randint(0, adapter.vocab_size, (8, seq), generator=g)
        batch: Batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if mlm:
            picked = torch.rand(ids.shape, generator=g) < 0.15
            picked[:, 0] = True  # at least one labelled position per row
            batch["labels"] = torch.where(picked, ids, torch.full_like(ids, IGNORE_INDEX))
        else:
            batch["labels"] = torch.randint(0, num_labels, (8,), generator=g)
        out.append(batch)
    return out


def _label_kind(model: nn.Module) -> tuple[bool, int]:
    """(MLM head?, number of classes) of a prunebench encoder or an HF model (whose config says so)."""
    kind = adapter_for(model).head_kind
    return kind == "mlm", int(getattr(model.config, "num_labels", 2))


def _spec(args: argparse.Namespace) -> PruneSpec:
    method, base = args.method, args.base_method
    if args.steps > 1 and method in ITERATIVE_BASES:
        method, base = GRADUAL_METHOD, args.method  # "--method structured --steps 4" = gradual structured
    return PruneSpec(
        method=method, sparsity=args.sparsity, scope=args.scope, granularity=args.granularity,
        criterion=args.criterion, schedule=args.schedule, steps=args.steps, base_method=base, n=args.n, m=args.m,
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


def run(args: argparse.Namespace) -> int:
    """Prune, save, print the summary table."""
    spec = _spec(args)
    out: Path = check_model_out(args.out, force=args.force)
    model = _load(args.model, args.seed)
    calib, note = None, "none"
    if spec.needs_calib:
        calib = synthetic_calib(model, args.calib_batches, args.calib_seq_len, args.seed)
        note = f"{len(calib)} synthetic random-token batches"
    report, the_plan = prune_with_plan_(model, spec, calib, materialize=args.materialize)
    if args.force and out.is_dir():
        clear_model_files(out)
    save_pruned(model, out, the_plan, report,
                metadata={"pruning": {"spec": spec.to_dict(), "source": str(args.model)}})
    console().print(_table(report, out, note))
    return 0


def methods_table() -> Table:
    """``prunebench list methods``: every pruning method with its criteria and scopes."""
    t = Table(title="Pruning methods (--method NAME / PruneSpec(method=NAME))")
    for col in ("name", "criteria (first = default)", "scopes", "description"):
        t.add_column(col)
    for name, info in METHODS:
        criteria = ", ".join(info.criteria) or f"those of the base method ({', '.join(ITERATIVE_BASES)})"
        t.add_row(name, criteria, ", ".join(info.scopes), info.description)
    return t
