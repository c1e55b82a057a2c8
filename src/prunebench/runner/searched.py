"""Searched variants of a run (``targets`` run option): one ``search@<t>x`` model per speedup target.

All targets share one latency table, measured at the run's first batch size and its sequence length; each
model is checked against its masked reference before any timing, saved with plan and manifest, and then
joins the run's table like every other variant (evaluated, benchmarked at every batch size).

A target is met on a backend (:mod:`prunebench.search.backend`): the one it names (``3@onnxruntime-int8``), or
else the fastest of the run's ``backends`` (dense timed on each against dense eager; eager alone by default).
Targets of one backend are one search family; later families reuse the first one's latency table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from prunebench.bench import disk_bytes
from prunebench.config import RunConfig, target_name
from prunebench.models.adapters import adapter_for
from prunebench.models.batch import Batch, LossFn
from prunebench.runner.variants import describe
from prunebench.search import LatencyTable, SearchOptions, search_family
from prunebench.search.backend import fastest_backend
from prunebench.search.family import Recover, save_member
from prunebench.search.measure import CONFIG_TIMING, TABLE_TIMING
from prunebench.search.verify import VERIFY_TIMING

#: Method name of searched variants in the store and the report.
SEARCH_METHOD = "search"
#: Random configurations the run's latency model is checked on (by ``quick``): a median over 6-10 is enough to
#: tell a 1-3% model from a 30% one, at 3-30 s.
RUN_CHECK_CONFIGS = {False: 10, True: 6}
#: ``--quick`` timing budgets of the search's table, check and verifying measurements (seconds at least / at
#: most, CI half-width): a first look needs the search's path, not a 1.5% latency table, and the default budgets
#: spend most of a quick run there (41 s of a 127-s quick run of ``small`` on the 2-core AMD EPYC).
#: Held-out configurations the backend-corrected latency model is checked on (by ``quick``).
RUN_BACKEND_CHECK_CONFIGS = {False: 6, True: 4}
QUICK_SEARCH_TIMING = {"table_timing": (0.2, 1.0, 0.03), "config_timing": (0.2, 1.0, 0.03),
                       "verify_timing": (0.5, 3.0, 0.02)}


def _search_timing(config: RunConfig) -> dict[str, Any]:
    """The search's timing settings for ``config`` (its defaults; smaller budgets with ``quick``)."""
    if not config.quick:
        return {}
    defaults = {"table_timing": TABLE_TIMING, "config_timing": CONFIG_TIMING, "verify_timing": VERIFY_TIMING}
    return {name: replace(defaults[name], min_time=lo, max_time=hi, target_ci=ci)
            for name, (lo, hi, ci) in QUICK_SEARCH_TIMING.items()}


def _encoder_params(model: nn.Module) -> int:
    return sum(p.numel() for p in adapter_for(model).encoder_parameters())


def search_name(target: float, backend: str | None = None) -> str:
    """Variant name of a target (``search@1.5x``; ``search@3x@onnxruntime-int8`` for a named backend)."""
    return target_name(target, backend)


def run_search(
    dense: nn.Module, calib: Sequence[Batch], config: RunConfig, folders: dict[str, Path | None],
    loss_fn: LossFn | None = None,
    recover: Recover | None = None,
    progress: Callable[[str], None] | None = None,
    backend_calibration: Sequence[Batch] = (),
    backend_check_text: Batch | None = None,
) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """Search every target of ``config``; returns ``name -> (model, variant record)``.

    Args:
        dense: the dense model (trained, or pretrained).
        calib: labelled calibration batches.
        config: the run (targets, first batch size, seq_len, seed).
        folders: where each variant is saved, by name (None or missing: not saved).
        loss_fn: the task loss of a model without one (a pretrained base encoder's frozen probe).
        recover: the source's recovery of each searched model after its refit (None: none), as the run's
            one-shot structured variants get it.
        progress: called with one line per stage of the search (its latency table, importance, each try).
        backend_calibration: task text for a backend that calibrates (``openvino-int8``).
        backend_check_text: held-out task text every backend's outputs must also match eager on.
    """
    # The held-out check guards the run's search as it guards `prunebench search` (fewer configurations: the
    # run's budget); a latency model it cannot trust stops the search before any pruning.
    timing = _search_timing(config)
    base = SearchOptions(targets=tuple(t for t, _ in config.target_specs()), batch_size=config.batch_sizes[0],
                         seq_len=config.seq_len, check_configs=RUN_CHECK_CONFIGS[config.quick], compare_uniform=False,
                         seed=config.seed, allow_busy=config.allow_busy, rescale=config.refit,
                         backend_check_configs=RUN_BACKEND_CHECK_CONFIGS[config.quick], **timing)
    choice: dict[str, Any] | None = None
    # One family per (backend, named?): a named and a chosen target of one number never share a family.
    groups: dict[tuple[str, str | None], list[tuple[float, str | None]]] = {}
    for target, named in config.target_specs():
        if named is None and choice is None:
            fastest, seen = ("eager", {}) if len(config.backends) < 2 else fastest_backend(
                dense, config.backends, base.batch_size, base.seq_len, base.verify_timing, seed=config.seed,
                threads=config.threads, calibration=backend_calibration, check_text=backend_check_text)
            choice = {"backend": fastest, "among": list(config.backends), "dense_speedups": seen}
            if progress is not None and len(config.backends) > 1:
                progress(f"searching on {fastest}, the fastest of {', '.join(config.backends)} for dense")
        backend = named if named is not None else str(choice["backend"]) if choice else "eager"
        groups.setdefault((backend, named), []).append((target, named))
    table: LatencyTable | None = None
    found: list[tuple[dict[str, Any], nn.Module, Any, str | None]] = []
    for (backend, _), items in groups.items():
        options = replace(base, targets=tuple(t for t, _ in items), backend=backend,
                          check_configs=base.check_configs if table is None else 0)  # one eager check per run
        family = search_family(dense, calib, options, loss_fn=loss_fn, recover=recover, progress=progress,
                               table=table, backend_calibration=backend_calibration,
                               backend_check_text=backend_check_text)
        table = table or LatencyTable.from_dict(family.report["latency_table"])
        for (target, named), entry in zip(items, family.report["targets"], strict=True):
            entry = {**entry, "backend": backend, "backend_named": named is not None,
                     "backend_choice": None if named is not None else choice,
                     "latency_check_on_backend": family.report.get("backend_check")}
            found.append((entry, family.models[target], family.plans[target], named))
    dense_encoder = _encoder_params(dense)
    out = {}
    for entry, model, plan, named in found:
        name = search_name(entry["target"], named)
        model = model.eval()
        folder = folders.get(name)
        if folder is not None:
            save_member(folder, model, plan, {**entry, "variant": name})
        record = describe(model, name, SEARCH_METHOD, config.seq_len, requested=0.0,
                          disk=disk_bytes(folder) if folder is not None else None)
        record.update(
            measured_sparsity=1.0 - _encoder_params(model) / dense_encoder,
            materialization="shrunk", fidelity={**entry["fidelity"], "reference": "masked-dense"},
            details={"config": adapter_for(model).config_dict(), "search": entry},
        )
        out[name] = (model, record)
    return out
