"""``prunebench run``: train (or load) the dense model, prune every variant, check, evaluate, benchmark, report.

Every finished unit of work (a variant, an evaluation, a benchmark cell) is committed to the run's SQLite
store the moment it finishes, and is skipped when the run is resumed; a failure in one variant or cell is
recorded and the run goes on, so nothing already computed is lost because a later step failed.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from prunebench.bench import (
    BenchSettings,
    bench_pair,
    bench_settings,
    disk_bytes,
    environment,
    fingerprint_hash,
    forward_macs,
    make_inputs,
)
from prunebench.bench.records import CellResult
from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.models import TransformerEncoder, preset_config, save_model
from prunebench.report import build_report
from prunebench.results import ResultStore
from prunebench.runner.rundir import RunDir
from prunebench.runner.variants import describe, load_variant, make_variant
from prunebench.tasks import Task, build_task, calibration_batches, evaluate, recovery_callback
from prunebench.tasks.baseline import load_or_train_baseline

logger = logging.getLogger(__name__)

#: ``progress(stage, detail, done, total)``; the CLI draws it, the library never prints.
Progress = Callable[[str, str, int, int], None]

DENSE = "dense"
#: Failures of one unit that are recorded and survived (anything else is a bug and propagates).
RECOVERABLE = (RuntimeError, ValueError, PrunebenchError)


@dataclass(frozen=True)
class QuickBudget:
    """What ``--quick`` shrinks, so a first look (and the end-to-end test) takes seconds, not minutes."""

    train_budget: str = "40"
    max_files: int = 120
    eval_batches: int = 2
    finetune_steps: int = 3
    iterative_steps: int = 2
    calib_sequences: int = 8
    bench_preset: str = "quick"


@dataclass
class RunOutcome:
    """What a run produced: counts of units done and failed, and the report files."""

    run_dir: Path
    failed_variants: list[str] = field(default_factory=list)
    failed_cells: int = 0
    report_files: dict[str, Path] = field(default_factory=dict)
    baseline_info: dict[str, Any] = field(default_factory=dict)


class _Ticker:
    """Counts units of work for the progress callback."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, stage: str, detail: str, advance: int = 1) -> None:
        self.done += advance
        if self.progress is not None:
            self.progress(stage, detail, self.done, self.total)


def _bench_settings(config: RunConfig) -> BenchSettings:
    preset = QuickBudget.bench_preset if config.quick else "default"
    return bench_settings(
        preset, seed=config.seed, threads=config.threads, device=config.device, pad_fraction=config.pad_fraction,
        min_time=config.min_time or None,
    )


def _cell_record(name: str, cell: CellResult, dense_macs: int | None) -> dict[str, Any]:
    """A bench :class:`CellResult` in the store's cell shape (the full record kept under ``raw``)."""
    lat = cell.latency
    comp = cell.comparison
    ideal = None
    if dense_macs and cell.macs_effective:
        ideal = dense_macs / cell.macs_effective
    return {
        "variant": name, "batch_size": cell.batch_size, "seq_len": cell.seq_len,
        # The store knows ok|error; the harness's finer status (oom vs error) stays in the message.
        "status": "ok" if cell.ok else "error", "error": None if cell.ok else f"{cell.status}: {cell.message}",
        "latency_ms": lat.median * 1e3 if lat else None,
        "latency_p90_ms": lat.p90 * 1e3 if lat else None,
        "latency_cv": lat.cv if lat else None,
        "baseline_latency_ms": comp.baseline.median * 1e3 if comp else None,
        "speedup": cell.speedup, "speedup_ci_low": cell.ci_low, "speedup_ci_high": cell.ci_high,
        "flop_ideal_speedup": ideal,
        "throughput_samples_s": cell.samples_per_s, "throughput_tokens_s": cell.tokens_per_s,
        "peak_memory_bytes": cell.peak_memory_bytes, "n_pairs": cell.n_pairs, "raw": cell.to_dict(),
    }


def _pin_threads(threads: int | None) -> int:
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def execute_run(
    config: RunConfig,
    run_dir: RunDir,
    *,
    cache_dir: Path,
    progress: Progress | None = None,
    corpus_root: Path | None = None,
) -> RunOutcome:
    """Run (or resume) the whole job in ``run_dir``; see the module docstring.

    Args:
        config: the validated run config (for a resumed run, the stored one).
        run_dir: the prepared run folder (see :func:`prunebench.runner.rundir.prepare`).
        cache_dir: where tokenizers, tokenized corpora and trained dense baselines are cached.
        progress: optional ``progress(stage, detail, done, total)`` callback.
        corpus_root: override of the stdlib corpus location (tests).
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise PrunebenchError("--device cuda was asked for, but torch sees no CUDA device here")
    previous_threads = torch.get_num_threads()
    threads = _pin_threads(config.threads)
    quick = QuickBudget() if config.quick else None
    variants = config.variants()
    total = 2 + 2 * len(variants) + 1 + (len(variants) + 1) * len(config.batch_sizes) + 1
    tick = _Ticker(total, progress)
    outcome = RunOutcome(run_dir=run_dir.root)
    env = environment(config.device, threads)
    env.setdefault("fingerprint_hash", fingerprint_hash(env))
    try:
        with ResultStore(run_dir.store) as store:
            run = store.get_run()
            store.start_run({
                "run_id": run["run_id"] if run else uuid.uuid4().hex[:12],
                "created": run["created"] if run else datetime.now(UTC).isoformat(timespec="seconds"),
                "config": config.to_dict(), "environment": env, "corpus": {},
            })
            try:
                _run_stages(config, run_dir, store, cache_dir, corpus_root, quick, tick, outcome)
            except BaseException:
                store.set_run_status("failed")
                raise
            store.set_run_status("finished")
        tick("report", "writing report.html, summary.md, results.json/csv, figures", 0)
        outcome.report_files = build_report(run_dir.root)
        tick("report", "done")
    finally:
        torch.set_num_threads(previous_threads)
    return outcome


def _run_stages(
    config: RunConfig, run_dir: RunDir, store: ResultStore, cache_dir: Path, corpus_root: Path | None,
    quick: QuickBudget | None, tick: _Ticker, outcome: RunOutcome,
) -> None:
    # 1. The task (tokenizer + tokenized corpus, cached) and the trained dense baseline (cached).
    vocab = preset_config(config.model).vocab_size
    tick("data", f"tokenizer and corpus ({config.task})", 0)
    task = build_task(
        config.task, vocab_size=vocab, seq_len=config.seq_len, seed=config.seed, cache_dir=cache_dir,
        corpus_root=corpus_root, **({"max_files": quick.max_files} if quick and config.task == "mlm" else {}),
    )
    tick("data", "ready")
    budget = config.train_budget or (quick.train_budget if quick else None)

    def train_progress(fraction: float, steps: int, loss: float) -> None:
        tick("train", f"dense {config.model}: {fraction:.0%} (step {steps}, loss {loss:.2f})", 0)

    dense, info = load_or_train_baseline(config.model, task, budget, seed=config.seed, cache_dir=cache_dir,
                                         progress=train_progress)
    outcome.baseline_info = {k: str(v) if isinstance(v, Path) else v for k, v in info.items() if k != "history"}
    store.update_run({"corpus": {"task": task.fingerprint(), "baseline": outcome.baseline_info}})
    dense.eval()
    tick("train", "cache hit" if info.get("cache_hit") else f"trained in {info.get('train_seconds', 0):.0f}s")

    eval_batches = config.eval_batches or (quick.eval_batches if quick else None)
    eval_kwargs: dict[str, Any] = {"seed": config.seed}
    if eval_batches:
        eval_kwargs["max_batches"] = eval_batches

    # 2. The dense variant: described, saved, evaluated.
    if not store.has_variant(DENSE, status="ok"):
        folder = run_dir.model_dir(DENSE) if config.save_models else None
        if folder is not None:
            save_model(dense, folder, metadata={"variant": DENSE, "baseline": outcome.baseline_info})
        store.put_variant(describe(dense, DENSE, DENSE, config.seq_len, requested=0.0,
                                   disk=disk_bytes(folder) if folder else None)
                          | {"fidelity": {"ok": True, "max_abs_diff": 0.0, "reference": "itself"}})
    _evaluate(store, DENSE, dense, task, dense, eval_kwargs, tick)

    # 3. Every pruned variant: prune (or reload), check, save, evaluate.
    models: dict[str, TransformerEncoder] = {DENSE: dense}
    check_batch = make_inputs(vocab, 2, config.seq_len, seed=config.seed + 1, pad_fraction=0.25)
    calib = None
    for name, method, sparsity in config.variants():
        folder = run_dir.model_dir(name) if config.save_models else None
        if store.has_variant(name, status="ok") and folder is not None and (folder / "config.json").exists():
            models[name] = load_variant(folder)
            tick("prune", f"{name}: reloaded")
        else:
            if method == "wanda" and calib is None:
                n_calib = quick.calib_sequences if quick else config.calib_sequences
                calib = calibration_batches(task, n_calib, seed=config.seed)
            steps = quick.finetune_steps if quick else config.finetune_steps
            on_step = recovery_callback(task, steps, seed=config.seed) if method == "iterative" and steps else None
            run_config = config
            if quick and method == "iterative":
                run_config = replace(config, iterative_steps=min(config.iterative_steps, quick.iterative_steps))
            tick("prune", f"{name}", 0)
            try:
                model, record = make_variant(
                    dense, name, method, sparsity, run_config, calib=calib if method == "wanda" else None,
                    on_step=on_step, check_batch=check_batch, save_dir=folder,
                )
            except RECOVERABLE as exc:
                logger.exception("pruning %s failed", name)
                store.put_variant({"name": name, "method": method, "requested_sparsity": sparsity,
                                   "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                outcome.failed_variants.append(name)
                tick("prune", f"{name}: FAILED", 2)
                continue
            store.put_variant(record)
            models[name] = model
            tick("prune", f"{name}: sparsity {record['measured_sparsity']:.3f}")
        _evaluate(store, name, models[name], task, dense, eval_kwargs, tick)

    # 4. Benchmarks: each variant timed paired and interleaved against dense, per batch size. The dense row is
    # dense against an identical copy of itself: its "speedup" is the harness's noise floor, shown, not assumed.
    settings = _bench_settings(config)
    device = torch.device(config.device)
    on_device = {n: (m.to(device) if device.type != "cpu" else m) for n, m in models.items()}
    twin = copy.deepcopy(on_device[DENSE])
    dense_macs = {b: forward_macs(dense, b, config.seq_len) for b in config.batch_sizes}
    for batch_size in config.batch_sizes:
        inputs = make_inputs(vocab, batch_size, config.seq_len, seed=config.seed, pad_fraction=config.pad_fraction,
                             device=device)
        for name in [DENSE, *(v[0] for v in config.variants())]:
            if name not in on_device:
                tick("bench", f"{name} b={batch_size}: skipped (variant failed)")
                continue
            if store.has_cell(name, batch_size, config.seq_len, status="ok"):
                tick("bench", f"{name} b={batch_size}: done earlier")
                continue
            tick("bench", f"{name} b={batch_size}", 0)
            candidate = twin if name == DENSE else on_device[name]
            cell = bench_pair(on_device[DENSE], candidate, batch_size, config.seq_len, settings=settings,
                              inputs=inputs, name=name, baseline_name=DENSE)
            record = _cell_record(name, cell, dense_macs[batch_size])
            store.put_cell(record)
            if record["status"] != "ok":
                outcome.failed_cells += 1
            speed = f"{cell.speedup:.2f}x" if cell.speedup else cell.status
            tick("bench", f"{name} b={batch_size}: {speed}")


def _evaluate(
    store: ResultStore, name: str, model: TransformerEncoder, task: Task, dense: TransformerEncoder,
    kwargs: dict[str, Any], tick: _Ticker,
) -> None:
    """Evaluate one variant against the dense reference unless the store already holds the result."""
    if store.has_evaluation(name):
        tick("eval", f"{name}: done earlier")
        return
    tick("eval", name, 0)
    try:
        result = evaluate(model, task, reference=dense, **kwargs)
    except RECOVERABLE as exc:
        logger.exception("evaluating %s failed", name)
        tick("eval", f"{name}: FAILED ({exc})")
        return
    store.put_evaluation({
        "variant": name, "accuracy": result.accuracy, "loss": result.loss, "agreement": result.agreement,
        "kl": result.kl_divergence, "cosine": result.hidden_cosine, "trivial_accuracy": result.trivial_accuracy,
        "metric_name": result.metric, "details": result.to_dict(),
    })
    tick("eval", f"{name}: accuracy {result.accuracy:.3f}")
