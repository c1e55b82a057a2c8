"""``prunebench list {models,methods,criteria,schedules,tasks,backends}``: what can be chosen by name."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.table import Table

from prunebench.backends import BACKENDS
from prunebench.cli.common import add_json_arg, console, print_json, table_dicts
from prunebench.cli.prune_cmd import methods_table
from prunebench.models.config import count_parameters
from prunebench.models.presets import PRESETS, preset_config
from prunebench.pruning.criteria import CRITERIA
from prunebench.pruning.schedule import SCHEDULE_REGISTRY
from prunebench.tasks.factory import CALIB, MODEL_KINDS, SCORE, TASKS


def _list_models() -> Table:
    table = Table(title="Model presets (create_model(name) / --model NAME; 'custom' takes every size)")
    for col in ("name", "vocab", "d_model", "heads", "layers", "d_ff", "dropout", "encoder params", "total params"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for name, p in PRESETS:
        counts = count_parameters(preset_config(name))
        table.add_row(
            name, str(p.vocab_size), str(p.d_model), str(p.n_heads), str(p.n_layers), str(p.d_ff),
            f"{p.dropout:g}", f"{counts['encoder']:,}", f"{counts['total']:,}",
        )
    return table


def _list_criteria() -> Table:
    table = Table(title="Pruning criteria (--criterion NAME / PruneSpec(criterion=NAME))")
    for col in ("name", "scores", "needs", "methods", "description"):
        table.add_column(col)
    for name, c in CRITERIA:
        needs = "labelled calibration batches" if c.needs_labels else "calibration batches" if c.needs_calibration \
            else "-"
        table.add_row(name, ", ".join(c.scores), needs, ", ".join(c.methods), c.description)
    return table


def _list_schedules() -> Table:
    table = Table(title="Sparsity schedules of gradual pruning (--schedule NAME)")
    for col in ("name", "description"):
        table.add_column(col)
    for name, schedule in SCHEDULE_REGISTRY:
        table.add_row(name, schedule.description)
    return table


def _list_tasks() -> Table:
    table = Table(title="Tasks (--task SPEC scores; --calib-task SPEC calibrates): what each does for each kind of "
                  "model (" + "; ".join(f"{k}: {v}" for k, v in MODEL_KINDS.items()) + ")")
    for col in ("spec", *MODEL_KINDS, "description"):
        table.add_column(col)
    shown = {SCORE: "scores", CALIB: "calibrates"}
    for _, kind in TASKS:
        table.add_row(kind.form, *(shown.get(kind.uses.get(m, ""), "-") for m in MODEL_KINDS), kind.description)
    return table


def _list_backends() -> Table:
    table = Table(title="Execution backends (--backend NAME / --backends A,B; accuracy re-evaluated where the "
                  "numerics change)")
    for col in ("name", "here", "numerics", "description"):
        table.add_column(col)
    for name, backend in BACKENDS:
        reason = backend.availability()
        doc = (type(backend).__doc__ or "").strip().splitlines()[0]
        table.add_row(name, "yes" if reason is None else f"no: {reason}",
                      "changed" if backend.changes_numerics else "fp32", doc)
    return table


#: What ``prunebench list`` can show; later subsystems add their own entries here.
LISTINGS: dict[str, Callable[[], Table]] = {
    "backends": _list_backends, "criteria": _list_criteria, "methods": methods_table, "models": _list_models,
    "schedules": _list_schedules,
    "tasks": _list_tasks,
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``list`` subcommand."""
    p = sub.add_parser("list", help="list models, methods, criteria, schedules, tasks or backends")
    p.add_argument("what", choices=sorted(LISTINGS), help="what to list")
    add_json_arg(p, "the listing (one object per row, keyed by column)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the requested listing (a table, or ``--json``: its rows)."""
    table = LISTINGS[args.what]()
    if args.json:
        print_json(table_dicts(table))
    else:
        console().print(table)
    return 0
