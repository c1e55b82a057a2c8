"""The :class:`~prunebench.models.arch.ArchAdapter` for Hugging Face encoders, written once against a Layout.

Groups of one layer (H heads of width Dh, F neurons, D = hidden size):
    head h   : rows h*Dh:(h+1)*Dh of query, key and value (weights and biases) + those columns of the
               attention output projection
    neuron j : row j of the FFN input projection (weight and bias) + column j of the FFN output projection
    layer    : the whole layer; its masked reference is :class:`~prunebench.models.hf.layout.SkippedLayer`
Shrinking edits the HF modules themselves: new, smaller Linears, the attention module's head count and
all-head size, and the config (layer count; FFN width where it is uniform), so the ordinary HF forward runs.
Module names are the model's own qualified names (``bert.encoder.layer.0.attention.self.query``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from prunebench.models.arch import check_kind
from prunebench.models.batch import LossFn
from prunebench.models.edit_ops import new_linear
from prunebench.models.hf.forwards import HFForwardsMixin
from prunebench.models.hf.layout import HeadlessAttention, Layout, SkippedLayer, set_submodule
from prunebench.models.hf.manifest import HFManifestMixin


class HFEncoderAdapter(HFManifestMixin, HFForwardsMixin):
    """Locates and edits the prunable structure of one HF encoder family (subclasses set the class attributes).

    Args:
        model: a model of one of :attr:`model_classes`; edited in place when asked.
        loss_fn: the task loss of a base encoder (no head of its own), e.g. a frozen-probe cross-entropy on
            pooled embeddings or a distillation loss; :meth:`loss` calls it. Models with an MLM or
            classification head use their own loss unless one is given.

    Raises:
        ValueError: a model of another class, or a decoder / cross-attention configuration.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    layout: ClassVar[Layout]
    #: class -> head kind (:data:`prunebench.models.arch.HEAD_KINDS`): ``base`` (no task head), ``mlm`` or ``cls``.
    model_classes: ClassVar[dict[type, str]] = {}

    def __init__(self, model: nn.Module, loss_fn: LossFn | None = None) -> None:
        if not self.matches(model):
            supported = ", ".join(c.__name__ for c in self.model_classes)
            raise ValueError(f"the {self.name} adapter handles {supported}; got {type(model).__name__}")
        if getattr(model.config, "is_decoder", False) or getattr(model.config, "add_cross_attention", False):
            raise ValueError(f"{type(model).__name__} is configured as a decoder; only encoders can be pruned")
        self.model = model
        self.loss_fn = loss_fn
        self.head_kind = next(kind for cls, kind in self.model_classes.items() if isinstance(model, cls))

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether ``model`` is one of this family's supported classes (by type)."""
        return isinstance(model, tuple(cls.model_classes))

    @classmethod
    def class_names(cls) -> list[str]:
        """Names of the supported model classes (for messages and listings)."""
        return [c.__name__ for c in cls.model_classes]

    # ----------------------------------------------------------------------------------------- lookup
    @property
    def base(self) -> nn.Module:
        """The encoder without its task head (``model.bert``, ``model.roberta``, or the model itself)."""
        return self.model.base_model

    @property
    def stack(self) -> nn.ModuleList:
        """The ModuleList of encoder layers."""
        return self.base.get_submodule(self.layout.layers)

    @property
    def stack_prefix(self) -> str:
        """Qualified name of the layer list in ``model``, with a trailing dot (``bert.encoder.layer.``)."""
        base_prefix = "" if self.base is self.model else self.model.base_model_prefix + "."
        return f"{base_prefix}{self.layout.layers}."

    @property
    def n_layers(self) -> int:
        """Encoder layers currently present."""
        return len(self.stack)

    def layer(self, index: int) -> nn.Module:
        """Encoder layer ``index``."""
        return self.stack[index]

    def is_skipped(self, index: int) -> bool:
        """Whether layer ``index`` was masked out as a whole (:meth:`zero_layer_`)."""
        return isinstance(self.layer(index), SkippedLayer)

    def _attn(self, index: int) -> nn.Module:
        return self.layer(index).get_submodule(self.layout.attention)

    def _lin(self, index: int, which: str) -> nn.Linear:
        return self.layer(index).get_submodule(getattr(self.layout, which))

    def head_dim(self, index: int) -> int:
        """Width of one attention head of layer ``index``."""
        return int(getattr(self._attn(index), self.layout.head_dim_attr))

    @property
    def vocab_size(self) -> int:
        """Size of the token vocabulary."""
        return int(self.model.config.vocab_size)

    @property
    def max_seq_len(self) -> int | None:
        """Longest sequence the position embeddings cover (minus the family's position offset)."""
        return int(self.model.config.max_position_embeddings) - self.position_offset()

    def position_offset(self) -> int:
        """Position rows not available to tokens (RoBERTa-style models start counting after the pad id)."""
        return 0

    @property
    def hidden_size(self) -> int:
        """Model width D."""
        return int(getattr(self.model.config, self.layout.config_hidden))

    def group_count(self, kind: str, layer: int | None = None) -> int:
        """Heads or neurons of ``layer``; for ``"layers"`` the number of layers."""
        check_kind(kind)
        if kind == "layers":
            return self.n_layers
        assert layer is not None, "heads and neurons are counted per layer"
        if kind == "heads":
            return self._lin(layer, "query").out_features // self.head_dim(layer)
        return self._lin(layer, "ffn_in").out_features

    def layer_linears(self, index: int) -> dict[str, nn.Linear]:
        """The six prunable Linears of layer ``index`` (q, k, v, attention out, FFN in, FFN out) by name."""
        p = f"{self.stack_prefix}{index}."
        lay = self.layout
        return {p + path: self.layer(index).get_submodule(path)
                for path in (lay.query, lay.key, lay.value, lay.attn_out, lay.ffn_in, lay.ffn_out)}

    def prunable_linears(self) -> dict[str, nn.Linear]:
        """Every prunable Linear (encoder layers only; embeddings, pooler and task heads excluded)."""
        out: dict[str, nn.Linear] = {}
        for i in range(self.n_layers):
            out.update(self.layer_linears(i))
        return out

    def layer_of(self, name: str) -> int:
        """Layer index of a qualified module name produced by :meth:`prunable_linears`."""
        rest = name[len(self.stack_prefix):] if name.startswith(self.stack_prefix) else ""
        index = rest.split(".", 1)[0]
        if not index.isdigit():
            raise ValueError(f"{name!r} is not the name of an encoder-layer module")
        return int(index)

    def rename_layer(self, name: str, new_index: int) -> str:
        """``name`` as it reads after its layer moved to position ``new_index`` (layers were removed)."""
        old = self.layer_of(name)
        return f"{self.stack_prefix}{new_index}." + name[len(f"{self.stack_prefix}{old}."):]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder layer stack."""
        return list(self.stack.parameters())

    def layer_widths(self) -> list[dict[str, Any]]:
        """Per layer: heads, head width, neurons and whether it is skipped (derived from the modules)."""
        return [{"heads": self.group_count("heads", i), "head_dim": self.head_dim(i),
                 "neurons": self.group_count("neurons", i), "skipped": self.is_skipped(i)}
                for i in range(self.n_layers)]

    def config_dict(self) -> dict[str, Any]:
        """A JSON description of the current architecture; plans record it and check it on replay."""
        return {"adapter": self.name, "architecture": type(self.model).__name__, "hidden_size": self.hidden_size,
                "layers": self.layer_widths()}

    # ---------------------------------------------------------------------------------- group weights
    def group_weights(self, kind: str, layer: int) -> list[torch.Tensor]:
        """Weights of every group of ``kind`` in ``layer``, each laid out as [groups, elements-per-group]."""
        check_kind(kind)
        if kind == "layers":
            return [lin.weight.reshape(1, -1) for lin in self.layer_linears(layer).values()]
        if kind == "neurons":
            return [self._lin(layer, "ffn_in").weight, self._lin(layer, "ffn_out").weight.t()]  # [F, D] each
        H, Dh, D = self.group_count("heads", layer), self.head_dim(layer), self.hidden_size
        rows = torch.cat([self._lin(layer, w).weight.reshape(H, Dh * D) for w in ("query", "key", "value")], 1)
        out_w = self._lin(layer, "attn_out").weight  # [D, H*Dh]
        cols = out_w.reshape(D, H, Dh).transpose(0, 1).reshape(H, D * Dh)  # [H, D*Dh]
        return [rows, cols]  # [H, 3*Dh*D], [H, D*Dh]

    # ---------------------------------------------------------------------------------- zero / remove
    def _head_index(self, layer: int, heads: Sequence[int]) -> torch.Tensor:
        Dh = self.head_dim(layer)
        idx = torch.as_tensor(list(heads), dtype=torch.long)
        return (idx[:, None] * Dh + torch.arange(Dh)[None, :]).reshape(-1)  # [len(heads) * Dh]

    @torch.no_grad()
    def zero_groups_(self, kind: str, layer: int, groups: Sequence[int]) -> None:
        """Zero the weights of ``groups`` (head or neuron indices) of ``layer``: the masked reference."""
        check_kind(kind)
        if kind == "layers":
            raise ValueError("use zero_layer_ to mask a whole layer")
        if len(groups) == 0:
            return
        if kind == "heads":
            rows = self._head_index(layer, groups)
            for which in ("query", "key", "value"):
                lin = self._lin(layer, which)
                lin.weight[rows] = 0.0
                lin.bias[rows] = 0.0
            self._lin(layer, "attn_out").weight[:, rows] = 0.0
        else:
            idx = torch.as_tensor(list(groups), dtype=torch.long)
            self._lin(layer, "ffn_in").weight[idx] = 0.0
            self._lin(layer, "ffn_in").bias[idx] = 0.0
            self._lin(layer, "ffn_out").weight[:, idx] = 0.0

    @torch.no_grad()
    def zero_layer_(self, layer: int) -> None:
        """Mask ``layer`` as a whole: zero its prunable weights and make it return its input."""
        for lin in self.layer_linears(layer).values():
            lin.weight.zero_()
        if not self.is_skipped(layer):
            self.stack[layer] = SkippedLayer(self.layer(layer))

    def keep_groups_(self, kind: str, layer: int, keep: Sequence[int]) -> None:
        """Physically keep only ``keep`` (head or neuron indices) of ``layer``; HF metadata follows.

        With no head kept the attention module becomes a :class:`HeadlessAttention` (HF attention cannot run
        with 0 heads); with no neuron kept the FFN projections are empty and the block adds its output bias.

        Raises:
            ValueError: ``kind`` is ``layers``.
        """
        check_kind(kind)
        if kind == "layers":
            raise ValueError("use keep_layers_ to remove whole layers")
        keep = sorted(keep)
        if kind == "heads":
            rows = self._head_index(layer, keep)
            for which in ("query", "key", "value"):
                old = self._lin(layer, which)
                set_submodule(self.layer(layer), getattr(self.layout, which),
                              new_linear(old.weight[rows], old.bias[rows], old.weight.requires_grad))
            old = self._lin(layer, "attn_out")
            set_submodule(self.layer(layer), self.layout.attn_out,
                          new_linear(old.weight[:, rows], old.bias, old.weight.requires_grad))
            attn = self._attn(layer)
            setattr(attn, self.layout.heads_attr, len(keep))
            if self.layout.width_attr is not None:
                setattr(attn, self.layout.width_attr, len(keep) * self.head_dim(layer))
            if not keep and not isinstance(attn, HeadlessAttention):
                inner = self.layout.attention + "."
                out_name = self.layout.attn_out[len(inner):] if self.layout.attn_out.startswith(inner) else None
                set_submodule(self.layer(layer), self.layout.attention,
                              HeadlessAttention(attn, self.layout, out_name, self.head_dim(layer)))
            return
        idx = torch.as_tensor(keep, dtype=torch.long)
        old_in, old_out = self._lin(layer, "ffn_in"), self._lin(layer, "ffn_out")
        set_submodule(self.layer(layer), self.layout.ffn_in,
                      new_linear(old_in.weight[idx], old_in.bias[idx], old_in.weight.requires_grad))
        set_submodule(self.layer(layer), self.layout.ffn_out,
                      new_linear(old_out.weight[:, idx], old_out.bias, old_out.weight.requires_grad))
        self._sync_config()

    def keep_layers_(self, keep: Sequence[int]) -> None:
        """Keep only the layers ``keep`` (in their original order); at least one must remain."""
        keep = sorted(keep)
        if not keep:
            raise ValueError("cannot remove every layer: an encoder needs at least one")
        original = self.kept_layers()
        set_submodule(self.base, self.layout.layers, nn.ModuleList(self.stack[i] for i in keep))
        # The original numbering of what is left, so a saved manifest says which layers were kept.
        self.model.config.prunebench_kept_layers = [original[i] for i in keep]
        self._sync_config()

    def kept_layers(self) -> list[int]:
        """Original indices of the layers still present."""
        kept = getattr(self.model.config, "prunebench_kept_layers", None)
        return list(kept) if kept is not None else list(range(self.n_layers))

    def _sync_config(self) -> None:
        """Make the HF config describe the modules: layer count, and the FFN width where it is uniform.

        The head count stays: HF derives the head width from it (hidden / heads), so a model whose heads
        changed needs the shape manifest to be rebuilt.
        """
        config = self.model.config
        setattr(config, self.layout.config_layers, self.n_layers)
        if self.layout.stack_count is not None:
            self.base.get_submodule(self.layout.stack_count).n_layers = self.n_layers
        widths = {self.group_count("neurons", i) for i in range(self.n_layers)}
        if len(widths) == 1:
            setattr(config, self.layout.config_ffn, widths.pop())
