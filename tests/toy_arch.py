"""A two-layer model that is not a TransformerEncoder, and its ArchAdapter, written only for the tests.

Each block is ``x + out(tanh(inp(x)))`` (H "heads" of Dh units: rows of ``inp``, columns of ``out``) followed
by ``x + down(relu(up(x)))`` (F neurons). Nothing in ``prunebench.pruning`` knows this class.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.arch import check_kind
from prunebench.models.batch import IGNORE_INDEX, Batch
from prunebench.models.edit_ops import head_columns, head_gate, layer_gate, neuron_gate, new_linear


def _lin(i: int, o: int) -> nn.Linear:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(i, o)


class ToyBlock(nn.Module):
    def __init__(self, d: int, heads: int, head_dim: int, ff: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.inp, self.out = _lin(d, heads * head_dim), _lin(heads * head_dim, d)
        self.up, self.down = _lin(d, ff), _lin(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.out(torch.tanh(self.inp(x)))  # [B, S, D]
        return x + self.down(F.relu(self.up(x)))  # [B, S, D]


class ToyModel(nn.Module):
    def __init__(self, vocab: int = 23, d: int = 8, widths: Sequence[tuple[int, int, int]] = ((4, 2, 8),) * 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(ToyBlock(d, h, dh, f) for h, dh, f in widths)
        self.head = nn.Linear(d, vocab)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # [B, S, D]
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.hidden(ids))  # [B, S, V]


class ToyAdapter:
    """The whole ArchAdapter protocol for :class:`ToyModel`."""

    name: ClassVar[str] = "toy"

    def __init__(self, model: ToyModel) -> None:
        self.model = model

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, ToyModel)

    @classmethod
    def from_manifest(cls, config: dict[str, Any], manifest: dict[str, Any]) -> ToyModel:
        widths = [(w["heads"], w["head_dim"], w["ff"]) for w in manifest["layers"]]
        return ToyModel(config["vocab"], config["d"], widths)

    @property
    def n_layers(self) -> int:
        return len(self.model.blocks)

    @property
    def vocab_size(self) -> int:
        return self.model.embed.num_embeddings

    @property
    def head_kind(self) -> str:
        return "mlm"  # its loss is masked-token cross-entropy over the vocabulary

    @property
    def max_seq_len(self) -> int | None:
        return None

    def group_count(self, kind: str, layer: int | None = None) -> int:
        check_kind(kind)
        if kind == "layers":
            return self.n_layers
        b = self.model.blocks[layer]
        return b.inp.out_features // b.head_dim if kind == "heads" else b.up.out_features

    def layer_linears(self, index: int) -> dict[str, nn.Linear]:
        b = self.model.blocks[index]
        return {f"blocks.{index}.{n}": getattr(b, n) for n in ("inp", "out", "up", "down")}

    def prunable_linears(self) -> dict[str, nn.Linear]:
        return {k: v for i in range(self.n_layers) for k, v in self.layer_linears(i).items()}

    def layer_of(self, name: str) -> int:
        return int(name.split(".")[1])

    def rename_layer(self, name: str, new_index: int) -> str:
        parts = name.split(".")
        return ".".join([parts[0], str(new_index), *parts[2:]])

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.model.blocks.parameters())

    def config_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab_size, "d": self.model.embed.embedding_dim, **self.shape_manifest()}

    def shape_manifest(self) -> dict[str, Any]:
        return {"layers": [{"heads": self.group_count("heads", i), "head_dim": b.head_dim, "ff": b.up.out_features}
                           for i, b in enumerate(self.model.blocks)]}

    def group_weights(self, kind: str, layer: int) -> list[torch.Tensor]:
        check_kind(kind)
        b = self.model.blocks[layer]
        if kind == "heads":
            H, Dh = self.group_count("heads", layer), b.head_dim
            return [b.inp.weight.reshape(H, -1), b.out.weight.reshape(-1, H, Dh).transpose(0, 1).reshape(H, -1)]
        if kind == "neurons":
            return [b.up.weight, b.down.weight.t()]
        return [lin.weight.reshape(1, -1) for lin in self.layer_linears(layer).values()]

    @torch.no_grad()
    def zero_groups_(self, kind: str, layer: int, groups: Sequence[int]) -> None:
        idx = torch.as_tensor(list(groups), dtype=torch.long)
        if idx.numel() == 0:
            return
        b = self.model.blocks[layer]
        first, second = (b.inp, b.out) if kind == "heads" else (b.up, b.down)
        rows = head_columns(idx, b.head_dim) if kind == "heads" else idx
        first.weight[rows] = 0.0
        first.bias[rows] = 0.0
        second.weight[:, rows] = 0.0

    @torch.no_grad()
    def zero_layer_(self, layer: int) -> None:
        for lin in self.layer_linears(layer).values():
            lin.weight.zero_()
        b = self.model.blocks[layer]
        b.out.bias.zero_()
        b.down.bias.zero_()

    def keep_groups_(self, kind: str, layer: int, keep: Sequence[int]) -> None:
        b = self.model.blocks[layer]
        idx = torch.as_tensor(sorted(keep), dtype=torch.long)
        names = ("inp", "out") if kind == "heads" else ("up", "down")
        rows = head_columns(idx, b.head_dim) if kind == "heads" else idx
        first, second = getattr(b, names[0]), getattr(b, names[1])
        setattr(b, names[0], new_linear(first.weight[rows], first.bias[rows], first.weight.requires_grad))
        setattr(b, names[1], new_linear(second.weight[:, rows], second.bias, second.weight.requires_grad))

    def keep_layers_(self, keep: Sequence[int]) -> None:
        self.model.blocks = nn.ModuleList(self.model.blocks[i] for i in sorted(keep))

    @contextmanager
    def gates(self, kind: str) -> Iterator[list[torch.Tensor]]:
        handles, gates = [], []
        try:
            for i, b in enumerate(self.model.blocks):
                g = torch.ones(self.group_count(kind, i) if kind != "layers" else 1, requires_grad=True)
                gates.append(g)
                if kind == "heads":
                    handles.append(b.out.register_forward_pre_hook(head_gate(g, b.head_dim)))
                elif kind == "neurons":
                    handles.append(b.down.register_forward_pre_hook(neuron_gate(g)))
                else:
                    handles.append(b.register_forward_hook(layer_gate(g)))
            yield gates
        finally:
            for h in handles:
                h.remove()

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        return self.model.hidden(batch["input_ids"])

    def outputs(self, batch: Batch) -> torch.Tensor:
        return self.model(batch["input_ids"])

    def loss(self, batch: Batch) -> torch.Tensor:
        logits = self.outputs(batch)  # [B, S, V]
        labels = batch["labels"]
        where = labels != IGNORE_INDEX
        return F.cross_entropy(logits[where], labels[where])

    def forward_call(self, batch: Batch, *, include_head: bool = False) -> Callable[[], Any]:
        ids = batch["input_ids"]
        return (lambda: self.model(ids)) if include_head else (lambda: self.model.hidden(ids))

    def output_linear(self, kind: str, layer: int) -> nn.Linear:
        if kind not in ("heads", "neurons"):
            raise ValueError("a whole layer has no single output projection; use 'heads' or 'neurons'")
        block = self.model.blocks[layer]
        return block.out if kind == "heads" else block.down

    def layer_call(self, index: int, batch_size: int, seq_len: int, seed: int = 0) -> Callable[[], Any]:
        block = self.model.blocks[index]
        hidden = torch.randn(batch_size, seq_len, self.model.embed.embedding_dim,
                             generator=torch.Generator().manual_seed(seed))  # [B, S, D]
        return lambda: block(hidden)

    def macs(self, batch_size: int, seq_len: int, *, effective: bool = False,
             include_head: bool = False) -> dict[str, int]:
        tokens = batch_size * seq_len
        count = (lambda w: int(torch.count_nonzero(w))) if effective else (lambda w: w.numel())
        attn = sum(count(b.inp.weight) + count(b.out.weight) for b in self.model.blocks) * tokens
        ffn = sum(count(b.up.weight) + count(b.down.weight) for b in self.model.blocks) * tokens
        head = count(self.model.head.weight) * tokens if include_head else 0
        out = {"attn_proj": attn, "attn_scores": 0, "attn_values": 0, "ffn": ffn, "head": head}
        return {**out, "total": sum(out.values())}
