"""Recovery of pruned Hugging Face encoders by distillation from the dense teacher.

Recovery needs no labels: the student (the pruned model) learns to reproduce the dense teacher's hidden
states on unlabelled task text. The loss per batch is

    hidden   mean over layers of the per-token MSE between student and teacher states, each layer divided by
             the teacher's own variance there (layers with large activations would dominate otherwise);
             every layer when both have the same depth, else the last layer only (layers were removed)
    pooled   1 - cosine of the pooled embeddings (what a sentence-encoder user compares)
    kl       KL(teacher || student) of the output distributions: MLM logits at the masked positions (the
             text is masked as in MLM training), or a classifier's logits

A training batch of a masked-LM student with no masked position (text its tokenizer reads as special tokens
only) is skipped, not trained on: a KL over zero tokens is NaN, and one NaN step ruins every weight. A step
whose loss is not finite anyway stops the distillation before it is applied. What went wrong is
:meth:`DistillHistory.problem`, which the run records on the variant and shows in its summary.

Dropout stays off (the model is in eval mode while its weights train): the aim is to match the teacher on
this text, not to regularize. The batches come from :class:`~prunebench.tasks.hf_text.TokenizedTexts`
(its ``train_stream``), calibration batches from :func:`prunebench.tasks.calibration_batches` of the same.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.adapters import adapter_for
from prunebench.models.batch import Batch
from prunebench.tasks.hf_eval import Pooling, pool
from prunebench.tasks.precision import resolve_precision, step_context

if TYPE_CHECKING:
    from prunebench.tasks.training import Progress

logger = logging.getLogger(__name__)


@dataclass
class DistillHistory:
    """What a distillation run did: steps, seconds, and the loss at the start and the end."""

    steps: int = 0
    seconds: float = 0.0
    precision: str = "fp32"
    losses: list[float] = field(default_factory=list)
    held_out_before: float | None = None
    held_out_after: float | None = None
    reverted: bool = False
    #: The step whose weights were kept (the best held-out loss seen; 0: the start), with ``held_out``.
    kept_step: int | None = None
    held_out_checks: list[tuple[int, float]] = field(default_factory=list)
    #: Training batches skipped because a masked-LM student had no masked position in them.
    skipped_batches: int = 0
    #: The first non-finite training loss (as text: ``nan``, ``inf``) and its step; the loop stopped there.
    nonfinite_loss: str | None = None
    nonfinite_step: int | None = None

    def problem(self) -> str | None:
        """One line saying what went wrong (None: nothing): a non-finite loss, no step at all, or the weights
        put back to the start because no held-out check beat it. The run shows it in the summary's status."""
        skipped = (f" ({self.skipped_batches} batch{'es' if self.skipped_batches != 1 else ''} without a masked "
                   "token skipped)") if self.skipped_batches else ""
        if self.nonfinite_loss is not None:
            kept = ", reverted" if self.reverted or self.steps == 0 else ""
            return f"recovery failed: loss {self.nonfinite_loss} at step {self.nonfinite_step}{kept}{skipped}"
        if self.steps == 0:
            return f"recovery did no step{skipped}"
        if self.reverted:
            return f"recovery reverted: no held-out check beat the start{skipped}"
        return None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (first / last loss, not every step)."""
        first = self.losses[0] if self.losses else None
        last = sum(self.losses[-10:]) / len(self.losses[-10:]) if self.losses else None
        return {"steps": self.steps, "seconds": round(self.seconds, 2), "precision": self.precision,
                "first_loss": first, "last_loss_mean10": last, "held_out_before": self.held_out_before,
                "held_out_after": self.held_out_after, "reverted": self.reverted, "kept_step": self.kept_step,
                "held_out_checks": [[step, round(loss, 5)] for step, loss in self.held_out_checks],
                "skipped_batches": self.skipped_batches, "nonfinite_loss": self.nonfinite_loss,
                "problem": self.problem()}


#: Consecutive training batches without a masked position after which distillation gives up (else a step
#: bound with text that never masks anything would loop forever).
EMPTY_BATCH_LIMIT = 32


def masked_positions(student: nn.Module, batch: Batch) -> int | None:
    """Masked positions of ``batch`` a masked-LM student's KL term is computed over (None: not a masked-LM
    student, or a batch without labels, whose KL runs over every real token)."""
    if adapter_for(student).head_kind != "mlm" or "labels" not in batch:
        return None
    return int((batch["labels"] != -100).sum())


def distill_loss(student: nn.Module, teacher: nn.Module, batch: Batch, pooling: Pooling) -> torch.Tensor:
    """The distillation loss of one batch (see the module docstring); gradients flow into ``student`` only."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        t_out = teacher(**inputs, output_hidden_states=True, return_dict=True)
    s_out = student(**inputs, output_hidden_states=True, return_dict=True)
    mask = batch["attention_mask"].to(torch.float32).unsqueeze(-1)  # [B, S, 1]
    t_hidden, s_hidden = t_out.hidden_states[1:], s_out.hidden_states[1:]
    if len(t_hidden) != len(s_hidden):
        t_hidden, s_hidden = t_hidden[-1:], s_hidden[-1:]
    n_tok = mask.sum().clamp_min(1.0)
    loss = torch.zeros((), dtype=torch.float32)
    for t, s in zip(t_hidden, s_hidden, strict=True):
        t32, s32 = t.float(), s.float()  # [B, S, D]
        var = ((t32 - (t32 * mask).sum((0, 1)) / n_tok) ** 2 * mask).sum() / (n_tok * t32.shape[-1])
        loss = loss + (((s32 - t32) ** 2) * mask).sum() / (n_tok * t32.shape[-1]) / var.clamp_min(1e-6)
    loss = loss / len(t_hidden)
    t_pool = pool(t_hidden[-1].float(), batch["attention_mask"], pooling)  # [B, D]
    s_pool = pool(s_hidden[-1].float(), batch["attention_mask"], pooling)  # [B, D]
    loss = loss + (1.0 - F.cosine_similarity(s_pool, t_pool, dim=-1)).mean()
    kind = adapter_for(student).head_kind
    if kind in ("mlm", "cls"):
        t_logits, s_logits = t_out.logits.float(), s_out.logits.float()
        if kind == "mlm":
            where = batch["labels"] != -100 if "labels" in batch else batch["attention_mask"].bool()  # [B, S]
            t_logits, s_logits = t_logits[where], s_logits[where]  # [N, V]
        if t_logits.shape[0]:  # a KL over no masked token is 0/0: the term is left out, never NaN
            loss = loss + F.kl_div(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), log_target=True,
                                   reduction="batchmean")
    return loss


def _spent(elapsed: float, seconds: float | None, steps: int, max_steps: int | None) -> float:
    """The fraction of a distillation budget (a time, a step count, or both: the larger share) used so far."""
    frac = elapsed / seconds if seconds is not None else steps / max(1, max_steps or 1)
    return max(frac, steps / max_steps) if max_steps is not None else frac


def distill_(student: nn.Module, teacher: nn.Module, batches: Iterator[Batch], *, seconds: float | None = 180.0,
             max_steps: int | None = None, lr: float = 5e-5, pooling: Pooling | None = None,
             precision: str = "auto", held_out: Batch | None = None, warmup_steps: int = 10,
             checks: int = 4, progress: Progress | None = None) -> DistillHistory:
    """Train ``student`` in place towards ``teacher`` on ``batches`` until ``seconds`` or ``max_steps``.

    The learning rate warms up linearly over ``warmup_steps`` (Adam's first updates move every weight by about
    ``lr`` whatever its gradient: measured on MiniLM, 4 steps at 2e-4 without warm-up broke a frozen probe that
    the refit had kept within 2 pp) and decays linearly to 0 over the budget. With ``held_out``, the loss on
    that batch is measured at the start, at ``checks`` evenly spaced points of the budget and at the end, and
    the student keeps the weights of the best of them (``history.kept_step``; ``history.reverted`` when that
    is the start): recovery never leaves a model further from its teacher on unseen text than it found it.
    A held-out loss that is not finite never counts as the best.

    A masked-LM student's batch without a masked position is skipped (``history.skipped_batches``; after
    :data:`EMPTY_BATCH_LIMIT` in a row the loop stops), and a non-finite training loss stops the loop before its
    step is applied (``history.nonfinite_loss``): see :meth:`DistillHistory.problem`.

    ``progress`` is called after each step with (fraction of the budget spent, steps, loss), as training
    reports it (:data:`prunebench.tasks.training.Progress`), so a caller's progress bar moves during recovery.

    Raises:
        ValueError: neither a time nor a step bound, or an unknown precision.
    """
    if seconds is None and max_steps is None:
        raise ValueError("distillation needs a time budget (seconds) or max_steps")
    device = next(student.parameters()).device
    resolved = resolve_precision(precision, device)
    pooling = pooling or Pooling()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    was = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    history = DistillHistory(precision=resolved)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def check() -> float:
        """The held-out loss now; the weights are kept when it is the best so far."""
        nonlocal best
        with torch.no_grad():
            loss = float(distill_loss(student, teacher, held_out, pooling))  # type: ignore[arg-type]
        history.held_out_checks.append((history.steps, loss))
        if math.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, history.steps, {k: v.detach().clone() for k, v in student.state_dict().items()})
        return loss

    if held_out is not None:
        history.held_out_before = check()
    # The start's weights are in ``best`` unless its held-out loss was not finite; then they are kept here.
    start_state = None
    if held_out is not None and best is None:
        start_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    start = time.perf_counter()
    next_check = 1
    empty_in_row = 0
    try:
        while max_steps is None or history.steps < max_steps:
            elapsed = time.perf_counter() - start
            if seconds is not None and elapsed >= seconds:
                break
            frac = _spent(elapsed, seconds, history.steps, max_steps)
            if held_out is not None and next_check <= checks and frac >= next_check / (checks + 1):
                check()
                next_check += 1
            warm = min(1.0, (history.steps + 1) / max(1, warmup_steps))
            for group in opt.param_groups:
                group["lr"] = lr * warm * max(0.0, 1.0 - frac)
            batch = next(batches)
            if masked_positions(student, batch) == 0:
                history.skipped_batches += 1
                empty_in_row += 1
                if empty_in_row >= EMPTY_BATCH_LIMIT:
                    logger.warning("distillation stopped: %d batches in a row had no masked token", empty_in_row)
                    break
                continue
            empty_in_row = 0
            with torch.enable_grad(), step_context(resolved, device):
                loss = distill_loss(student, teacher, batch, pooling)
            if not bool(torch.isfinite(loss.detach())):
                # Stop before the step: Adam would spread the NaN into every weight it touches.
                value = float(loss.detach())
                history.nonfinite_loss = "NaN" if math.isnan(value) else str(value)
                history.nonfinite_step = history.steps
                logger.warning("distillation stopped: loss %s at step %d", history.nonfinite_loss, history.steps)
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.steps += 1
            history.losses.append(float(loss.detach()))
            if progress is not None:
                spent = _spent(time.perf_counter() - start, seconds, history.steps, max_steps)
                progress(min(spent, 1.0), history.steps, history.losses[-1])
        if held_out is not None:
            if not history.held_out_checks or history.held_out_checks[-1][0] != history.steps:
                check()
            if best is None:  # no finite held-out loss at all: nothing says training helped, so it is undone
                assert start_state is not None
                student.load_state_dict(start_state)
                history.kept_step, history.reverted = 0, True
            else:
                loss, step, state = best
                if step != history.steps:
                    student.load_state_dict(state)
                history.held_out_after, history.kept_step, history.reverted = loss, step, step == 0
    finally:
        student.train(was[0])
        teacher.train(was[1])
        student.zero_grad(set_to_none=True)
    history.seconds = time.perf_counter() - start
    logger.info("distilled %d steps in %.1f s (%s): loss %s", history.steps, history.seconds, resolved,
                history.to_dict())
    return history
