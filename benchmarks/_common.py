"""Command-line options the timing benchmarks share (imported by the scripts in this folder)."""

from __future__ import annotations

import argparse
from typing import Any


def add_timing_args(parser: argparse.ArgumentParser, *, threads: int | None, min_time: float, max_time: float,
                    target_ci: float, unit: str) -> None:
    """Add ``--threads``, ``--min-time``, ``--max-time`` and ``--target-ci`` with the script's defaults.

    ``unit`` names what one paired timing covers in the help texts (``"cell"``, ``"run"``).
    """
    add = parser.add_argument
    add("--threads", type=int, default=threads, help="torch threads (default: %(default)s; None = torch's)")
    add("--min-time", type=float, default=min_time, help=f"seconds of paired timing at least, per {unit}")
    add("--max-time", type=float, default=max_time, help=f"seconds of paired timing at most, per {unit}")
    add("--target-ci", type=float, default=target_ci, help=f"stop a {unit} early at this CI half-width")


def timing_kwargs(args: argparse.Namespace, *, min_pairs: int, warmup: int = 3) -> dict[str, Any]:
    """The ``time_paired`` keyword arguments those options stand for."""
    return {"min_time": args.min_time, "max_time": args.max_time, "target_ci": args.target_ci,
            "min_pairs": min_pairs, "warmup": warmup, "threads": args.threads}


def hf_search_inputs(path: str, task: str | None, calib_sequences: int, seed: int = 0) -> Any:
    """What a search benchmark needs of a pretrained folder, built through its model source as ``prunebench search``
    builds it: ``dense``, ``calib`` (the search's calibration), ``evaluate(model, reference) -> dict``, ``loss_fn``
    (a base encoder's frozen-probe loss, else None) and ``info`` (what accuracy is measured on)."""
    import os
    from types import SimpleNamespace

    from prunebench.models.hf import load_hf_model
    from prunebench.sources import HFSource
    from prunebench.tasks import resolve_cache_dir

    dense = load_hf_model(path).eval()
    source = HFSource.of_model(path, dense, cache_dir=resolve_cache_dir(None, os.environ), task=task or "mlm",
                               seed=seed, calib_sequences=calib_sequences)
    return SimpleNamespace(dense=dense, calib=source.search_calibration(calib_sequences, seed),
                           evaluate=lambda model, reference: source.evaluate(model, reference).to_dict(),
                           loss_fn=source.loss_fn(dense), info={"model": path, **source.fingerprint()})
