"""Architecture description of the prunable encoder.

Every layer carries its own head count, head width and FFN width, so a model whose heads, neurons or
layers were physically removed is described by an ordinary config with smaller layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from prunebench.serde import reject_unknown


class TaskHead(StrEnum):
    """Which output head the encoder carries."""

    MLM = "mlm"  # masked-language model, decoder tied to the token embedding
    CLS = "cls"  # sequence classification on the mean-pooled hidden states

    @classmethod
    def parse(cls, value: str | TaskHead) -> TaskHead:
        """Return the member named ``value`` or raise a ValueError listing the valid ones."""
        if isinstance(value, TaskHead):
            return value
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown task head {value!r}; choose from: {valid}") from None


@dataclass(frozen=True)
class LayerConfig:
    """Widths of one encoder layer.

    Attributes:
        n_heads: attention heads kept in this layer (0 skips the attention sub-block).
        head_dim: width of each head.
        d_ff: hidden neurons of the feed-forward block (0 skips the FFN sub-block).
    """

    n_heads: int
    head_dim: int
    d_ff: int

    def __post_init__(self) -> None:
        if not isinstance(self.n_heads, int) or self.n_heads < 0:
            raise ValueError(f"n_heads must be an integer >= 0, got {self.n_heads!r}")
        if not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise ValueError(f"head_dim must be a positive integer, got {self.head_dim!r}")
        if not isinstance(self.d_ff, int) or self.d_ff < 0:
            raise ValueError(f"d_ff must be an integer >= 0, got {self.d_ff!r}")

    @property
    def attn_dim(self) -> int:
        """Total width of the q/k/v projections (n_heads * head_dim)."""
        return self.n_heads * self.head_dim


@dataclass(frozen=True)
class EncoderConfig:
    """The whole architecture of a :class:`TransformerEncoder`, including per-layer widths.

    Attributes:
        vocab_size: number of token ids.
        d_model: width of the residual stream.
        layers: one :class:`LayerConfig` per encoder layer (at least one).
        max_positions: longest sequence the learned position table covers.
        dropout: dropout probability in [0, 1).
        head: the task head, ``"mlm"`` or ``"cls"``.
        num_labels: classes of the classification head (ignored for MLM).
        pad_token_id: id used for padding; its embedding row is not special-cased in the weights.
        layer_norm_eps: epsilon of every LayerNorm.
    """

    vocab_size: int
    d_model: int
    layers: tuple[LayerConfig, ...] = field(default_factory=tuple)
    max_positions: int = 512
    dropout: float = 0.1
    head: TaskHead = TaskHead.MLM
    num_labels: int = 2
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if len(self.layers) == 0:
            raise ValueError("an encoder needs at least one layer (n_layers must be positive)")
        if not all(isinstance(layer, LayerConfig) for layer in self.layers):
            raise ValueError("layers must be LayerConfig instances")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "head", TaskHead.parse(self.head))
        if self.head is TaskHead.CLS and (not isinstance(self.num_labels, int) or self.num_labels < 2):
            raise ValueError(f"num_labels must be an integer >= 2 for a classification head, got {self.num_labels!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must lie in [0, vocab_size), got {self.pad_token_id}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")

    @classmethod
    def uniform(
        cls,
        *,
        vocab_size: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        **kwargs: Any,
    ) -> EncoderConfig:
        """Build a config whose layers all have the same widths (the usual dense model)."""
        for name, value in (("n_heads", n_heads), ("n_layers", n_layers), ("d_ff", d_ff), ("d_model", d_model)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        layer = LayerConfig(n_heads=n_heads, head_dim=d_model // n_heads, d_ff=d_ff)
        return cls(vocab_size=vocab_size, d_model=d_model, layers=(layer,) * n_layers, **kwargs)

    @property
    def n_layers(self) -> int:
        """Number of encoder layers."""
        return len(self.layers)

    def with_layer(self, index: int, layer: LayerConfig) -> EncoderConfig:
        """Return a copy with layer ``index`` replaced."""
        layers = list(self.layers)
        layers[index] = layer
        return replace(self, layers=tuple(layers))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (enums as their values)."""
        data = asdict(self)
        data["head"] = self.head.value
        data["layers"] = [asdict(layer) for layer in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        reject_unknown(data, cls.__dataclass_fields__, "encoder config keys")
        fields = dict(data)
        fields["layers"] = tuple(LayerConfig(**layer) for layer in data.get("layers", ()))
        return cls(**fields)


def count_parameters(config: EncoderConfig) -> dict[str, int]:
    """Parameter counts of a model built from ``config``, computed without building it.

    Returns:
        ``{"embeddings", "encoder", "head", "total"}``; ``encoder`` covers the layers and final norm,
        which is what pruning acts on.
    """
    d = config.d_model
    embeddings = config.vocab_size * d + config.max_positions * d
    encoder = 2 * d  # final LayerNorm
    for layer in config.layers:
        a, f = layer.attn_dim, layer.d_ff
        encoder += 2 * d + 2 * d  # two LayerNorms
        encoder += 3 * (d * a + a) + (a * d + d)  # q, k, v, out projections with biases
        encoder += (d * f + f) + (f * d + d)  # FFN in and out with biases
    if config.head is TaskHead.MLM:
        head = (d * d + d) + 2 * d + config.vocab_size  # transform, its LayerNorm, decoder bias (tied weight)
    else:
        head = d * config.num_labels + config.num_labels
    return {"embeddings": embeddings, "encoder": encoder, "head": head, "total": embeddings + encoder + head}
