"""Training, recovery fine-tuning and the pruning engine's ``on_step`` hook.

One loop serves both: AdamW with linear warm-up and cosine decay, gradient clipping, a seeded data order
and seeded dropout (the global RNG is forked, so callers' random state is untouched). Fine-tuning can
keep pruned weights at exactly zero by masking their gradients and re-applying the masks after each step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from prunebench.errors import PrunebenchError
from prunebench.models.adapters import adapter_for
from prunebench.models.encoder import TransformerEncoder
from prunebench.serde import reject_unknown
from prunebench.tasks.base import Task
from prunebench.tasks.budget import Budget
from prunebench.tasks.evaluation import evaluate
from prunebench.tasks.precision import resolve_precision, step_context

logger = logging.getLogger(__name__)

#: progress(fraction_done in [0, 1], steps_done, last_loss); the CLI draws a bar with it.
Progress = Callable[[float, int, float], None]

DEFAULT_BATCH_SIZE = 64
DEFAULT_FINETUNE_LR = 2e-4
WARMUP_FRACTION = 0.06


def default_lr(model: TransformerEncoder) -> float:
    """Peak learning rate for training from scratch: narrow models tolerate (and need) larger steps.

    Tuned for few-hundred-step budgets on the stdlib MLM task (3e-3 beat 1e-3 for ``small``).
    """
    return 3e-3 if model.config.d_model <= 256 else 1e-3


@dataclass
class TrainHistory:
    """What a training or fine-tuning run did.

    Attributes:
        budget: the budget as given (``"500"`` or ``"90s"``).
        steps: optimizer steps actually done (the reproducible quantity for a seconds budget).
        seconds: wall time of the loop, evaluations included.
        seed, lr, batch_size: the settings used.
        precision: ``fp32`` or ``bf16`` (mixed precision), as resolved from the request.
        losses: training loss of every step.
        evals: ``{"step", "loss", "accuracy"}`` on the validation split at regular points.
        masked_weights: prunable weights held at zero throughout (fine-tuning with masks), else 0.
    """

    budget: str
    steps: int
    seconds: float
    seed: int
    lr: float
    batch_size: int
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    masked_weights: int = 0
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainHistory:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        reject_unknown(data, (f.name for f in fields(cls)), "TrainHistory keys")
        return cls(**data)


def lr_at(fraction: float, peak: float, warmup: float = WARMUP_FRACTION) -> float:
    """Linear warm-up over the first ``warmup`` of the budget, then cosine decay to zero at the end."""
    if warmup > 0 and fraction < warmup:
        return peak * (fraction + 1e-3) / warmup
    progress = (fraction - warmup) / max(1e-9, 1.0 - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of the model's prunable Linears (its adapter's ``prunable_linears``), by qualified name.

    Embeddings and task heads are excluded, as everywhere in prunebench. Linears whose weight is not a
    plain Parameter (a torch.nn.utils.prune hook computes it from ``weight_orig * weight_mask``) are
    skipped: that mechanism keeps their pruned entries at zero by itself.

    Raises:
        ValueError: no architecture adapter understands ``model`` (the message lists the supported ones).
    """
    return {
        f"{name}.weight": lin.weight
        for name, lin in adapter_for(model).prunable_linears().items()
        if isinstance(lin.weight, nn.Parameter)
    }


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # Matrices decay; biases, LayerNorm gains and empty (fully pruned) tensors do not.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and p.numel() > 0 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel does the whole update in one pass per tensor (about 10% of a CPU step otherwise).
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def _loop(
    model: TransformerEncoder,
    task: Task,
    budget: Budget,
    *,
    seed: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    clip: float,
    n_evals: int,
    eval_batches: int,
    progress: Progress | None,
    masks: dict[str, tuple[nn.Parameter, torch.Tensor]],
    dropout: bool,
    precision: str,
) -> TrainHistory:
    if model.head_kind is not task.head:
        raise ValueError(f"model has a {model.head_kind.value} head but task {task.name!r} needs {task.head.value}")
    if batch_size <= 0 or lr <= 0:
        raise ValueError(f"batch_size and lr must be positive, got {batch_size} and {lr}")
    device = next(model.parameters()).device
    resolved = resolve_precision(precision, device)
    history = TrainHistory(str(budget), 0, 0.0, seed, lr, batch_size, masked_weights=sum(
        int((m == 0).sum()) for _, m in masks.values()), precision=resolved)
    opt = _optimizer(model, lr, weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_of = adapter_for(model).loss
    stream = task.train_stream(batch_size, seed)
    eval_points = [(i + 1) / n_evals for i in range(n_evals)]
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout draws from the global generator; fork_rng restores it afterwards
        # The encoder has no batch statistics, so eval mode differs from train mode only by dropout.
        model.train(dropout)
        while (frac := budget.fraction(history.steps, time.perf_counter() - start)) < 1.0:
            for group in opt.param_groups:
                group["lr"] = lr_at(frac, lr)
            with step_context(resolved, device):
                loss = loss_of(next(stream))
            if not torch.isfinite(loss):
                raise PrunebenchError(f"training diverged at step {history.steps} (loss {loss.item()}); lower the lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p, keep in masks.values():
                if p.grad is not None:
                    p.grad.mul_(keep)  # [out, in]: pruned weights get no update
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            with torch.no_grad():
                for p, keep in masks.values():
                    p.mul_(keep)  # belt and braces: nothing the optimizer does may revive a pruned weight
            history.steps += 1
            history.losses.append(float(loss.item()))
            done = budget.fraction(history.steps, time.perf_counter() - start)
            if eval_points and done >= eval_points[0]:
                while eval_points and done >= eval_points[0]:
                    eval_points.pop(0)
                result = evaluate(model, task, split="val", max_batches=eval_batches, seed=seed)
                history.evals.append({"step": history.steps, "loss": result.loss, "accuracy": result.accuracy})
                model.train(dropout)
            if progress is not None:
                progress(done, history.steps, history.losses[-1])
    model.eval()
    history.seconds = time.perf_counter() - start
    logger.info("trained %d steps in %.1f s (budget %s)", history.steps, history.seconds, budget)
    return history


def train(
    model: TransformerEncoder,
    task: Task,
    budget: Budget | str | int,
    *,
    seed: int = 0,
    lr: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    n_evals: int = 4,
    eval_batches: int = 4,
    progress: Progress | None = None,
    dropout: bool = False,
    precision: str = "auto",
) -> TrainHistory:
    """Train ``model`` in place on ``task`` for ``budget`` (steps, or seconds like ``"90s"``).

    Args:
        model: an encoder whose head matches the task; left in eval mode.
        task: the task; batches come from its train split in a ``seed``-fixed order.
        budget: steps (reproducible) or seconds (records the steps done).
        seed: data order, masking and dropout.
        lr: peak learning rate (default :func:`default_lr`).
        batch_size: sequences per step.
        weight_decay: AdamW decay of weight matrices.
        clip: max global gradient norm.
        n_evals: validation evaluations spread over the budget (0 for none).
        eval_batches: validation batches per evaluation.
        progress: called after each step with (fraction done, steps, loss).
        dropout: apply the model's dropout. Off by default: a few-minute budget reads each sequence at most
            once, so there is nothing to overfit, and dropout measurably slows the escape from the
            predict-the-most-frequent-token plateau that short MLM training must get past.
        precision: ``auto`` (bf16 mixed precision where the hardware has native bf16, else fp32), ``fp32``
            or ``bf16``; see :mod:`prunebench.tasks.precision`.
    """
    return _loop(
        model, task, Budget.parse(budget), seed=seed, lr=default_lr(model) if lr is None else lr,
        batch_size=batch_size, weight_decay=weight_decay, clip=clip, n_evals=n_evals, eval_batches=eval_batches,
        progress=progress, masks={}, dropout=dropout, precision=precision,
    )


def finetune(
    model: TransformerEncoder,
    task: Task,
    steps: int | Budget,
    *,
    keep_masks: bool = True,
    lr: float = DEFAULT_FINETUNE_LR,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    weight_decay: float = 0.01,
    progress: Progress | None = None,
    dropout: bool = False,
    precision: str = "auto",
) -> TrainHistory:
    """Recovery fine-tuning of a pruned model, in place.

    With ``keep_masks`` the zero pattern of every prunable weight is captured at the start and enforced:
    gradients of zero entries are masked and the masks are re-applied after every optimizer step, so the
    sparsity after fine-tuning equals the sparsity before. A physically shrunk model needs nothing
    special: its smaller Linears are simply trained.

    ``steps`` is a step count, or a :class:`Budget` (a time budget: the recovery ``--recovery-seconds`` gives).
    """
    if not isinstance(steps, Budget) and (not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0):
        raise ValueError(f"finetune steps must be a positive integer, got {steps!r}")
    masks: dict[str, tuple[nn.Parameter, torch.Tensor]] = {}
    if keep_masks:
        for name, p in prunable_weights(model).items():
            keep = p.detach() != 0  # [out, in] bool
            if not bool(keep.all()):
                masks[name] = (p, keep.to(p.dtype))
    return _loop(
        model, task, Budget.parse(steps), seed=seed, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
        clip=1.0, n_evals=0, eval_batches=0, progress=progress, masks=masks, dropout=dropout, precision=precision,
    )


class RecoveryCallback:
    """The ``on_step(step, sparsity, model)`` hook of iterative pruning: fine-tune after each pruning step.

    Attributes:
        histories: one :class:`TrainHistory` per call, in call order.
    """

    def __init__(
        self, task: Task, steps: int, *, lr: float = DEFAULT_FINETUNE_LR, seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE, keep_masks: bool = True, precision: str = "auto",
    ) -> None:
        if not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"steps per pruning step must be a positive integer, got {steps!r}")
        self.task, self.steps, self.lr, self.seed = task, steps, lr, seed
        self.batch_size, self.keep_masks, self.precision = batch_size, keep_masks, precision
        self.histories: list[TrainHistory] = []

    def __call__(self, step: int, sparsity: float, model: nn.Module) -> None:
        """Fine-tune ``model`` for the configured steps; a different data seed per pruning step."""
        adapter_for(model)  # an unsupported model fails here, in one line, before any training
        history = finetune(
            model, self.task, self.steps, keep_masks=self.keep_masks, lr=self.lr,
            seed=self.seed + 1000 * (step + 1), batch_size=self.batch_size, precision=self.precision,
        )
        logger.info("recovery after pruning step %d (sparsity %.3f): %d steps, last loss %.4f",
                    step, sparsity, history.steps, history.losses[-1])
        self.histories.append(history)

