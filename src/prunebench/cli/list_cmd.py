"""``prunebench list {models,...}``: discover what can be chosen by name."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.table import Table

from prunebench.cli.common import console
from prunebench.cli.prune_cmd import methods_table
from prunebench.models.config import count_parameters
from prunebench.models.presets import PRESETS, preset_config


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


#: What ``prunebench list`` can show; later subsystems add their own entries here.
LISTINGS: dict[str, Callable[[], Table]] = {"methods": methods_table, "models": _list_models}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``list`` subcommand."""
    p = sub.add_parser("list", help="list models and other named choices")
    p.add_argument("what", choices=sorted(LISTINGS), help="what to list")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the requested listing."""
    console().print(LISTINGS[args.what]())
    return 0
