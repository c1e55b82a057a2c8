"""What ``prunebench search`` needs for a Hugging Face encoder: the dense model, calibration, loss and scores.

Accuracy is measured as the HF run measures it (:class:`~prunebench.tasks.hf_suite.HFEvaluator`): a base
(sentence) encoder by the embedding cosine to dense and a frozen linear probe fitted on the dense model's
train embeddings of the labelled task (the built-in tweets task by default); a classifier by its own head;
a masked LM by masked-token accuracy on the stdlib corpus. Calibration is the task's train text through the
model's own tokenizer, labelled (the probe's classes for a base encoder, whose task loss is the frozen probe's
cross-entropy; masked tokens for an MLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from prunebench.models.batch import Batch

#: Texts scored for importance and refitted on (the HF run's calibration size).
CALIB_TEXTS = 256
#: Texts per calibration batch. Fisher importance sums one squared gradient per batch, so small batches give
#: it more samples (256 texts: 32; the HF run's batches of 32 would give 8, a noisy estimate).
CALIB_BATCH = 8


@dataclass
class HFSearchInputs:
    """The dense HF model and what the search asks besides it.

    Attributes:
        dense: the model (eval mode).
        calib: labelled calibration batches.
        evaluate: ``evaluate(model, dense) -> EvalResult.to_dict()`` (``accuracy``, ``n_predictions``, ``metric``,
            ``hidden_cosine``, ``correct``, ``extra``, ...), as the built-in search's.
        loss_fn: the task loss of a base encoder (frozen probe), else None (the adapter's own loss).
        info: what the figures were measured on (model, kind, task, pooling).
    """

    dense: nn.Module
    calib: list[Batch]
    evaluate: Any
    loss_fn: Any
    info: dict[str, Any]


def hf_search_inputs(folder: str | Path, task: str | None = None, *, calib_texts: int = CALIB_TEXTS,
                     seed: int = 0) -> HFSearchInputs:
    """Load the HF model in ``folder`` (offline) with its tokenizer, task, evaluator and calibration batches.

    Args:
        folder: an HF model folder (config.json with ``model_type``, weights, tokenizer).
        task: ``tweets`` (default), ``csv:PATH`` or ``jsonl:PATH`` for base and classifier models; masked-LM
            models are scored on the stdlib corpus.
        calib_texts: calibration texts (0: none, which the search refuses with a message saying how).
        seed: calibration sample and evaluation seed.
    """
    from prunebench.models.adapters import adapter_for
    from prunebench.models.hf import load_hf_model, load_hf_tokenizer
    from prunebench.sources import hf_texts
    from prunebench.tasks import calibration_batches
    from prunebench.tasks.hf_eval import read_pooling
    from prunebench.tasks.hf_suite import HFEvaluator, probe_loss
    from prunebench.tasks.hf_text import TokenizedTexts

    dense = load_hf_model(folder).eval()
    tokenizer = load_hf_tokenizer(folder)
    pooling = read_pooling(folder)
    kind = adapter_for(dense).head_kind
    labelled, corpus = hf_texts(task or "mlm", kind)  # the run's rule: one home for which text scores a kind
    evaluator = HFEvaluator(dense, tokenizer, task=labelled, corpus=corpus, pooling=pooling, seed=seed)
    source = labelled or corpus
    assert source is not None
    texts = TokenizedTexts.of(source, tokenizer, mlm=kind == "mlm")
    calib = calibration_batches(texts, calib_texts, batch_size=CALIB_BATCH, seed=seed + 1) if calib_texts > 0 else []
    loss_fn = probe_loss(evaluator.probe, pooling) if evaluator.probe is not None else None

    def evaluate(model: nn.Module, reference: nn.Module) -> dict[str, Any]:
        # Paired against the evaluator's dense model (``reference``); the same record as the built-in search's.
        return evaluator.result(evaluator.score(model)).to_dict()

    info = {"model": str(folder), "kind": kind, "task": labelled.info if labelled else None,
            "corpus": corpus.info if corpus else None, "pooling": pooling.__dict__,
            "trivial_accuracy": evaluator.trivial_accuracy()}
    return HFSearchInputs(dense, calib, evaluate, loss_fn, info)
