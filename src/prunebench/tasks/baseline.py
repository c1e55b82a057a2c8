"""Trained dense baselines, cached on disk and verified before reuse.

A baseline is keyed by everything that determines it: the model config, the task fingerprint (corpus
hash, tokenizer, sequence length), the seed, the budget and the optimizer settings. A cache hit is only
used after its config, task fingerprint and tokenizer were checked against what was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prunebench.errors import CheckpointError
from prunebench.models.config import EncoderConfig
from prunebench.models.encoder import TransformerEncoder, build_encoder
from prunebench.models.io import load_model, nonfinite_tensor, read_config, save_model
from prunebench.models.presets import preset_config
from prunebench.tasks.base import Task, cache_entry_lock, fresh_tmp, publish, stable_hash
from prunebench.tasks.budget import Budget
from prunebench.tasks.precision import resolve_precision
from prunebench.tasks.tokenizer import TOKENIZER_FILE, load_tokenizer, tokenizer_hash
from prunebench.tasks.training import DEFAULT_BATCH_SIZE, Progress, TrainHistory, default_lr, train
from prunebench.tasks.warmstart import warm_start_

logger = logging.getLogger(__name__)

CACHE_ENV = "PRUNEBENCH_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/prunebench")
#: Default training budgets in steps (reproducible) per preset and resolved training precision, sized to the
#: product's time budget on 2 CPU cores (small <= 2 min, medium <= 5 min including tokenizer training on a
#: first run). bf16 mixed precision (native on AMX CPUs) makes a medium step about twice as fast, so medium
#: gets 400 steps there (2.2x the trivial accuracy measured) against 250 in fp32 (1.75x).
DEFAULT_BUDGETS = {"small": {"fp32": "480", "bf16": "480"}, "medium": {"fp32": "250", "bf16": "400"}}
DEFAULT_BATCH_SIZES = {"small": 64, "medium": 32}
FALLBACK_BUDGET = "300"
BASELINE_VERSION = 3  # bumped when the recipe or checkpoint layout changes, so stale baselines retrain


def default_batch_size(model: str | EncoderConfig) -> int:
    """The default training batch size of a preset (other models get :data:`DEFAULT_BATCH_SIZE`)."""
    return DEFAULT_BATCH_SIZES.get(model if isinstance(model, str) else "", DEFAULT_BATCH_SIZE)


def default_budget(model: str | EncoderConfig, precision: str = "fp32") -> Budget:
    """The default training budget of a preset at a resolved ``precision`` (``fp32`` or ``bf16``).

    Other models get :data:`FALLBACK_BUDGET` steps.
    """
    name = model if isinstance(model, str) else ""
    return Budget.parse(DEFAULT_BUDGETS.get(name, {}).get(precision, FALLBACK_BUDGET))


def resolve_cache_dir(flag: str | Path | None, environ: Mapping[str, str]) -> Path:
    """Cache folder: the flag if given, else ``environ[PRUNEBENCH_CACHE]``, else ``~/.cache/prunebench``.

    The caller passes the environment explicitly (the CLI passes ``os.environ``), so the library itself
    never reads environment variables.
    """
    if flag is not None:
        return Path(flag).expanduser()
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    return DEFAULT_CACHE_DIR.expanduser()


def _config_for(model: str | EncoderConfig, task: Task) -> tuple[str, EncoderConfig]:
    if isinstance(model, EncoderConfig):
        if model.head is not task.head:
            raise ValueError(f"config has a {model.head.value} head but task {task.name!r} needs {task.head.value}")
        if model.vocab_size != task.vocab_size:
            raise ValueError(f"config vocab_size {model.vocab_size} differs from the task's {task.vocab_size}")
        return "custom", model
    return model, preset_config(model, **task.model_overrides())


def load_or_train_baseline(
    model_name_or_config: str | EncoderConfig,
    task: Task,
    budget: Budget | str | int | None = None,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
) -> tuple[TransformerEncoder, dict[str, Any]]:
    """The trained dense model for (model, task, budget, seed): from the cache when verified, else trained.

    Args:
        model_name_or_config: a preset name (sized to the task's vocabulary and head) or a full config.
        task: the task to train on.
        budget: steps or seconds; None = :func:`default_budget` of the model and resolved precision.
        seed: initialization, data order and dropout seed.
        cache_dir: cache root (None: ``~/.cache/prunebench``); baselines live in ``baselines/`` below it.
        progress: forwarded to :func:`train` (not called on a cache hit).
        lr, batch_size: optimizer settings (part of the cache key); None = the model's defaults.
        precision: training precision (``auto``, ``fp32``, ``bf16``); the resolved one is part of the key.

    Returns:
        ``(model in eval mode, info)``; info has ``cache_hit``, ``path``, ``key``, ``budget``, ``seed``,
        ``steps``, ``train_seconds``, ``precision`` (resolved), ``task_key`` and ``history``.
    """
    name, config = _config_for(model_name_or_config, task)
    model = build_encoder(config, seed=seed)
    precision = resolve_precision(precision, next(model.parameters()).device)
    budget = default_budget(model_name_or_config, precision) if budget is None else Budget.parse(budget)
    lr = default_lr(model) if lr is None else lr
    batch_size = default_batch_size(model_name_or_config) if batch_size is None else batch_size
    ident = {
        "config": config.to_dict(), "task": task.fingerprint(), "seed": seed, "budget": str(budget),
        "lr": lr, "batch_size": batch_size, "precision": precision, "version": BASELINE_VERSION,
    }
    key = stable_hash(ident)
    root = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR.expanduser()
    folder = root / "baselines" / f"{name}-{key}"
    # A second run asking for the same baseline waits for the first one's training, then loads its result.
    with cache_entry_lock(folder):
        cached = _load_verified(folder, ident, task)
        if cached is not None:
            trained, meta = cached
            return trained, _info(True, folder, key, meta, task)
        warm_start_(model, task)
        history = train(model, task, budget, seed=seed, lr=lr, batch_size=batch_size, progress=progress,
                        precision=precision)
        meta = {"baseline": {**ident, "task_key": task.key(), "history": history.to_dict()}}
        _save(folder, model, meta, task)
        return model, _info(False, folder, key, meta, task)


def _info(hit: bool, folder: Path, key: str, meta: dict[str, Any], task: Task) -> dict[str, Any]:
    base = meta["baseline"]
    history = TrainHistory.from_dict(base["history"])
    return {
        "cache_hit": hit, "path": str(folder), "key": key, "budget": base["budget"], "seed": base["seed"],
        "steps": history.steps, "train_seconds": history.seconds, "precision": history.precision,
        "task_key": task.key(), "history": history.to_dict(),
    }


def _save(folder: Path, model: TransformerEncoder, meta: dict[str, Any], task: Task) -> None:
    """Write to a temp folder and rename, so a crash or a concurrent run never leaves half a baseline."""
    tmp = fresh_tmp(folder)
    save_model(model, tmp, metadata=meta)
    task.tokenizer.save(str(tmp / TOKENIZER_FILE))
    publish(tmp, folder)


def _load_verified(
    folder: Path, ident: dict[str, Any], task: Task
) -> tuple[TransformerEncoder, dict[str, Any]] | None:
    """The cached model if config, task fingerprint, settings and tokenizer all match; else None."""
    if not folder.is_dir():
        return None
    try:
        config, meta = read_config(folder)
        base = meta.get("baseline", {})
        mismatched = [k for k, v in ident.items() if k != "config" and base.get(k) != v]
        if config.to_dict() != ident["config"]:
            mismatched.insert(0, "config")
        if mismatched:
            logger.warning("cached baseline %s does not match (%s); retraining", folder, ", ".join(mismatched))
            return None
        if tokenizer_hash(load_tokenizer(folder, task.vocab_size)) != tokenizer_hash(task.tokenizer):
            logger.warning("cached baseline %s has a different tokenizer; retraining", folder)
            return None
        TrainHistory.from_dict(base["history"])
        model = load_model(folder)
        bad = nonfinite_tensor(model)
        if bad is not None:
            logger.warning("cached baseline %s has NaN/Inf weights (%s); retraining", folder, bad)
            return None
    except (CheckpointError, ValueError, KeyError, TypeError) as exc:
        logger.warning("cached baseline %s is unusable (%s); retraining", folder, exc)
        return None
    logger.info("using cached baseline %s", folder)
    return model, meta
