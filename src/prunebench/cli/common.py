"""Shared pieces of the CLI: one-line argument errors, argument types, the console."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from prunebench.models.io import is_hf_folder
from prunebench.models.presets import model_names
from prunebench.results.export import json_safe
from prunebench.serde import comma_items, reject_duplicates

#: Exit code of a command whose timings cannot be trusted (a busy machine): ``--strict`` and ``UntrustedTiming``.
EXIT_UNTRUSTED = 3


def add_busy_args(parser: argparse.ArgumentParser, *, strict: bool = True, help: str | None = None) -> None:
    """``--allow-busy`` (and ``--strict``): what a command does with timings taken while the machine was busy."""
    parser.add_argument("--allow-busy", action="store_true", default=None,
                        help=help or "keep timings taken while other processes held the cores (flagged "
                        "'contended') instead of discarding and retiming them")
    if strict:
        parser.add_argument("--strict", action="store_true",
                            help=f"exit {EXIT_UNTRUSTED} when most timed cells were contended or unmeasured")


def add_pipeline_args(parser: argparse.ArgumentParser, *, refit: str, recovery: str, calib: str,
                      defaults: tuple[bool | None, float | None, int | None] = (None, None, None)) -> None:
    """``--refit/--no-refit``, ``--recovery-seconds`` and ``--calib-sequences``: the same three flags on ``run``,
    ``prune`` and ``search``, honoured alike for our own encoder and a pretrained Hugging Face model (the model
    source does each). ``refit``, ``recovery`` and ``calib`` say each command's defaults in its help; ``defaults``
    are the parsed values when a flag is absent (None: the command resolves it, e.g. from the run config)."""
    from prunebench.config import MAX_CALIB_SEQUENCES

    parser.add_argument("--refit", action=argparse.BooleanOptionalAction, default=defaults[0],
                        help="after a structured shrink, refit the shrunk output projections by least squares to "
                        f"the dense model's outputs on task text; every kind of model ({refit})")
    parser.add_argument("--recovery-seconds", type=seconds, default=defaults[1], metavar="S",
                        help="recovery after each structured shrink and its refit: fine-tuning on the task for "
                        f"prunebench's own encoder, distillation from dense for a pretrained model ({recovery})")
    parser.add_argument("--calib-sequences", type=calib_sequences, default=defaults[2], metavar="N",
                        help=f"task sequences the data-driven criteria see ({calib}; at most "
                        f"{MAX_CALIB_SEQUENCES}; every kind of model)")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def load_hf_arg(name: str, device: str | torch.device = "cpu") -> nn.Module | None:
    """The Hugging Face model a model argument names (a transformers folder), else None.

    A name with a "/" that is no folder is refused with one line (prunebench reads local folders only).

    Prunebench folders and preset names give None (the caller loads them). transformers' own progress bars
    are turned off: the CLI draws its own progress.
    """
    path = Path(name)
    if (path.is_dir() and not is_hf_folder(path)) or (not path.is_dir() and "/" not in name):
        return None
    from prunebench.models.hf.deps import require_transformers

    require_transformers()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from prunebench.models.hf import load_hf_model

    return load_hf_model(name, device=device)


def load_hf_folder_arg(name: str) -> Path | None:
    """The folder a model argument names when it is a Hugging Face model folder, else None."""
    path = Path(name)
    return path if path.is_dir() and is_hf_folder(path) else None


def console(stderr: bool = False) -> Console:
    """A rich console; user-facing output goes through these and nowhere else.

    Markup is off: messages and table cells carry user text, paths and install hints such as
    ``pip install -e ".[onnx]"``, whose brackets rich would take for markup and drop. Styles are given as
    ``style=`` arguments instead.
    """
    # Off a terminal rich would wrap at 80 columns and cut table cells; logs and CI want whole rows.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, markup=False, width=None if stream.isatty() else 160)


def add_json_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: print ``what`` as JSON on stdout instead of the tables (which then go to stderr)."""
    parser.add_argument("--json", action="store_true",
                        help=f"print {what} as JSON on stdout (tables and progress go to stderr)")


def print_json(doc: Any) -> None:
    """Write ``doc`` to stdout as strict JSON (NaN and infinities are not JSON: None), one document per call.

    Plain ``sys.stdout``, not rich: a pipe into ``jq`` wants the bytes as they are, without wrapping or colour.
    """
    sys.stdout.write(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def table_dicts(table: Table) -> list[dict[str, str]]:
    """The rows of a rich table as ``{column header: cell text}`` (what ``--json`` prints of a listing)."""
    headers = [str(c.header) for c in table.columns]
    columns = [[str(cell) for cell in c.cells] for c in table.columns]
    return [dict(zip(headers, row, strict=True)) for row in zip(*columns, strict=True)]


def model_name(value: str) -> str:
    """argparse type: a known model name."""
    if value not in model_names():
        raise argparse.ArgumentTypeError(f"unknown model {value!r}; choose from: {', '.join(model_names())}")
    return value


def precision_name(value: str) -> str:
    """argparse type: a training precision name."""
    from prunebench.tasks.precision import PRECISIONS

    if value not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"unknown precision {value!r}; choose from: {', '.join(PRECISIONS)}")
    return value


def _items(value: str, what: str) -> list[str]:
    """The comma-separated items of ``value``; an empty item (``1,,2``, a trailing comma) is an error."""
    try:
        return comma_items(value, what)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _unique(values: tuple[Any, ...], text: str) -> tuple[Any, ...]:
    """``values`` if none repeats (the one list rule, :func:`prunebench.serde.reject_duplicates`)."""
    try:
        reject_duplicates(values, text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return values


def int_list(value: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive integers, e.g. ``1,2,4`` (each once)."""
    items = _items(value, "positive integers")
    out = []
    for item in items:
        try:
            number = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not an integer (in {value!r})") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{number} must be a positive integer (in {value!r})")
        out.append(number)
    return _unique(tuple(out), value)


def positive_int(value: str) -> int:
    """argparse type: one positive integer."""
    return int_list(value)[0] if "," not in value else _too_many(value)


def _too_many(value: str) -> int:
    raise argparse.ArgumentTypeError(f"expected one positive integer, got {value!r}")


def float_list(value: str) -> tuple[float, ...]:
    """argparse type: comma-separated floats, e.g. ``0.5,0.9`` (each once)."""
    out = []
    for item in _items(value, "numbers"):
        try:
            out.append(float(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not a number (in {value!r})") from None
    return _unique(tuple(out), value)


def seed_value(value: str) -> int:
    """argparse type: a seed, an integer in [0, 2^63 - 1]."""
    from prunebench.config import check_seed

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {value!r} is not an integer; valid: 0 .. 2^63 - 1") from None
    try:
        return check_seed(number)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def calib_sequences(value: str) -> int:
    """argparse type of ``--calib-sequences``: a positive integer within the run option's range
    (:data:`prunebench.config.MAX_CALIB_SEQUENCES`), the same check whichever command takes it."""
    from prunebench.config import check_int_option

    try:
        return check_int_option("calib_sequences", positive_int(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def folder_path(value: str) -> Path:
    """argparse type of every ``--out`` (and run folder) option: a path, never the empty string, which
    ``Path("")`` turns into the current folder (``run --out ''`` ran into it)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the folder is empty; give a path (e.g. runs/mine)")
    return Path(value)


def seconds(value: str) -> float:
    """argparse type: a finite number of seconds >= 0 (``inf``, ``nan`` and negatives are refused)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not (math.isfinite(number) and number >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {value!r}")
    return number


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def warn_threads(threads: int | None, cores: int | None = None) -> bool:
    """Write one warning line to stderr when ``threads`` exceeds the cores; returns whether it warned.

    More threads than cores is allowed (torch takes what it is given, and the run records the thread count
    torch reports), but every timing then measures oversubscription, so the user is told.
    """
    cores = available_cores() if cores is None else cores
    if threads is None or threads <= cores:
        return False
    sys.stderr.write(f"prunebench: warning: --threads {threads} exceeds the {cores} CPU core(s) available here; "
                     "threads will share cores and timings will suffer (the thread count torch uses is recorded)\n")
    return True
