"""``prunebench run``: train (or load) the dense model, prune every variant, check, evaluate, benchmark, report.

One pipeline for every kind of model: what differs between our own encoder and a pretrained Hugging Face one
(loading or training, tokenizer and task, calibration, evaluation, recovery) comes from the run's
:class:`~prunebench.sources.ModelSource`; every stage (variants, backends, search targets, both
executors, resume) is the same code for both.

Every finished unit of work (a variant, an evaluation, a benchmark cell) is committed to the run's SQLite
store the moment it finishes, and is skipped when the run is resumed; a failure in one variant or cell is
recorded and the run goes on, so nothing already computed is lost because a later step failed.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.backends import BACKENDS
from prunebench.bench import disk_bytes
from prunebench.bench.timing import pinned_threads
from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.models import save_model
from prunebench.results import CellRecord, ResultStore
from prunebench.runner.backend_stage import CALIBRATION_SEQUENCES, store_backend_stage
from prunebench.runner.budgets import Budgets, bench_settings_for
from prunebench.runner.executors import Executor, LocalExecutor, Unit
from prunebench.runner.executors.units import (
    ShippedModel,
    as_model,
    folder_files,
    model_files,
    prepare_unit,
    time_unit,
    write_folder,
)
from prunebench.runner.rundir import RunDir
from prunebench.runner.searched import SEARCH_METHOD, run_search
from prunebench.runner.stages import (
    DENSE,
    RECOVERABLE,
    Progress,
    RunOutcome,
    Ticker,
    run_stages,
    start_run_record,
)
from prunebench.runner.variants import check_finite, describe, load_variant
from prunebench.sources import ModelSource, source_for

logger = logging.getLogger(__name__)

__all__ = ["DENSE", "RECOVERABLE", "Progress", "RunOutcome", "Ticker", "execute_run", "start_run_record"]


def execute_run(
    config: RunConfig,
    run_dir: RunDir,
    *,
    cache_dir: Path,
    progress: Progress | None = None,
    corpus_root: Path | None = None,
    executor: Executor | None = None,
) -> RunOutcome:
    """Run (or resume) the whole job in ``run_dir``; see the module docstring.

    Args:
        config: the validated run config (for a resumed run, the stored one).
        run_dir: the prepared run folder (see :func:`prunebench.runner.rundir.prepare`).
        cache_dir: where tokenizers, tokenized corpora and trained dense baselines are cached.
        progress: optional ``progress(stage, detail, done, total)`` callback.
        corpus_root: override of the stdlib corpus location (tests).
        executor: where prepare and timing units run (default: in this process, see
            :mod:`prunebench.runner.executors`); this function stays the only writer of the store.

    Raises:
        PrunebenchError: CUDA asked for but absent; errors of the task or the dense baseline (without them
            nothing can be measured). Failures of single variants and cells are recorded, not raised.
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise PrunebenchError("--device cuda was asked for, but torch sees no CUDA device here")
    with pinned_threads(config.threads):  # before _Stages, whose units carry the thread count
        stage = _Stages(config, run_dir, cache_dir, corpus_root, progress, executor or LocalExecutor())

        def stages(store: ResultStore) -> None:
            dense = stage.dense(store)
            models = stage.variants(store, dense)
            stage.benchmarks(store, models)
            stage.backends(store, models)

        return run_stages(config, run_dir, stage.tick, stage.outcome, stages)


class _Stages:
    """The stages of one run, sharing its config, budgets, folder, progress counter and outcome."""

    def __init__(self, config: RunConfig, run_dir: RunDir, cache_dir: Path, corpus_root: Path | None,
                 progress: Progress | None, executor: Executor) -> None:
        self.config, self.run_dir, self.cache_dir, self.corpus_root = config, run_dir, cache_dir, corpus_root
        self.executor = executor
        self.budgets = Budgets.of(config)
        self.source = source_for(config, self.budgets, cache_dir=cache_dir, corpus_root=corpus_root)
        n_variants, n_batches = len(config.variants()), len(config.batch_sizes)
        self.tick = Ticker(2 + 2 + 2 * n_variants + (n_variants + 1) * n_batches + 1, progress)
        self.outcome = RunOutcome(run_dir=run_dir.root)
        b = self.budgets
        # What every unit needs beside its own keys (plain data: it may travel to another machine).
        self.unit_base: dict[str, Any] = {
            "seed": config.seed, "seq_len": config.seq_len, "threads": torch.get_num_threads(),
            "iterative_steps": b.iterative_steps, "schedule": config.schedule, "calib_sequences": b.calib_sequences,
            "refit": config.refit,
        }

    def dense(self, store: ResultStore) -> nn.Module:
        """The dense model (trained or cached for a preset, loaded for a pretrained folder), described, saved
        and evaluated."""
        config, tick = self.config, self.tick
        dense, baseline = self.source.load_dense(tick)
        check_finite(dense, DENSE)  # NaN/Inf weights: nothing can be measured against this model
        self.outcome.baseline_info = baseline
        store.update_run({"corpus": {"task": self.source.fingerprint(), "baseline": baseline,
                                     "source": self.source.kind}})
        if not store.has_variant(DENSE, status="ok"):
            folder = self.run_dir.model_dir(DENSE) if config.save_models else None
            if folder is not None:
                save_model(dense, folder, metadata={"variant": DENSE, "baseline": baseline})
            record = describe(dense, DENSE, DENSE, config.seq_len, requested=0.0,
                              disk=disk_bytes(folder) if folder else None)
            store.put_variant({**record, "fidelity": {"ok": True, "max_abs_diff": 0.0, "reference": "itself"}})
        tick("prune", "dense: described")
        _evaluate(store, DENSE, dense, self.source, dense, tick)
        return dense

    def variants(self, store: ResultStore, dense: nn.Module) -> dict[str, ShippedModel]:
        """Every pruned variant: pruned (or reloaded from an earlier attempt), checked, saved, evaluated, each
        as a prepare unit of the executor; the results are committed here, as they arrive."""
        config, tick, ship = self.config, self.tick, self.executor.ships_models
        dense_src: ShippedModel = model_files(dense) if ship else dense
        models: dict[str, ShippedModel] = {DENSE: dense_src}
        folders = {name: self.run_dir.model_dir(name) if config.save_models else None for name, _, _ in
                   config.variants()}
        units = []
        for name, method, sparsity in config.variants():
            if method == SEARCH_METHOD:
                continue  # every target is searched together below (one latency table)
            folder = folders[name]
            done = store.has_variant(name, status="ok") and folder is not None and (folder / "config.json").exists()
            if done and store.has_evaluation(name):
                models[name] = folder_files(folder) if ship else load_variant(folder)
                tick("prune", f"{name}: reloaded")
                tick("eval", f"{name}: done earlier")
                continue
            payload = {**self.unit_base, "name": name, "method": method, "sparsity": sparsity,
                       "evaluate": not store.has_evaluation(name), "ship": ship, "progress": not ship,
                       "save_dir": str(folder) if folder is not None and not ship else None}
            if done:
                payload["reuse"] = folder_files(folder) if ship else str(folder)
            units.append(Unit(f"prepare:{name}", "prepare", payload))
        def commit(unit: Unit, res: dict[str, Any]) -> None:
            name, folder = res["name"], folders[res["name"]]
            if "progress" in res:  # a recovery under way in the unit (units.recovery_progress): the bar moves
                tick("prune", f"{name}: recovery {res['progress']:.0%} (step {res['steps']}, loss {res['loss']:.3f})",
                     0, within=res["progress"])
                return
            if res["failed"]:
                logger.error("pruning %s failed: %s", name, res["error"])
                store.put_variant({"name": name, "method": unit.payload["method"], "status": "failed",
                                   "requested_sparsity": unit.payload["sparsity"], "error": res["error"]})
                self.outcome.failed_variants.append(name)
                tick("prune", f"{name}: FAILED", 2)
                return
            if res["record"] is not None:
                if res["files"] is not None and folder is not None:
                    write_folder(res["files"], folder)  # the model folder first, then the record that names it
                store.put_variant(res["record"])
                tick("prune", f"{name}: sparsity {res['record']['measured_sparsity']:.3f}")
            else:
                tick("prune", f"{name}: reloaded")
            models[name] = (res["files"] or unit.payload.get("reuse")) if ship else res["model"]
            if res["evaluation"] is not None:
                store.put_evaluation(res["evaluation"])
                tick("eval", f"{name}: accuracy {res['evaluation']['accuracy']:.3f}")
            else:
                if res["eval_error"]:
                    _note_eval_error(store, name, res["eval_error"])
                tick("eval", f"{name}: " + (f"FAILED ({res['eval_error']})" if res["eval_error"] else "done earlier"))

        self.executor.run(prepare_unit, units, {"source": self.source, "dense": dense_src}, commit)
        if config.targets:  # searched on the driver (one latency table for every target)
            models.update({n: model_files(m) if ship else m for n, m in self._searched(store, dense).items()})
        return models

    def _search_progress(self) -> Callable[[str], None]:
        """The search's progress lines as ticks within its unit. How many lines a search says is not known
        ahead (tries per target vary), so each line moves the bar half the rest of the way: it moves, and the
        time estimate forms, without ever claiming the search done before it is."""
        said = itertools.count(1)
        return lambda line: self.tick("prune", f"search: {line}", 0, within=1.0 - 0.5 ** next(said))

    def _searched(self, store: ResultStore, dense: nn.Module) -> dict[str, nn.Module]:
        """The ``search@<t>x`` variants (reloaded when an earlier attempt finished them), evaluated."""
        config, tick = self.config, self.tick
        names = [n for n, method, _ in config.variants() if method == SEARCH_METHOD]
        folders = {n: self.run_dir.model_dir(n) if config.save_models else None for n in names}
        done = {n: load_variant(f) for n, f in folders.items()
                if store.has_variant(n, status="ok") and f is not None and (f / "config.json").exists()}
        if len(done) < len(names):
            tick("prune", "latency-budget search", 0)
            try:
                calib = self.source.search_calibration(max(self.budgets.calib_sequences, 64), config.seed)
                calibrates = any(getattr(BACKENDS.get(b), "needs_calibration", False) for b in config.backends)
                searched = run_search(dense, calib, config, folders, loss_fn=self.source.loss_fn(dense),
                                      recover=lambda model: self.source.recover(model, dense),
                                      progress=self._search_progress(),
                                      backend_calibration=self.source.calibration(CALIBRATION_SEQUENCES, config.seed)
                                      if calibrates else (), backend_check_text=self.source.check_text(config.seed))
                for name, (model, record) in searched.items():
                    store.put_variant(record)
                    done[name] = model
            except RECOVERABLE as exc:
                logger.exception("latency-budget search failed")
                for name in set(names) - set(done):
                    store.put_variant({"name": name, "method": SEARCH_METHOD, "requested_sparsity": 0.0,
                                       "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                    self.outcome.failed_variants.append(name)
        for name in names:
            tick("prune", f"{name}: {'searched' if name in done else 'FAILED'}")
            if name in done:
                _evaluate(store, name, done[name], self.source, dense, tick)
        return done

    def benchmarks(self, store: ResultStore, models: dict[str, ShippedModel]) -> None:
        """Every variant timed paired against dense at every batch size on every node class, through the one
        sweep (:func:`prunebench.bench.sweep`: blocks round-robin over the unit's cells) inside time units of
        the executor (a class's batch sizes dealt over at most as many units as it has nodes: one unit locally);
        each cell is stored the moment it reaches the driver, and cells already stored ok are not timed again.

        The dense row is dense against an identical copy of itself: its interval is the harness's noise
        floor on that node, shown rather than assumed (and what the verdicts are judged against).
        """
        config, tick = self.config, self.tick
        counts = self.executor.node_counts()
        names = [v[0] for v in config.variants()]
        tick.total += (len(counts) - 1) * (len(names) + 1) * len(config.batch_sizes)
        for name in names:
            if name not in models:
                tick("bench", f"{name}: skipped (variant failed)", len(config.batch_sizes) * len(counts))
        timed = [n for n in [*names, DENSE] if n in models]
        units = []
        for node_class, n_nodes in counts.items():
            k = min(n_nodes, len(config.batch_sizes))
            for group in (config.batch_sizes[i::k] for i in range(k)):
                todo = []
                for batch_size in group:
                    for name in timed:
                        if store.has_cell(name, batch_size, config.seq_len, status="ok", node_class=node_class):
                            tick("bench", f"{name} b={batch_size} on {node_class}: done earlier")
                        else:
                            todo.append((name, batch_size))
                if todo:
                    payload = {**self.unit_base, "todo": todo, "batch_sizes": list(group), "node_class": node_class,
                               "device": config.device}
                    units.append(Unit(f"time:{node_class}:b={','.join(map(str, group))}", "time", payload,
                                      node_class))
        shared = {"models": {n: models[n] for n in timed}, "settings": bench_settings_for(config, self.budgets),
                  "source": self.source}

        def put(unit: Unit, cell: CellRecord) -> None:
            store.put_cell(cell)
            if cell.failed:
                self.outcome.failed_cells += 1
            tick("bench", f"{cell.variant} b={cell.batch_size} on {unit.node_class}: "
                 + (f"{cell.speedup:.2f}x" if cell.speedup else cell.status))

        tick("bench", f"timing {len(timed)} models x {len(config.batch_sizes)} batch sizes on {len(counts)} "
             "node class(es) in blocks", 0)
        self.executor.run(time_unit, units, shared, put)


    def backends(self, store: ResultStore, models: dict[str, ShippedModel]) -> None:
        """Every variant on each extra backend (``--backends``), against dense eager: see runner/backend_stage.
        Runs in this process (shipped models are loaded here)."""
        if len(self.config.backends) < 2:
            return
        models = {n: as_model(m) for n, m in models.items()}
        settings = bench_settings_for(self.config, self.budgets)
        self.outcome.failed_cells += store_backend_stage(
            store, self.config, settings, models, self.source, models[DENSE],
            progress=lambda detail: self.tick("backends", detail, 0))


def _evaluate(
    store: ResultStore, name: str, model: nn.Module, source: ModelSource, dense: nn.Module, tick: Ticker,
) -> None:
    """Evaluate one variant against the dense reference unless the store already holds the result."""
    if store.has_evaluation(name):
        tick("eval", f"{name}: done earlier")
        return
    tick("eval", name, 0)
    try:
        result = source.evaluate(model, dense)
    except RECOVERABLE as exc:
        logger.exception("evaluating %s failed", name)
        _note_eval_error(store, name, f"{type(exc).__name__}: {exc}")
        tick("eval", f"{name}: FAILED ({exc})")
        return
    store.put_evaluation(result.record(name))
    tick("eval", f"{name}: accuracy {result.accuracy:.3f}")


def _note_eval_error(store: ResultStore, name: str, error: str) -> None:
    """Keep why ``name``'s evaluation failed on its variant record (``details.evaluation_error``), so the summary
    says so instead of an empty accuracy cell; the analysis ignores it once an evaluation is stored (a resume)."""
    row = next((v for v in store.variants() if v["name"] == name), None)
    if row is None:
        return
    details = dict(row.get("details") or {})
    details["evaluation_error"] = " ".join(error.split())[:300]
    store.put_variant({**row, "details": details})
