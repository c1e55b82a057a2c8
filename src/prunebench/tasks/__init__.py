"""Real-data accuracy tasks: tokenizer, datasets, training, recovery fine-tuning and evaluation."""

from prunebench.tasks.base import BatchSource, DataError, SplitData, Task, calibration_batches, mixed_stream
from prunebench.tasks.baseline import (
    CACHE_ENV,
    DEFAULT_BUDGETS,
    default_budget,
    load_or_train_baseline,
    resolve_cache_dir,
)
from prunebench.tasks.budget import Budget, BudgetKind
from prunebench.tasks.classification import ClassificationTask
from prunebench.tasks.evaluation import EvalResult, evaluate
from prunebench.tasks.factory import TASK_SPECS, build_task
from prunebench.tasks.mlm import MLMTask
from prunebench.tasks.training import (
    RecoveryCallback,
    TrainHistory,
    default_lr,
    finetune,
    prunable_weights,
    train,
)
from prunebench.tasks.warmstart import warm_start_

__all__ = [
    "CACHE_ENV",
    "DEFAULT_BUDGETS",
    "TASK_SPECS",
    "BatchSource",
    "Budget",
    "BudgetKind",
    "ClassificationTask",
    "DataError",
    "EvalResult",
    "MLMTask",
    "RecoveryCallback",
    "SplitData",
    "Task",
    "TrainHistory",
    "build_task",
    "calibration_batches",
    "default_budget",
    "default_lr",
    "evaluate",
    "finetune",
    "load_or_train_baseline",
    "mixed_stream",
    "prunable_weights",
    "resolve_cache_dir",
    "train",
    "warm_start_",
]
