"""The architecture seam: what the pruning engine, tasks, bench and io may ask of *any* model.

An :class:`ArchAdapter` wraps one model and answers, in the engine's vocabulary (prunable Linears, heads,
neurons, layers), where things live and how to zero or physically remove them. It also owns the forwards
the rest of the library needs (hidden states for calibration and fidelity, the timed call a user makes,
the task loss), MAC counting from the actual widths, and the shape manifest that a saved pruned model is
rebuilt from. Nothing outside an adapter touches ``model.layers[i].attn`` (or an HF ``encoder.layer``).

Adapters are registered by name in :data:`ADAPTERS` (see :mod:`prunebench.models.adapters`), and
:func:`prunebench.models.adapters.adapter_for` picks the one whose :meth:`ArchAdapter.matches` accepts a
model. Group kinds are ``heads``, ``neurons`` and ``layers``.

Qualified names (``prunable_linears`` keys) are the model's own ``named_modules`` names, so plans, reports
and fine-tuning masks speak of the same modules; heads and neurons are numbered per layer from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from prunebench.models.batch import Batch

#: Group kinds an adapter can score, zero and remove.
GROUP_KINDS = ("heads", "neurons", "layers")
#: What a model's task head is (:attr:`ArchAdapter.head_kind`, the one answer for every model family):
#: ``mlm`` (masked-LM logits), ``cls`` (sequence classifier; :class:`~prunebench.models.config.TaskHead`
#: values), ``base`` (no head of its own: a sentence encoder, scored through a probe).
HEAD_KINDS = ("mlm", "cls", "base")


def check_kind(kind: str) -> None:
    """Raise a ValueError naming the valid group kinds unless ``kind`` is one of them."""
    if kind not in GROUP_KINDS:
        raise ValueError(f"unknown group kind {kind!r}; choose from: {', '.join(GROUP_KINDS)}")


@runtime_checkable
class ArchAdapter(Protocol):
    """Locates and edits the prunable structure of one model family (the engine's only view of a model).

    Attributes:
        name: registry key of the adapter (e.g. ``prunebench-encoder``, ``bert``).
        model: the wrapped model; the adapter edits it in place when asked.
    """

    name: ClassVar[str]
    model: nn.Module

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter understands ``model`` (checked by type, never by a name string)."""
        ...

    @classmethod
    def from_manifest(cls, config: dict[str, Any], manifest: dict[str, Any]) -> nn.Module:
        """A model with freshly initialized weights and exactly the widths of ``manifest``.

        ``config`` is what :meth:`config_dict` returned and ``manifest`` what :meth:`shape_manifest` returned
        when the model was saved; io loads the saved tensors into the result, so it needs no concrete class.
        """
        ...

    # ----------------------------------------------------------------------------------------- lookup
    @property
    def n_layers(self) -> int:
        """Encoder layers currently present."""
        ...

    @property
    def vocab_size(self) -> int:
        """Size of the token vocabulary (benchmark inputs draw ids below it)."""
        ...

    @property
    def max_seq_len(self) -> int | None:
        """Longest sequence the model accepts (None: no limit)."""
        ...

    def group_count(self, kind: str, layer: int | None = None) -> int:
        """Heads or neurons of ``layer``; for ``"layers"`` the number of layers."""
        ...

    def layer_linears(self, index: int) -> dict[str, nn.Linear]:
        """The prunable Linears of layer ``index`` by qualified name, in a fixed order."""
        ...

    def prunable_linears(self) -> dict[str, nn.Linear]:
        """Every prunable Linear (encoder layers only; embeddings and task heads excluded), by name."""
        ...

    def layer_of(self, name: str) -> int:
        """Layer index of a qualified module name produced by :meth:`prunable_linears`."""
        ...

    def rename_layer(self, name: str, new_index: int) -> str:
        """``name`` as it reads after its layer moved to position ``new_index`` (layers were removed)."""
        ...

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the prunable encoder stack (what "encoder params" in a prune report counts)."""
        ...

    def config_dict(self) -> dict[str, Any]:
        """A JSON description of the current architecture; plans record it and check it on replay."""
        ...

    @property
    def head_kind(self) -> str:
        """The task head, one of :data:`HEAD_KINDS`: ``mlm``, ``cls`` (sequence classifier) or ``base``."""
        ...

    # ---------------------------------------------------------------------------------- group weights
    def group_weights(self, kind: str, layer: int) -> list[torch.Tensor]:
        """Weights of every group of ``kind`` in ``layer``, each laid out as [groups, elements-per-group]."""
        ...

    # ---------------------------------------------------------------------------------- zero / remove
    def zero_groups_(self, kind: str, layer: int, groups: Sequence[int]) -> None:
        """Zero the weights of ``groups`` (head or neuron indices) of ``layer``: the masked reference."""
        ...

    def zero_layer_(self, layer: int) -> None:
        """Make ``layer`` compute the identity by zeroing (its masked reference)."""
        ...

    def keep_groups_(self, kind: str, layer: int, keep: Sequence[int]) -> None:
        """Physically keep only ``keep`` (head or neuron indices) of ``layer``; metadata follows."""
        ...

    def keep_layers_(self, keep: Sequence[int]) -> None:
        """Keep only the layers ``keep`` (original order); at least one must remain."""
        ...

    def gates(self, kind: str) -> AbstractContextManager[list[torch.Tensor]]:
        """Per-layer gates of ones (requires grad) multiplying each group's output; hooks removed on exit."""
        ...

    # --------------------------------------------------------------------------------------- forwards
    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """Last hidden states [B, S, D] of the encoder (calibration, fidelity, distillation)."""
        ...

    def loss(self, batch: Batch) -> torch.Tensor:
        """Scalar task loss of ``batch`` (labels required): what Taylor scores and fine-tuning use."""
        ...

    def outputs(self, batch: Batch) -> torch.Tensor:
        """The task head's output tensor (logits) on ``batch``: what fidelity and reload checks compare."""
        ...

    def forward_call(self, batch: Batch, *, include_head: bool = False) -> Callable[[], Any]:
        """A zero-argument callable running the forward a user would time (the model called as users do).

        Decisions that do not depend on the weights (e.g. dropping an attention mask without padding) are
        taken here, once, not inside every timed call.
        """
        ...

    def output_linear(self, kind: str, layer: int) -> nn.Linear:
        """The one Linear whose input columns are the outputs of every group of ``kind`` (``heads``: the
        attention output projection; ``neurons``: the FFN output projection) in ``layer``.

        Mask rescaling refits it by least squares to make up for removed groups. ``layers`` is a ValueError.
        """
        ...

    def layer_call(self, index: int, batch_size: int, seq_len: int, seed: int = 0) -> Callable[[], Any]:
        """A zero-argument callable running layer ``index`` alone, as the model runs it in eval mode, on
        seeded hidden states [batch_size, seq_len, D] without padding: what a per-layer latency table times."""
        ...

    # ------------------------------------------------------------------------------------- cost + io
    def macs(self, batch_size: int, seq_len: int, *, effective: bool = False,
             include_head: bool = False) -> dict[str, int]:
        """MACs of one forward at ``[batch_size, seq_len]`` by part, with ``total``; from actual widths.

        ``effective`` counts Linear MACs for non-zero weights only.
        """
        ...

    def shape_manifest(self) -> dict[str, Any]:
        """Per-layer widths (heads, neurons, kept layers) a saved pruned model is rebuilt from.

        JSON-ready; :meth:`from_manifest` is its inverse (together with :meth:`config_dict`).
        """
        ...
