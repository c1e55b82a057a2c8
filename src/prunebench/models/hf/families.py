"""One adapter per supported Hugging Face family: a layout plus the model classes it accepts (by type).

Each family accepts its base encoder, its masked-LM model and its sequence classifier. Other heads of the
same families (token classification, QA, ...) are not accepted: their task loss is not defined here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    CamembertForMaskedLM,
    CamembertForSequenceClassification,
    CamembertModel,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertModel,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)

from prunebench.models.hf.adapter import HFEncoderAdapter
from prunebench.models.hf.layout import BERT_LAYOUT, DISTILBERT_LAYOUT


class BertAdapter(HFEncoderAdapter):
    """BERT (and BERT-architecture checkpoints such as MiniLM / all-MiniLM-L6-v2)."""

    name = "bert"
    family = "BERT"
    layout = BERT_LAYOUT
    model_classes: ClassVar[dict[type, str]] = {BertModel: "base", BertForMaskedLM: "mlm",
                                                BertForSequenceClassification: "cls"}


class _RobertaStyle:
    """RoBERTa-style families: position ids start after the padding id (those rows are never used by tokens),
    and the MLM head is ``lm_head``."""

    model: Any
    mlm_head_attr = "lm_head"

    def position_offset(self) -> int:
        return int(self.model.config.pad_token_id) + 1


class RobertaAdapter(_RobertaStyle, HFEncoderAdapter):
    """RoBERTa: BERT's module names under ``roberta``."""

    name = "roberta"
    family = "RoBERTa"
    layout = BERT_LAYOUT
    model_classes: ClassVar[dict[type, str]] = {RobertaModel: "base", RobertaForMaskedLM: "mlm",
                                                RobertaForSequenceClassification: "cls"}


class XLMRobertaAdapter(_RobertaStyle, HFEncoderAdapter):
    """XLM-RoBERTa: the RoBERTa layout in its own module."""

    name = "xlm-roberta"
    family = "XLM-RoBERTa"
    layout = BERT_LAYOUT
    model_classes: ClassVar[dict[type, str]] = {XLMRobertaModel: "base", XLMRobertaForMaskedLM: "mlm",
                                                XLMRobertaForSequenceClassification: "cls"}


class CamembertAdapter(_RobertaStyle, HFEncoderAdapter):
    """CamemBERT: the RoBERTa layout in its own module."""

    name = "camembert"
    family = "CamemBERT"
    layout = BERT_LAYOUT
    model_classes: ClassVar[dict[type, str]] = {CamembertModel: "base", CamembertForMaskedLM: "mlm",
                                                CamembertForSequenceClassification: "cls"}


class DistilBertAdapter(HFEncoderAdapter):
    """DistilBERT: ``q_lin``/``k_lin``/``v_lin``/``out_lin`` and ``ffn.lin1``/``lin2``, no token types."""

    name = "distilbert"
    family = "DistilBERT"

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """DistilBERT's MLM head (its four modules sit on the model itself) on hidden states [..., D]."""
        m = self.model
        return m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(hidden))))
    layout = DISTILBERT_LAYOUT
    model_classes: ClassVar[dict[type, str]] = {DistilBertModel: "base", DistilBertForMaskedLM: "mlm",
                                                DistilBertForSequenceClassification: "cls"}


#: Every HF adapter, in the order they are tried.
HF_ADAPTERS: tuple[type[HFEncoderAdapter], ...] = (
    BertAdapter, RobertaAdapter, XLMRobertaAdapter, CamembertAdapter, DistilBertAdapter,
)


def supported_architectures() -> list[str]:
    """Every supported HF model class name (what an unsupported-architecture error lists)."""
    return [name for adapter in HF_ADAPTERS for name in adapter.class_names()]


def hf_adapter_class(model: object) -> type[HFEncoderAdapter]:
    """The adapter class for ``model``.

    Raises:
        ValueError: one line listing the supported architectures.
    """
    for adapter in HF_ADAPTERS:
        if adapter.matches(model):  # type: ignore[arg-type]
            return adapter
    raise ValueError(
        f"unsupported architecture {type(model).__name__}; supported: {', '.join(supported_architectures())}"
    )


def class_for_architecture(architecture: str) -> type:
    """The supported model class called ``architecture`` (a ``config.json`` "architectures" entry).

    Raises:
        ValueError: one line listing the supported architectures.
    """
    for adapter in HF_ADAPTERS:
        for cls in adapter.model_classes:
            if cls.__name__ == architecture:
                return cls
    raise ValueError(f"unsupported architecture {architecture}; supported: {', '.join(supported_architectures())}")
