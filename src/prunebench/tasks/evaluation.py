"""Evaluation: the task metric on a fixed, seeded sample of a split, plus fidelity to a reference model.

Fidelity is measured on the very same inputs for both models: top-1 agreement of predictions, mean
KL(reference || model) of the output distributions, and cosine similarity of mean-pooled hidden states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prunebench.models.batch import IGNORE_INDEX, Batch
from prunebench.models.config import TaskHead
from prunebench.models.encoder import TransformerEncoder
from prunebench.pruning.calibration import model_device, to_device
from prunebench.results.correctness import pack_correct
from prunebench.serde import check_schema_version, reject_unknown
from prunebench.tasks.base import DEFAULT_EVAL_BATCH_SIZE, DEFAULT_EVAL_BATCHES, Task

#: 2: ``cluster_sizes`` (predictions per sequence, so a bootstrap resamples sequences, not tokens) and
#: ``extra`` added, ``loss`` and ``n_batches`` optional: Hugging Face evaluations use the same record.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of one model on one split (and its fidelity to a reference, when one was given): the one
    evaluation record of every model, built-in (:func:`evaluate`) or Hugging Face
    (:meth:`prunebench.tasks.hf_suite.HFEvaluator.result`); :meth:`record` is its row in the store.

    Attributes:
        task: task name; ``task_key`` is the hash of its fingerprint.
        split: evaluated split.
        metric: the headline metric: ``"masked_token_accuracy"`` (MLM), ``"accuracy"`` (classification),
            ``"probe_accuracy"`` (an HF base encoder through its frozen probe).
        accuracy: top-1 accuracy over ``n_predictions`` masked tokens or examples.
        loss: mean cross-entropy (nats) over the same predictions (None where the model has no loss of its
            own to report: HF evaluations).
        trivial_accuracy: accuracy of always predicting the most frequent train token / majority class.
        macro_f1: classification only.
        agreement: fraction of predictions equal to the reference model's (None without a reference).
        kl_divergence: mean KL(reference || model) in nats per prediction.
        hidden_cosine: mean cosine similarity of each sequence's pooled final hidden state to the
            reference's (mean pooling for prunebench encoders; an HF model's own sentence-transformers pooling).
        n_predictions, n_sequences, n_batches, seed: what was evaluated (``n_batches`` None where batching
            is the evaluator's own business).
        correct: per-prediction correctness in evaluation order, one bit each, packed as base64 text (see
            :mod:`prunebench.results.correctness`). The same seed scores the same predictions for every model,
            so two models' bits pair up one to one: what a paired bootstrap of an accuracy difference needs.
        cluster_sizes: predictions per evaluated sequence, in order (MLM: its masked tokens, which are
            consecutive in ``correct``); None when every sequence is one prediction (classification). The
            bootstrap (:mod:`prunebench.analysis.bootstrap`) resamples these sequences whole.
        extra: figures particular to the evaluator, JSON-ready (HF: ``kind``, every ``metrics`` value, their
            paired ``deltas`` to dense, ``cosine_ci``, ``pooling``).
    """

    task: str
    task_key: str
    split: str
    metric: str
    accuracy: float
    loss: float | None
    trivial_accuracy: float
    n_predictions: int
    n_sequences: int
    n_batches: int | None
    seed: int
    macro_f1: float | None = None
    agreement: float | None = None
    kl_divergence: float | None = None
    hidden_cosine: float | None = None
    correct: str | None = None
    cluster_sizes: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def record(self, variant: str) -> dict[str, Any]:
        """The store's evaluation row of ``variant``: headline columns, everything in ``details``."""
        return {
            "variant": variant, "accuracy": self.accuracy, "loss": self.loss, "agreement": self.agreement,
            "kl": self.kl_divergence, "cosine": self.hidden_cosine, "trivial_accuracy": self.trivial_accuracy,
            "metric_name": self.metric, "details": self.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict`; unknown keys or a newer schema are errors."""
        reject_unknown(data, (f.name for f in fields(cls)), "EvalResult keys")
        check_schema_version(data.get("schema_version", SCHEMA_VERSION), SCHEMA_VERSION, "EvalResult")
        return cls(**data)


def _outputs(model: TransformerEncoder, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [N, K], targets [N], pooled hidden [B, D]) for the predictions the task scores; an MLM row's
    predictions are consecutive (row-major order of its masked positions).

    The batch is moved to the model's device (a run with ``--device cuda`` evaluates models that live on the
    GPU on batches built on the CPU); what is returned is on the CPU, where the scores are summed.
    """
    device = model_device(model)
    if device.type == "cpu":
        return _forward(model, batch)
    logits, target, pooled = _forward(model, to_device(batch, device))
    return logits.cpu(), target.cpu(), pooled.cpu()


def _forward(model: TransformerEncoder, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_outputs` on a batch already on the model's device."""
    mask = batch["attention_mask"]
    hidden = model.encode(batch["input_ids"], mask)  # [B, S, D]
    pooled = model.pool(hidden, mask)  # [B, D]
    labels = batch["labels"]
    if model.head_kind is TaskHead.MLM:
        where = labels != IGNORE_INDEX  # [B, S]
        return model.mlm_logits(hidden[where]), labels[where], pooled  # [N, V], [N], [B, D]
    return model.classify(hidden, mask), labels, pooled  # [B, C], [B], [B, D]


def macro_f1(pred: np.ndarray, target: np.ndarray, num_labels: int) -> float:
    """Mean F1 over the classes present in targets or predictions (numpy: also used inside bootstraps)."""
    pairs = np.bincount(target * num_labels + pred, minlength=num_labels * num_labels)
    confusion = pairs.reshape(num_labels, num_labels)  # [true, pred]
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    if not present.any():
        return 0.0
    return float((2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])).mean())


def _check_pair(model: TransformerEncoder, reference: TransformerEncoder, task: Task) -> None:
    if model.head_kind is not task.head:
        raise ValueError(f"model has a {model.head_kind.value} head but task {task.name!r} needs {task.head.value}")
    if reference.head_kind is not model.head_kind:
        raise ValueError("reference and model must have the same head (mlm or cls)")
    if reference.config.vocab_size != model.config.vocab_size or reference.config.d_model != model.config.d_model:
        raise ValueError("reference and model must share vocab_size and d_model to be compared")


@torch.no_grad()
def evaluate(
    model: TransformerEncoder,
    task: Task,
    *,
    reference: TransformerEncoder | None = None,
    split: str = "test",
    max_batches: int | None = DEFAULT_EVAL_BATCHES,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    seed: int = 0,
) -> EvalResult:
    """Evaluate ``model`` (in eval mode) on a fixed, seeded sample of ``split``.

    Args:
        model: the model to score; its train/eval mode is restored afterwards.
        task: the task (its tokenizer must match the model's vocabulary).
        reference: optional dense model; adds agreement, KL and hidden-state cosine on the same inputs.
        split: ``"train"``, ``"val"`` or ``"test"``.
        max_batches: cap on evaluated batches (None: the whole split).
        batch_size: sequences per batch.
        seed: fixes which sequences and (for MLM) which tokens are masked; same seed, same numbers.
    """
    if model.head_kind is not task.head:
        raise ValueError(f"model has a {model.head_kind.value} head but task {task.name!r} needs {task.head.value}")
    if reference is not None:
        _check_pair(model, reference, task)
    batches = task.eval_batches(split, batch_size=batch_size, max_batches=max_batches, seed=seed)
    if not batches:
        raise ValueError(f"the {split!r} split of task {task.name!r} is empty")
    trivial = task.trivial_prediction()
    modes = [(m, m.training) for m in (model, reference) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        correct = total = trivial_hits = n_seq = 0
        loss_sum = kl_sum = cos_sum = 0.0
        agree = 0
        preds, targets, hits, sizes = [], [], [], []
        for batch in batches:
            logits, target, pooled = _outputs(model, batch)  # [N, K], [N], [B, D]
            logp = F.log_softmax(logits.double(), dim=-1)  # [N, K]
            pred = logits.argmax(dim=-1)  # [N]
            correct += int((pred == target).sum())
            hits.append(pred == target)
            trivial_hits += int((target == trivial).sum())
            total += int(target.numel())
            loss_sum += float(F.nll_loss(logp, target, reduction="sum"))
            n_seq += int(pooled.shape[0])
            if task.head is TaskHead.MLM:
                sizes += (batch["labels"] != IGNORE_INDEX).sum(dim=1).tolist()  # this batch's rows, in order
            preds.append(pred)
            targets.append(target)
            if reference is not None:
                ref_logits, _, ref_pooled = _outputs(reference, batch)
                ref_logp = F.log_softmax(ref_logits.double(), dim=-1)  # [N, K]
                agree += int((ref_logits.argmax(dim=-1) == pred).sum())
                kl_sum += float((ref_logp.exp() * (ref_logp - logp)).sum())
                cos_sum += float(F.cosine_similarity(pooled.double(), ref_pooled.double(), dim=-1).sum())
    finally:
        for m, was_training in modes:
            m.train(was_training)
    is_mlm = task.head is TaskHead.MLM
    return EvalResult(
        task=task.name,
        task_key=task.key(),
        split=split,
        metric="masked_token_accuracy" if is_mlm else "accuracy",
        accuracy=correct / total,
        loss=loss_sum / total,
        trivial_accuracy=trivial_hits / total,
        n_predictions=total,
        n_sequences=n_seq,
        n_batches=len(batches),
        seed=seed,
        macro_f1=None if is_mlm else macro_f1(torch.cat(preds).numpy(), torch.cat(targets).numpy(), task.num_labels),
        agreement=None if reference is None else agree / total,
        kl_divergence=None if reference is None else kl_sum / total,
        hidden_cosine=None if reference is None else cos_sum / n_seq,
        correct=pack_correct(torch.cat(hits).tolist()),
        cluster_sizes=sizes if is_mlm else None,
    )

