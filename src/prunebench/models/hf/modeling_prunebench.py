"""Per-layer shapes for plain ``transformers``: the modelling file prunebench writes beside a pruned encoder.

A structured-pruned encoder may keep a different number of attention heads or FFN neurons in each layer, or
skip a layer, which no built-in transformers config can express. Its ``config.json`` therefore names a model
type of its own (``prunebench-bert``, ...) and, through ``auto_map``, the classes below, so that

    AutoModel.from_pretrained(folder, trust_remote_code=True)
    SentenceTransformer(folder, trust_remote_code=True)

load it exactly; without ``trust_remote_code`` transformers refuses with its own message instead of loading
re-initialised weights. Each class is the family's own transformers class, built full-size from the config and
then cut, before any weight is loaded, to the shapes in ``config.prunebench_layers`` (one entry per layer:
``heads`` kept, ``head_dim``, ``neurons`` of the FFN, ``skipped``), so every tensor of ``model.safetensors``
loads with no missing, unexpected or mismatched key. In a config of these types ``num_attention_heads`` (``n_heads``
for DistilBERT) is the head count the head width derives from (``hidden / heads``), never a layer's count.

This file imports only ``torch`` and ``transformers``: it is copied unchanged into every folder that needs it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    CamembertConfig,
    CamembertForMaskedLM,
    CamembertForSequenceClassification,
    CamembertModel,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertModel,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)

#: Where a family keeps what a shrink changes: paths from the base model to the layer list and from a layer to
#: its projections, and the attention module's attributes that must follow its head count.
BERT_LAYOUT: dict[str, str | None] = {
    "layers": "encoder.layer", "attention": "attention.self", "query": "attention.self.query",
    "key": "attention.self.key", "value": "attention.self.value", "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "heads_attr": "num_attention_heads",
    "width_attr": "all_head_size", "head_dim_attr": "attention_head_size",
}
DISTILBERT_LAYOUT: dict[str, str | None] = {
    "layers": "transformer.layer", "attention": "attention", "query": "attention.q_lin", "key": "attention.k_lin",
    "value": "attention.v_lin", "attn_out": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2",
    "heads_attr": "n_heads", "width_attr": None, "head_dim_attr": "attention_head_size",
}


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def _linear(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    """A Linear of the new size on the old one's device and dtype (its values come from the checkpoint)."""
    with warnings.catch_warnings():  # an emptied block's Linear has no element to initialise: nothing to warn of
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features, device=old.weight.device, dtype=old.weight.dtype)


class SkippedLayer(nn.Module):
    """A layer pruned as a whole: returns its input. Its (zeroed) sub-modules stay under their own names."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        for name, child in layer.named_children():
            self.add_module(name, child)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class HeadlessAttention(nn.Module):
    """An attention module with no head left: the block adds only its output projection's bias.

    Returns an empty ``[B, S, 0]`` context (the projection after it then gives its bias) or, where the attention
    module owns its output projection (DistilBERT), that projection applied to it.
    """

    def __init__(self, attention: nn.Module, out_name: str | None) -> None:
        super().__init__()
        for name, child in attention.named_children():
            self.add_module(name, child)
        self.out_name = out_name

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # [B, S, 0]
        if self.out_name is not None:
            return getattr(self, self.out_name)(empty), None  # [B, S, D]: the bias
        return empty, None


def shrink_to_config(model: nn.Module, layout: dict[str, str | None]) -> None:
    """Cut every layer of ``model`` to ``model.config.prunebench_layers`` (shapes only: weights load after).

    Raises:
        ValueError: the per-layer shapes do not fit the model built from the config.
    """
    shapes = getattr(model.config, "prunebench_layers", None)
    stack = model.base_model.get_submodule(str(layout["layers"]))
    if not isinstance(shapes, list) or len(shapes) != len(stack):
        raise ValueError(f"config.prunebench_layers must list one shape per layer ({len(stack)} layers)")
    for index, shape in enumerate(shapes):
        layer = stack[index]
        attention = layer.get_submodule(str(layout["attention"]))
        head_dim, heads, neurons = int(shape["head_dim"]), int(shape["heads"]), int(shape["neurons"])
        if int(getattr(attention, str(layout["head_dim_attr"]))) != head_dim:
            raise ValueError(f"layer {index}: head width {head_dim} is not the config's "
                             f"{getattr(attention, str(layout['head_dim_attr']))}")
        query = layer.get_submodule(str(layout["query"]))
        hidden, width = query.in_features, heads * head_dim
        for which in ("query", "key", "value"):
            _set_submodule(layer, str(layout[which]), _linear(query, hidden, width))
        _set_submodule(layer, str(layout["attn_out"]), _linear(query, width, hidden))
        setattr(attention, str(layout["heads_attr"]), heads)
        if layout["width_attr"] is not None:
            setattr(attention, str(layout["width_attr"]), width)
        if heads == 0:  # attention cannot reshape an empty projection into heads
            inner = f"{layout['attention']}."
            out = str(layout["attn_out"])
            _set_submodule(layer, str(layout["attention"]),
                           HeadlessAttention(attention, out[len(inner):] if out.startswith(inner) else None))
        _set_submodule(layer, str(layout["ffn_in"]), _linear(query, hidden, neurons))
        _set_submodule(layer, str(layout["ffn_out"]), _linear(query, neurons, hidden))
        if shape.get("skipped"):
            stack[index] = SkippedLayer(layer)


def _pruned_class(base: type, config_class: type, layout: dict[str, str | None]) -> type:
    """``base`` whose ``__init__`` ends by cutting its layers to the config's per-layer shapes."""

    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        shrink_to_config(self, layout)

    name = f"Prunebench{base.__name__}"
    return type(name, (base,), {"__init__": __init__, "config_class": config_class, "__module__": __name__,
                                "__qualname__": name, "__doc__": f"{base.__name__} with per-layer shapes."})


class PrunebenchBertConfig(BertConfig):
    """A BERT config whose ``prunebench_layers`` gives every layer's shape."""

    model_type = "prunebench-bert"


class PrunebenchRobertaConfig(RobertaConfig):
    """A RoBERTa config whose ``prunebench_layers`` gives every layer's shape."""

    model_type = "prunebench-roberta"


class PrunebenchXLMRobertaConfig(XLMRobertaConfig):
    """An XLM-RoBERTa config whose ``prunebench_layers`` gives every layer's shape."""

    model_type = "prunebench-xlm-roberta"


class PrunebenchCamembertConfig(CamembertConfig):
    """A CamemBERT config whose ``prunebench_layers`` gives every layer's shape."""

    model_type = "prunebench-camembert"


class PrunebenchDistilBertConfig(DistilBertConfig):
    """A DistilBERT config whose ``prunebench_layers`` gives every layer's shape."""

    model_type = "prunebench-distilbert"


PrunebenchBertModel = _pruned_class(BertModel, PrunebenchBertConfig, BERT_LAYOUT)
PrunebenchBertForMaskedLM = _pruned_class(BertForMaskedLM, PrunebenchBertConfig, BERT_LAYOUT)
PrunebenchBertForSequenceClassification = _pruned_class(
    BertForSequenceClassification, PrunebenchBertConfig, BERT_LAYOUT)
PrunebenchRobertaModel = _pruned_class(RobertaModel, PrunebenchRobertaConfig, BERT_LAYOUT)
PrunebenchRobertaForMaskedLM = _pruned_class(RobertaForMaskedLM, PrunebenchRobertaConfig, BERT_LAYOUT)
PrunebenchRobertaForSequenceClassification = _pruned_class(
    RobertaForSequenceClassification, PrunebenchRobertaConfig, BERT_LAYOUT)
PrunebenchXLMRobertaModel = _pruned_class(XLMRobertaModel, PrunebenchXLMRobertaConfig, BERT_LAYOUT)
PrunebenchXLMRobertaForMaskedLM = _pruned_class(XLMRobertaForMaskedLM, PrunebenchXLMRobertaConfig, BERT_LAYOUT)
PrunebenchXLMRobertaForSequenceClassification = _pruned_class(
    XLMRobertaForSequenceClassification, PrunebenchXLMRobertaConfig, BERT_LAYOUT)
PrunebenchCamembertModel = _pruned_class(CamembertModel, PrunebenchCamembertConfig, BERT_LAYOUT)
PrunebenchCamembertForMaskedLM = _pruned_class(CamembertForMaskedLM, PrunebenchCamembertConfig, BERT_LAYOUT)
PrunebenchCamembertForSequenceClassification = _pruned_class(
    CamembertForSequenceClassification, PrunebenchCamembertConfig, BERT_LAYOUT)
PrunebenchDistilBertModel = _pruned_class(DistilBertModel, PrunebenchDistilBertConfig, DISTILBERT_LAYOUT)
PrunebenchDistilBertForMaskedLM = _pruned_class(DistilBertForMaskedLM, PrunebenchDistilBertConfig, DISTILBERT_LAYOUT)
PrunebenchDistilBertForSequenceClassification = _pruned_class(
    DistilBertForSequenceClassification, PrunebenchDistilBertConfig, DISTILBERT_LAYOUT)
