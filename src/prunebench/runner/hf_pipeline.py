"""The stage loop of an HF run (see :mod:`prunebench.runner.hf_run` for what each stage does).

Kept beside :mod:`prunebench.runner.pipeline`, which hands a run over here when ``config.model`` is a
Hugging Face folder; the store, the resume rules, the benchmark cells and the report are the same.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from prunebench.bench import make_inputs, sweep
from prunebench.bench.timing import pinned_threads
from prunebench.config import RunConfig
from prunebench.results import CellRecord, ResultStore
from prunebench.runner.budgets import Budgets, bench_settings_for
from prunebench.runner.hf_run import HFRun, corpus_of, hf_variants, save_dense
from prunebench.runner.rundir import RunDir
from prunebench.runner.stages import DENSE, RECOVERABLE, Progress, RunOutcome, Ticker, run_stages

logger = logging.getLogger(__name__)


def execute_hf_run(config: RunConfig, run_dir: RunDir, *, progress: Progress | None = None) -> RunOutcome:
    """Run (or resume) an HF run in ``run_dir``: dense, every variant, benchmarks, report.

    Raises:
        PrunebenchError / ValueError: the model, tokenizer or task cannot be used (one line each); failures of
            single variants and cells are recorded, not raised.
    """
    variants = hf_variants(config)
    tick = Ticker(2 + 2 + 2 * len(variants) + (len(variants) + 1) * len(config.batch_sizes) + 1, progress)
    outcome = RunOutcome(run_dir=run_dir.root)
    model_dir = run_dir.model_dir if config.save_models else None

    def stages(store: ResultStore) -> None:
        tick("data", f"model, tokenizer and task ({config.model})", 0)
        hf = HFRun(config, model_dir, tick)
        store.update_run({"corpus": corpus_of(hf)})
        tick("data", f"{hf.kind} model, task ready")
        tick("train", "pretrained: nothing to train")
        models = _dense_and_variants(store, hf, variants, outcome, tick)
        _benchmarks(store, hf, config, models, variants, outcome, tick)

    with pinned_threads(config.threads):
        return run_stages(config, run_dir, tick, outcome, stages)


def _dense_and_variants(store: ResultStore, hf: HFRun, variants: list[tuple[str, str, float]],
                        outcome: RunOutcome, tick: Ticker) -> dict[str, torch.nn.Module]:
    from prunebench.models import load_model

    if not store.has_variant(DENSE, status="ok"):
        folder = hf.model_dir(DENSE) if hf.model_dir is not None else None
        record = hf.describe(hf.dense, DENSE, DENSE, 0.0, save_dense(hf, folder))
        store.put_variant({**record, "fidelity": {"ok": True, "max_abs_diff": 0.0, "reference": "itself"}})
    tick("prune", "dense: described")
    if not store.has_evaluation(DENSE):
        hf.evaluate(store, DENSE, hf.dense)
    else:
        tick("eval", "dense: done earlier")
    models: dict[str, torch.nn.Module] = {DENSE: hf.dense}
    for name, method, sparsity in variants:
        folder: Path | None = hf.model_dir(name) if hf.model_dir is not None else None
        if store.has_variant(name, status="ok") and folder is not None and (folder / "config.json").exists():
            models[name] = load_model(folder).eval()
            tick("prune", f"{name}: reloaded")
        else:
            tick("prune", name, 0)
            try:
                model, record = hf.variant(name, method, sparsity)
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
        if store.has_evaluation(name):
            tick("eval", f"{name}: done earlier")
            continue
        try:
            hf.evaluate(store, name, models[name])
        except RECOVERABLE as exc:
            logger.exception("evaluating %s failed", name)
            tick("eval", f"{name}: FAILED ({exc})")
    return models


def _benchmarks(store: ResultStore, hf: HFRun, config: RunConfig, models: dict[str, torch.nn.Module],
                variants: list[tuple[str, str, float]], outcome: RunOutcome, tick: Ticker) -> None:
    """Every variant paired against dense per batch size through the one sweep, as the main run times them
    (dense against its identical twin: the noise floor); cells stored ok earlier are not timed again."""
    settings = bench_settings_for(config, Budgets.of(config))
    device = torch.device(config.device)
    on_device = {n: m.to(device) for n, m in models.items()}
    names = [v[0] for v in variants]
    for name in names:
        if name not in on_device:
            tick("bench", f"{name}: skipped (variant failed)", len(config.batch_sizes))
    timed = {n: on_device[n] for n in [*names, DENSE] if n in on_device}
    vocab, pad = len(hf.tokenizer), hf.tokenizer.pad_token_id or 0

    def done_earlier(name: str, batch_size: int, seq_len: int) -> bool:
        if store.has_cell(name, batch_size, seq_len, status="ok"):
            tick("bench", f"{name} b={batch_size}: done earlier")
            return True
        return False

    def put(cell: CellRecord) -> None:
        store.put_cell(cell)
        if cell.failed:  # a skipped cell is no failure (as in the main run)
            outcome.failed_cells += 1
        shown = f"{cell.speedup:.2f}x" if cell.speedup else cell.status
        tick("bench", f"{cell.variant} b={cell.batch_size}: {shown}")

    def inputs(batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
        return make_inputs(vocab, batch_size, seq_len, seed=config.seed, pad_fraction=config.pad_fraction,
                           device=device, pad_token_id=pad)

    tick("bench", f"timing {len(timed)} models x {len(config.batch_sizes)} batch sizes in blocks", 0)
    sweep(timed, inputs, config.batch_sizes, (config.seq_len,), DENSE, settings=settings, on_cell=put,
          skip=done_earlier)
