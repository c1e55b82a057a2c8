"""The :class:`ArchAdapter` of prunebench's own :class:`TransformerEncoder` (the first implementation).

The pruning algorithms speak of *prunable Linears*, *heads*, *neurons* and *layers*; this adapter says
where those live in a :class:`TransformerEncoder` and how to zero or physically remove them, and owns the
encoder's forwards (hidden states, loss, timed call), MAC count and shape manifest. Nothing in
``prunebench.pruning`` touches ``model.layers[i].attn`` directly; it gets this class from
:func:`prunebench.models.adapters.adapter_for`.

Groups of one encoder layer (H heads of width Dh, F neurons, D = d_model):
    head h   : rows h*Dh:(h+1)*Dh of each of the q, k and v blocks of qkv_proj (weights and biases)
               + columns h*Dh:(h+1)*Dh of out_proj
    neuron j : row j of fc_in (weight and bias) + column j of fc_out
    layer    : every prunable weight of the layer, plus both output biases (the layer becomes identity)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.arch import GROUP_KINDS, check_kind
from prunebench.models.batch import IGNORE_INDEX, Batch
from prunebench.models.config import EncoderConfig, TaskHead
from prunebench.models.edit_ops import head_columns, head_gate, layer_gate, neuron_gate, new_linear, qkv_rows
from prunebench.models.encoder import EncoderLayer, TransformerEncoder
from prunebench.models.macs import encoder_macs

__all__ = ["GROUP_KINDS", "EncoderAdapter"]


class EncoderAdapter:
    """Locates and edits the prunable structure of a :class:`TransformerEncoder`.

    Args:
        model: the encoder; the adapter holds a reference and edits it in place when asked.
    """

    name: ClassVar[str] = "prunebench-encoder"

    def __init__(self, model: TransformerEncoder) -> None:
        if not isinstance(model, TransformerEncoder):
            raise ValueError(f"EncoderAdapter needs a TransformerEncoder, got {type(model).__name__}")
        self.model = model

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether ``model`` is a prunebench :class:`TransformerEncoder`."""
        return isinstance(model, TransformerEncoder)

    @classmethod
    def from_manifest(cls, config: dict[str, Any], manifest: dict[str, Any]) -> TransformerEncoder:
        """An encoder of ``config``; its widths are the config's own (an :class:`EncoderConfig` holds every
        per-layer width), the manifest's ``layers`` only where the config has none.

        Raises:
            ValueError / KeyError / TypeError: an invalid config or manifest (io reports it in one line).
        """
        if not config.get("layers") and manifest.get("layers"):
            config = {**config, "layers": manifest["layers"]}
        return TransformerEncoder(EncoderConfig.from_dict(config))

    # ----------------------------------------------------------------------------------------- lookup
    @property
    def n_layers(self) -> int:
        """Encoder layers currently present."""
        return len(self.model.layers)

    @property
    def vocab_size(self) -> int:
        """Size of the token vocabulary."""
        return self.model.embed_tokens.num_embeddings

    @property
    def head_kind(self) -> str:
        """``mlm`` or ``cls`` (:data:`~prunebench.models.arch.HEAD_KINDS`): the model's :class:`TaskHead`."""
        return self.model.head_kind.value

    @property
    def max_seq_len(self) -> int:
        """Longest sequence the learned position table covers."""
        return self.model.max_positions

    def layer(self, index: int) -> EncoderLayer:
        """Encoder layer ``index``."""
        return self.model.layers[index]

    def group_count(self, kind: str, layer: int | None = None) -> int:
        """Heads or neurons of ``layer``; for ``"layers"`` the number of layers."""
        check_kind(kind)
        if kind == "layers":
            return self.n_layers
        assert layer is not None, "heads and neurons are counted per layer"
        block = self.layer(layer)
        return block.attn.n_heads if kind == "heads" else block.ffn.fc_in.out_features

    @staticmethod
    def layer_prefix(index: int) -> str:
        """Qualified-name prefix of layer ``index`` (``layers.3.``)."""
        return f"layers.{index}."

    def layer_linears(self, index: int) -> dict[str, nn.Linear]:
        """The four prunable Linears of layer ``index`` by qualified name, in a fixed order."""
        block = self.layer(index)
        p = self.layer_prefix(index)
        return {
            p + "attn.qkv_proj": block.attn.qkv_proj,
            p + "attn.out_proj": block.attn.out_proj,
            p + "ffn.fc_in": block.ffn.fc_in,
            p + "ffn.fc_out": block.ffn.fc_out,
        }

    def prunable_linears(self) -> dict[str, nn.Linear]:
        """Every prunable Linear (encoder layers only; embeddings and heads excluded), by qualified name."""
        out: dict[str, nn.Linear] = {}
        for i in range(self.n_layers):
            out.update(self.layer_linears(i))
        return out

    @classmethod
    def layer_of(cls, name: str) -> int:
        """Layer index of a qualified module name produced by :meth:`prunable_linears`."""
        parts = name.split(".")
        if len(parts) < 2 or parts[0] != "layers" or not parts[1].isdigit():
            raise ValueError(f"{name!r} is not the name of an encoder-layer module")
        return int(parts[1])

    @classmethod
    def rename_layer(cls, name: str, new_index: int) -> str:
        """``name`` as it reads after its layer moved to position ``new_index`` (layers were removed)."""
        old = cls.layer_of(name)
        return cls.layer_prefix(new_index) + name[len(cls.layer_prefix(old)):]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers and the final LayerNorm (what "encoder params" counts)."""
        return [*self.model.layers.parameters(), *self.model.final_norm.parameters()]

    def config_dict(self) -> dict[str, Any]:
        """``EncoderConfig.to_dict()`` of the model as it is now (per-layer widths included)."""
        return self.model.config.to_dict()

    def shape_manifest(self) -> dict[str, Any]:
        """``{"layers": [{"n_heads", "head_dim", "d_ff"}, ...]}``: the current per-layer widths."""
        return {"layers": self.config_dict()["layers"]}

    # ---------------------------------------------------------------------------------- group weights
    def group_weights(self, kind: str, layer: int) -> list[torch.Tensor]:
        """Weights of every group of ``kind`` in ``layer``, each laid out as [groups, elements-per-group].

        For ``"layers"`` one row holds the whole layer, so norms over the last dimension are group norms.
        """
        check_kind(kind)
        block = self.layer(layer)
        if kind == "heads":
            H, Dh, D = block.attn.n_heads, block.attn.head_dim, block.attn.qkv_proj.in_features
            qkv = block.attn.qkv_proj.weight  # [3*H*Dh, D]
            rows = qkv.reshape(3, H, Dh * D).transpose(0, 1).reshape(H, 3 * Dh * D)  # [H, 3*Dh*D]
            out_w = block.attn.out_proj.weight  # [D, H*Dh]
            cols = out_w.reshape(D, H, Dh).transpose(0, 1).reshape(H, D * Dh)  # [H, D*Dh]
            return [rows, cols]
        if kind == "neurons":
            return [block.ffn.fc_in.weight, block.ffn.fc_out.weight.t()]  # [F, D] each
        return [lin.weight.reshape(1, -1) for lin in self.layer_linears(layer).values()]

    # ------------------------------------------------------------------------------------------- zero
    @torch.no_grad()
    def zero_groups_(self, kind: str, layer: int, groups: Sequence[int]) -> None:
        """Zero the weights of ``groups`` (head or neuron indices) of ``layer``; the masked reference."""
        check_kind(kind)
        idx = torch.as_tensor(list(groups), dtype=torch.long)
        if kind == "layers":
            raise ValueError("use zero_layer_ to zero a whole layer")
        if idx.numel() == 0:
            return
        block = self.layer(layer)
        if kind == "heads":
            cols = head_columns(idx, block.attn.head_dim)
            rows = qkv_rows(cols, block.attn.n_heads * block.attn.head_dim)
            block.attn.qkv_proj.weight[rows] = 0.0
            block.attn.qkv_proj.bias[rows] = 0.0
            block.attn.out_proj.weight[:, cols] = 0.0
        else:
            block.ffn.fc_in.weight[idx] = 0.0
            block.ffn.fc_in.bias[idx] = 0.0
            block.ffn.fc_out.weight[:, idx] = 0.0

    @torch.no_grad()
    def zero_layer_(self, layer: int) -> None:
        """Make ``layer`` compute the identity: zero its prunable weights and both output biases."""
        for lin in self.layer_linears(layer).values():
            lin.weight.zero_()
        block = self.layer(layer)
        # With the output projections' weights and biases at zero both residual branches add exactly 0.
        block.attn.out_proj.bias.zero_()
        block.ffn.fc_out.bias.zero_()

    # ----------------------------------------------------------------------------------------- shrink
    def keep_groups_(self, kind: str, layer: int, keep: Sequence[int]) -> None:
        """Physically keep only ``keep`` (sorted head or neuron indices) of ``layer``; the rest are removed."""
        check_kind(kind)
        if kind == "layers":
            raise ValueError("use keep_layers_ to remove whole layers")
        block = self.layer(layer)
        idx = torch.as_tensor(sorted(keep), dtype=torch.long)
        if kind == "heads":
            cols = head_columns(idx, block.attn.head_dim)
            rows = qkv_rows(cols, block.attn.n_heads * block.attn.head_dim)
            old = block.attn.qkv_proj
            # n_heads is derived from qkv_proj, so the layer's head count and config follow automatically.
            block.attn.qkv_proj = new_linear(old.weight[rows], old.bias[rows], old.weight.requires_grad)
            old = block.attn.out_proj
            block.attn.out_proj = new_linear(old.weight[:, cols], old.bias, old.weight.requires_grad)
        else:
            old_in, old_out = block.ffn.fc_in, block.ffn.fc_out
            block.ffn.fc_in = new_linear(old_in.weight[idx], old_in.bias[idx], old_in.weight.requires_grad)
            block.ffn.fc_out = new_linear(old_out.weight[:, idx], old_out.bias, old_out.weight.requires_grad)

    def keep_layers_(self, keep: Sequence[int]) -> None:
        """Keep only the layers ``keep`` (in their original order); at least one must remain."""
        keep = sorted(keep)
        if not keep:
            raise ValueError("cannot remove every layer: an encoder needs at least one")
        self.model.layers = nn.ModuleList(self.model.layers[i] for i in keep)

    # ------------------------------------------------------------------------------ search / rescaling
    def output_linear(self, kind: str, layer: int) -> nn.Linear:
        """The Linear that reads every group of ``kind`` (heads: ``out_proj``, neurons: ``fc_out``).

        Its input columns are the groups' outputs, so a least-squares refit of this one Linear can make up
        for removed groups (mask rescaling) without touching anything else.
        """
        check_kind(kind)
        if kind == "layers":
            raise ValueError("a whole layer has no single output projection; use 'heads' or 'neurons'")
        block = self.layer(layer)
        return block.attn.out_proj if kind == "heads" else block.ffn.fc_out

    def layer_call(self, index: int, batch_size: int, seq_len: int, seed: int = 0) -> Callable[[], torch.Tensor]:
        """A zero-argument call running layer ``index`` alone on seeded hidden states [B, S, D] (no padding).

        What the latency table times: one layer's forward as the model runs it in eval mode.
        """
        block = self.layer(index)
        d_model = block.norm1.normalized_shape[0]
        gen = torch.Generator().manual_seed(seed)
        hidden = torch.randn(batch_size, seq_len, d_model, generator=gen).to(  # [B, S, D]
            device=block.norm1.weight.device, dtype=block.norm1.weight.dtype)
        return lambda: block(hidden, None)

    # ------------------------------------------------------------------------------------------ gates
    @contextmanager
    def gates(self, kind: str) -> Iterator[list[torch.Tensor]]:
        """Multiply every group's output by a gate of ones that requires grad (Michel et al. 2019 head masks).

        ``dLoss/dgate`` is the first-order (Taylor) importance of the group. Yields one gate tensor per
        layer ([H], [F] or [1]); the hooks are removed on exit, even after an error.
        """
        check_kind(kind)
        handles = []
        gates: list[torch.Tensor] = []
        try:
            for i in range(self.n_layers):
                block = self.layer(i)
                dtype, device = block.norm1.weight.dtype, block.norm1.weight.device
                g = torch.ones(self.group_count(kind, i) if kind != "layers" else 1, device=device, dtype=dtype)
                g.requires_grad_(True)
                gates.append(g)
                if kind == "heads":
                    handles.append(block.attn.out_proj.register_forward_pre_hook(head_gate(g, block.attn.head_dim)))
                elif kind == "neurons":
                    handles.append(block.ffn.fc_out.register_forward_pre_hook(neuron_gate(g)))
                else:
                    handles.append(block.register_forward_hook(layer_gate(g)))
            yield gates
        finally:
            for h in handles:
                h.remove()

    # --------------------------------------------------------------------------------------- forwards
    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """``model.encode``: final hidden states [B, S, D]."""
        return self.model.encode(batch["input_ids"], batch.get("attention_mask"))

    def outputs(self, batch: Batch) -> torch.Tensor:
        """The head's logits: [B, S, V] (MLM) or [B, C] (classification)."""
        return self.model(batch["input_ids"], batch.get("attention_mask"))

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of the model's head on a labelled batch (scalar).

        For MLM, logits are computed only at labelled positions: the vocabulary projection is by far the
        largest matmul of a small encoder, and the other 85% of positions carry no loss.

        Raises:
            ValueError: the batch has no ``labels``.
        """
        if "labels" not in batch:
            raise ValueError("this batch has no 'labels'; a task loss needs labelled batches")
        model = self.model
        hidden = self.hidden_states(batch)  # [B, S, D]
        labels = batch["labels"]
        if model.head_kind is TaskHead.MLM:
            where = labels != IGNORE_INDEX  # [B, S]
            logits = model.mlm_logits(hidden[where])  # [N, V]
            return F.cross_entropy(logits, labels[where])
        logits = model.classify(hidden, batch.get("attention_mask"))  # [B, C]
        return F.cross_entropy(logits, labels)

    def forward_call(self, batch: Batch, *, include_head: bool = False) -> Callable[[], Any]:
        """``encode`` only unless ``include_head`` (the MLM head is not pruned and would dilute every speedup).

        The attention mask is dropped when nothing is padded: decided once here, not inside every timed
        forward; a mask without padding changes nothing, and without one SDPA skips its per-layer mask
        conversion (CPU) or can use its fused kernels (CUDA).
        """
        model = self.model
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        if mask is not None and bool(mask.all()):
            mask = None
        if not include_head:
            return lambda: model.encode(ids, mask)
        return lambda: model(ids, mask)

    # ------------------------------------------------------------------------------------------- cost
    def macs(self, batch_size: int, seq_len: int, *, effective: bool = False,
             include_head: bool = False) -> dict[str, int]:
        """MACs by part (:data:`prunebench.models.macs.PARTS` and ``total``) from the actual widths."""
        return encoder_macs(self.model, batch_size, seq_len, effective=effective, include_head=include_head)
