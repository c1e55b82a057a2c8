"""Accuracy of Hugging Face encoders against their dense original, with paired CIs on every delta.

:class:`HFEvaluator` computes everything about the dense model once (its embeddings, its predictions, the
frozen probe fitted on its train embeddings) and then scores any variant on exactly the same examples:

    base / sentence encoder  embedding cosine to dense (per example, pooled as the model folder says) and
                             the frozen probe's accuracy and macro-F1 on the labelled test split
    sequence classifier      accuracy and macro-F1 of its own head on the labelled test split, embedding cosine
    masked LM                masked-token accuracy on stdlib-source rows (its own tokenizer), hidden cosine

The dense model's deltas are exactly 0, which the tests use as a check of the pairing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunebench.analysis.bootstrap import DeltaCI, mean_ci, paired_delta_ci, paired_stat_ci
from prunebench.models.adapters import adapter_for
from prunebench.results.correctness import pack_correct
from prunebench.tasks.evaluation import EvalResult, macro_f1
from prunebench.tasks.hf_eval import (
    LinearProbe,
    Pooling,
    classifier_predictions,
    embed,
    hidden_states,
    mlm_hits,
    pool,
)
from prunebench.tasks.hf_text import TextTask, mask_batch, pack_rows

logger = logging.getLogger(__name__)

#: The headline metric of each model kind (the summary's "accuracy" column).
PRIMARY_METRIC = {"base": "probe_accuracy", "cls": "accuracy", "mlm": "masked_token_accuracy"}


@dataclass(frozen=True)
class HFAccuracy:
    """One model's scores and their paired deltas to dense.

    Attributes:
        kind: ``base``, ``cls`` or ``mlm``.
        metrics: metric name -> value (fractions; ``embedding_cosine`` is a mean cosine).
        deltas: metric name -> paired delta to dense with its 95% CI.
        cosine_ci: (low, high) bootstrap CI of the mean embedding cosine to dense.
        n_examples: test examples (sequences for MLM) every metric was computed on.
        correct: per-prediction correctness of the headline metric (examples; masked tokens for MLM), in a
            fixed order shared by every model scored by one evaluator (not part of :meth:`to_dict`).
        cluster_sizes: MLM: masked tokens per row (consecutive in ``correct``), which the paired bootstrap
            resamples whole; None when every example is one prediction.
    """

    kind: str
    metrics: dict[str, float]
    deltas: dict[str, DeltaCI]
    cosine_ci: tuple[float, float]
    n_examples: int
    info: dict[str, Any] = field(default_factory=dict)
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)
    cluster_sizes: list[int] | None = field(default=None, repr=False, compare=False)

    @property
    def primary(self) -> str:
        """Name of the headline metric."""
        return PRIMARY_METRIC[self.kind]

    def describe(self) -> str:
        """``"probe_accuracy 71.2% (-0.8 pp [-1.6, -0.1]); cosine 0.93"`` style one-liner."""
        name = self.primary
        return (f"{name} {self.metrics[name] * 100:.1f}% ({self.deltas[name].describe()}); "
                f"cosine to dense {self.metrics['embedding_cosine']:.3f}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"kind": self.kind, "primary": self.primary, "metrics": dict(self.metrics),
                "deltas": {k: v.to_dict() for k, v in self.deltas.items()}, "cosine_ci": list(self.cosine_ci),
                "n_examples": self.n_examples, **self.info}


class HFEvaluator:
    """Scores variants of one dense HF encoder on fixed test examples.

    Args:
        dense: the dense model (any ``*Model``, ``*ForMaskedLM`` or ``*ForSequenceClassification``).
        tokenizer: its tokenizer.
        task: the labelled text task (base and classifier models); its train split fits the probe.
        corpus: unlabelled text for MLM models (the stdlib corpus).
        pooling: how embeddings are pooled (see :func:`prunebench.tasks.hf_eval.read_pooling`).
        max_length: tokens per labelled text (truncation).
        mlm_seq_len, mlm_rows: MLM test rows and their length.
        seed: MLM masking and bootstrap seed.
        max_test: score at most this many labelled test texts (``--quick``); None: the whole test split.

    Raises:
        ValueError: a task the model kind cannot be scored on (no labels, a class count that does not match
            the classifier head).
    """

    def __init__(self, dense: nn.Module, tokenizer: Any, *, task: TextTask | None = None,
                 corpus: TextTask | None = None, pooling: Pooling | None = None, max_length: int = 128,
                 mlm_seq_len: int = 128, mlm_rows: int = 256, seed: int = 0, max_test: int | None = None) -> None:
        self.kind = adapter_for(dense).head_kind
        self.tokenizer = tokenizer
        self.pooling = pooling or Pooling()
        self.max_length = max_length
        self.seed = seed
        self.task = task
        self.corpus = corpus
        self.probe: LinearProbe | None = None
        if self.kind == "mlm":
            if corpus is None:
                raise ValueError("a masked-LM model is scored on a text corpus; pass corpus=corpus_text_task()")
            rows = pack_rows(tokenizer, corpus.texts["test"], mlm_seq_len, mlm_rows)
            self.masked = mask_batch({"input_ids": rows.input_ids, "attention_mask": rows.attention_mask}, tokenizer,
                                     torch.Generator().manual_seed(seed))
            self.test_texts: list[str] = []
        else:
            if task is None or task.labels is None:
                from prunebench.tasks.factory import SCORE, task_forms

                raise ValueError(f"a {self.kind} model is scored on a labelled task: "
                                 f"{', '.join(task_forms(self.kind, SCORE))}")
            self.test_texts = task.texts["test"][:max_test]
            self.test_labels = task.label_tensor("test").numpy()[:max_test]
            if self.kind == "cls":
                n = int(getattr(dense.config, "num_labels", 0))
                if n != task.num_labels:
                    raise ValueError(f"the classifier has {n} labels but task {task.name!r} has {task.num_labels} "
                                     f"({', '.join(task.label_names)}); pass a file with the model's own labels")
            else:
                train_emb = self._embed(dense, task.texts["train"])  # [N_train, D]
                self.probe = LinearProbe().fit(train_emb, task.label_tensor("train"), task.num_labels)
        self.dense_emb = self._test_embeddings(dense)  # [N, D]
        self.dense_out = self._outputs(dense)
        self._dense = dense  # scoring it again reuses what was just computed (the test set costs most)

    # ---------------------------------------------------------------------------------------- internals
    def _embed(self, model: nn.Module, texts: list[str]) -> torch.Tensor:
        return embed(model, self.tokenizer, texts, self.pooling, max_length=self.max_length)

    @torch.no_grad()
    def _test_embeddings(self, model: nn.Module) -> torch.Tensor:
        if self.kind != "mlm":
            return self._embed(model, self.test_texts)
        was_training = model.training
        model.eval()
        try:
            out = []
            for s in range(0, len(self.masked["input_ids"]), 32):
                batch = {k: v[s : s + 32] for k, v in self.masked.items() if k != "labels"}
                out.append(pool(hidden_states(model, batch), batch["attention_mask"], Pooling()).float())
        finally:
            model.train(was_training)
        return torch.cat(out)  # [N, D]

    def _outputs(self, model: nn.Module, emb: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """Per-example predictions: ``pred`` (class ids) or MLM ``hits`` / ``counts``."""
        if self.kind == "mlm":
            hits, counts, tokens = mlm_hits(model, self.masked)
            return {"hits": hits.numpy(), "counts": counts.numpy(), "tokens": tokens.numpy()}
        if self.kind == "cls":
            pred = classifier_predictions(model, self.tokenizer, self.test_texts, max_length=self.max_length)
            return {"pred": pred.numpy()}
        assert self.probe is not None
        return {"pred": self.probe.predict(self.dense_emb if emb is None else emb).numpy()}

    # ------------------------------------------------------------------------------------------ scoring
    def score(self, model: nn.Module) -> HFAccuracy:
        """Scores of ``model`` (a variant of the dense model, same tokenizer) with paired deltas to dense.

        The dense model itself (the same object, which must not have changed since) is scored from the
        outputs computed at construction.
        """
        emb = self.dense_emb if model is self._dense else self._test_embeddings(model)  # [N, D]
        if emb.shape[1] != self.dense_emb.shape[1]:
            raise ValueError(f"embedding width {emb.shape[1]} differs from dense {self.dense_emb.shape[1]}")
        cos = F.cosine_similarity(emb.double(), self.dense_emb.double(), dim=-1).numpy()  # [N]
        cos_mean, cos_low, cos_high = mean_ci(cos, seed=self.seed)
        out = self.dense_out if model is self._dense else self._outputs(model, emb)
        ref = self.dense_out
        metrics: dict[str, float] = {"embedding_cosine": cos_mean}
        deltas: dict[str, DeltaCI] = {}
        if self.kind == "mlm":
            name = "masked_token_accuracy"
            if int(out["counts"].sum()) == 0:  # a tokenizer that masks nothing in this text: no prediction at all
                raise ValueError("no masked token to score: the test text has no token this tokenizer can mask")
            metrics[name] = float(out["hits"].sum() / out["counts"].sum())
            sizes: list[int] | None = out["counts"].tolist()
            deltas[name] = paired_delta_ci(ref["tokens"], out["tokens"], sizes, seed=self.seed)
            correct = out["tokens"]
        else:
            y = self.test_labels
            k = int(max(y.max(), out["pred"].max(), ref["pred"].max())) + 1
            prefix = "probe_" if self.kind == "base" else ""
            metrics[f"{prefix}accuracy"] = float((out["pred"] == y).mean())
            metrics[f"{prefix}macro_f1"] = macro_f1(out["pred"], y, k)
            deltas[f"{prefix}accuracy"] = paired_delta_ci(ref["pred"] == y, out["pred"] == y, seed=self.seed)
            deltas[f"{prefix}macro_f1"] = paired_stat_ci(
                lambda i: macro_f1(out["pred"][i], y[i], k), lambda i: macro_f1(ref["pred"][i], y[i], k),
                len(y), seed=self.seed,
            )
            correct, sizes = out["pred"] == y, None
        info = {"task": self.task.name if self.task else "corpus", "pooling": self.pooling.mode,
                "normalize": self.pooling.normalize}
        return HFAccuracy(self.kind, metrics, deltas, (cos_low, cos_high), len(cos), info, correct, sizes)

    def result(self, res: HFAccuracy) -> EvalResult:
        """``res`` as the one evaluation record (:class:`~prunebench.tasks.evaluation.EvalResult`): the headline
        metric and its per-prediction correctness (with masked tokens per row for MLM), what it was measured on,
        and every HF metric with its paired delta to dense under ``extra``."""
        source = self.corpus if self.kind == "mlm" else self.task
        correct = res.correct if res.correct is not None else np.zeros(0, dtype=bool)
        prefix = "probe_" if self.kind == "base" else ""
        return EvalResult(
            task=source.name if source else "", task_key=source.key() if source else "", split="test",
            metric=res.primary, accuracy=res.metrics[res.primary], loss=None,
            trivial_accuracy=self.trivial_accuracy(), n_predictions=len(correct), n_sequences=res.n_examples,
            n_batches=None, seed=self.seed, macro_f1=res.metrics.get(f"{prefix}macro_f1"),
            hidden_cosine=res.metrics["embedding_cosine"], correct=pack_correct(correct),
            cluster_sizes=res.cluster_sizes,
            extra={"kind": res.kind, "metrics": dict(res.metrics),
                   "deltas": {k: v.to_dict() for k, v in res.deltas.items()}, "cosine_ci": list(res.cosine_ci),
                   **{k: v for k, v in res.info.items() if k != "task"}},
        )

    def trivial_accuracy(self) -> float:
        """Accuracy of always predicting the majority train class (MLM: the most frequent masked test token)."""
        if self.kind == "mlm":
            labels = self.masked["labels"][self.masked["labels"] != -100]
            return float(torch.bincount(labels).max() / len(labels))
        assert self.task is not None
        majority = int(np.bincount(self.task.labels["train"]).argmax())  # type: ignore[index]
        return float((self.test_labels == majority).mean())


def probe_loss(probe: LinearProbe, pooling: Pooling) -> Any:
    """``loss_fn(model, batch)``: cross-entropy of the frozen probe on the model's pooled embeddings.

    The task loss of a base encoder (it has none of its own) for Taylor importance: labelled batches of
    the task's train text; the probe stays frozen, only the encoder's gates or weights receive gradients.
    """

    def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = pool(hidden_states(model, batch), batch["attention_mask"], pooling)  # [B, D]
        return F.cross_entropy(probe.logits(emb).float(), batch["labels"])

    return loss
