"""Shared pieces of the CLI: one-line argument errors, argument types, the console."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from rich.console import Console

from prunebench.models.presets import model_names


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def console(stderr: bool = False) -> Console:
    """A rich console; user-facing output goes through these and nowhere else."""
    # Off a terminal rich would wrap at 80 columns and cut table cells; logs and CI want whole rows.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 160)


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


def int_list(value: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive integers, e.g. ``1,2,4``."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {value!r}")
    out = []
    for item in items:
        try:
            number = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not an integer (in {value!r})") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{number} must be a positive integer (in {value!r})")
        out.append(number)
    return tuple(out)


def positive_int(value: str) -> int:
    """argparse type: one positive integer."""
    return int_list(value)[0] if "," not in value else _too_many(value)


def _too_many(value: str) -> int:
    raise argparse.ArgumentTypeError(f"expected one positive integer, got {value!r}")


def float_list(value: str) -> tuple[float, ...]:
    """argparse type: comma-separated floats, e.g. ``0.5,0.9``."""
    out = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            out.append(float(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not a number (in {value!r})") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}")
    return tuple(out)
