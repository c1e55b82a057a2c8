"""The forwards, gates and MAC counts of the HF adapter (mixed into :class:`HFEncoderAdapter`).

Inputs are the shared batch format (``input_ids``, ``attention_mask``, optional ``token_type_ids`` and
``labels``); what reaches the HF model are keyword arguments, exactly as a user calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.arch import check_kind
from prunebench.models.batch import IGNORE_INDEX, Batch, LossFn

#: Keys of :meth:`HFForwardsMixin.macs` besides ``total`` (the same parts as the built-in encoder's count).
PARTS = ("attn_proj", "attn_scores", "attn_values", "ffn", "head")


class HFForwardsMixin:
    """Forwards of an HF encoder; expects the attributes and lookups of :class:`HFEncoderAdapter`."""

    # Provided by HFEncoderAdapter (declared here for readers; the mixin is never used alone).
    model: nn.Module
    head_kind: str
    loss_fn: LossFn | None
    layout: Any
    base: nn.Module
    stack: nn.ModuleList
    n_layers: int
    #: Attribute of an MLM model holding its head (BERT ``cls``; RoBERTa-style families ``lm_head``).
    mlm_head_attr: str = "cls"

    def model_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The keyword arguments the HF forward takes from ``batch`` (labels excluded)."""
        inputs = {"input_ids": batch["input_ids"]}
        if batch.get("attention_mask") is not None:
            inputs["attention_mask"] = batch["attention_mask"]
        if self.layout.token_types and batch.get("token_type_ids") is not None:
            inputs["token_type_ids"] = batch["token_type_ids"]
        return inputs

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """Last hidden states [B, S, D] of the encoder (calibration, fidelity, distillation)."""
        return self.base(**self.model_inputs(batch)).last_hidden_state

    def outputs(self, batch: Batch) -> torch.Tensor:
        """What the whole model outputs: logits (MLM [B, S, V], classifier [B, C]) or last hidden states."""
        out = self.model(**self.model_inputs(batch))
        return out.logits if self.head_kind != "base" else out.last_hidden_state

    def loss(self, batch: Batch) -> torch.Tensor:
        """Scalar task loss: ``loss_fn`` if given, else masked-token CE (MLM) or CE on labels (classifier).

        Raises:
            ValueError: a base encoder without ``loss_fn`` (it has no task loss of its own), or no labels.
        """
        if self.loss_fn is not None:
            return self.loss_fn(self.model, batch)
        name = type(self.model).__name__
        if self.head_kind == "base":
            raise ValueError(
                f"{name} is a base encoder with no task loss of its own; give its adapter a loss_fn "
                "(e.g. a frozen-probe or distillation loss) to use taylor or fine-tuning"
            )
        if "labels" not in batch:
            raise ValueError("this batch has no 'labels'; a task loss needs labelled batches")
        labels = batch["labels"]
        if self.head_kind == "mlm":
            # The vocabulary projection only where there is a label: it is by far the largest matmul, and
            # most positions carry no loss (the same value as the model's own loss, far less work).
            where = labels != IGNORE_INDEX  # [B, S]
            hidden = self.hidden_states(batch)[where]  # [N, D]
            return F.cross_entropy(self.mlm_logits(hidden), labels[where])  # [N, V] vs [N]
        logits = self.model(**self.model_inputs(batch)).logits  # [B, C]
        return F.cross_entropy(logits, labels)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The MLM head (the model's ``mlm_head_attr`` module) applied to hidden states [..., D] -> [..., V]."""
        return getattr(self.model, self.mlm_head_attr)(hidden)

    def forward_call(self, batch: Batch, *, include_head: bool = False) -> Callable[[], Any]:
        """The call that is timed: the HF module itself, called with keyword arguments as a user calls it.

        Models with an MLM or classification head run their base encoder (``model.bert`` ...) unless
        ``include_head``: the head is not pruned and (for MLM) would dominate every speedup. A base encoder
        always runs whole (with its pooler, if it has one), which is what its users call.
        """
        inputs = self.model_inputs(batch)
        target = self.model if include_head or self.head_kind == "base" else self.base
        return lambda: target(**inputs)

    # ----------------------------------------------------------------------- what the search asks
    def output_linear(self, kind: str, layer: int) -> nn.Linear:
        """The Linear that reads every group of ``kind``: the attention output projection (heads) or the
        FFN output projection (neurons); a least-squares refit of it makes up for removed groups."""
        check_kind(kind)
        if kind == "layers":
            raise ValueError("a whole layer has no single output projection; use 'heads' or 'neurons'")
        return self._lin(layer, "attn_out" if kind == "heads" else "ffn_out")  # type: ignore[attr-defined]

    def layer_call(self, index: int, batch_size: int, seq_len: int, seed: int = 0) -> Callable[[], Any]:
        """A zero-argument call running layer ``index`` alone on seeded hidden states [B, S, D] (no padding).

        The layer gets no attention mask, which is what the encoder passes it for unpadded inputs (HF drops
        an all-ones mask before the layers), so it runs the kernels it runs inside the model.
        """
        block = self.stack[index]
        ref = self._lin(index, "ffn_in").weight  # type: ignore[attr-defined]
        gen = torch.Generator().manual_seed(seed)
        hidden = torch.randn(batch_size, seq_len, int(getattr(self.model.config, self.layout.config_hidden)),
                             generator=gen).to(device=ref.device, dtype=ref.dtype)  # [B, S, D]
        return lambda: block(hidden, None)

    # ------------------------------------------------------------------------------------------ gates
    @contextmanager
    def gates(self, kind: str) -> Iterator[list[torch.Tensor]]:
        """Per-layer gates of ones (requires grad) multiplying each group's output; hooks removed on exit.

        Heads are gated at the input of the attention output projection, neurons at the input of the FFN
        output projection, layers on the layer's residual update; ``dLoss/dgate`` is the Taylor importance.
        """
        check_kind(kind)
        handles, gates = [], []
        try:
            for i in range(self.n_layers):
                ref = self._lin(i, "ffn_in").weight
                size = 1 if kind == "layers" else self.group_count(kind, i)
                g = torch.ones(size, device=ref.device, dtype=ref.dtype, requires_grad=True)
                gates.append(g)
                if kind == "heads":
                    target = self._lin(i, "attn_out")
                    handles.append(target.register_forward_pre_hook(_input_gate(g, self.head_dim(i))))
                elif kind == "neurons":
                    handles.append(self._lin(i, "ffn_out").register_forward_pre_hook(_input_gate(g, 1)))
                else:
                    handles.append(self.layer(i).register_forward_hook(_layer_gate(g)))
            yield gates
        finally:
            for h in handles:
                h.remove()

    # ------------------------------------------------------------------------------------------- cost
    def macs(self, batch_size: int, seq_len: int, *, effective: bool = False,
             include_head: bool = False) -> dict[str, int]:
        """MACs of one forward at ``[batch_size, seq_len]`` by part, with ``total``; from the actual widths.

        Counted as for the built-in encoder: every Linear of the layers, the attention score and value
        matmuls, and with ``include_head`` every other Linear of the model (the pooler and classifier once
        per sequence, an MLM head at every position). ``effective`` counts Linear MACs of non-zero weights.
        """
        for label, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        tokens = batch_size * seq_len
        out = dict.fromkeys(PARTS, 0)
        with torch.no_grad():
            for i in range(self.n_layers):
                if self.is_skipped(i):
                    continue
                linears = list(self.layer_linears(i).values())
                out["attn_proj"] += sum(_weight_macs(lin.weight, tokens, effective) for lin in linears[:4])
                out["ffn"] += sum(_weight_macs(lin.weight, tokens, effective) for lin in linears[4:])
                # Scores: [B, H, S, Dh] @ [B, H, Dh, S]; values: [B, H, S, S] @ [B, H, S, Dh].
                per = batch_size * linears[0].out_features * seq_len * seq_len
                out["attn_scores"] += per
                out["attn_values"] += per
            if include_head:
                rows = tokens if self.head_kind == "mlm" else batch_size
                inner = {id(m) for m in self.stack.modules()}
                for module in self.model.modules():
                    if isinstance(module, nn.Linear) and id(module) not in inner:
                        out["head"] += _weight_macs(module.weight, rows, effective)
        out["total"] = sum(out[k] for k in PARTS)
        return out


def _weight_macs(weight: torch.Tensor, rows: int, effective: bool) -> int:
    """MACs of ``rows`` rows through a weight matrix: dense size or non-zero count."""
    return rows * (int(torch.count_nonzero(weight).item()) if effective else weight.numel())


def _input_gate(g: torch.Tensor, width: int):
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        scale = g.repeat_interleave(width) if width > 1 else g  # [groups * width]
        return (args[0] * scale, *args[1:])  # [B, S, groups*width] * [groups*width]

    return hook


def _layer_gate(g: torch.Tensor):
    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        x = args[0]  # [B, S, D] layer input
        if isinstance(out, tuple):
            return (x + g * (out[0] - x), *out[1:])
        return x + g * (out - x)  # the gate scales the layer's whole update

    return hook
