"""A readable, prunable transformer encoder in one file.

Pre-LayerNorm encoder (token + learned position embeddings, N layers of self-attention and GELU
feed-forward with residuals, final LayerNorm) with a tied masked-LM head or a mean-pooled classifier.
Each layer is built from its own :class:`LayerConfig`, so heads, FFN neurons or whole layers can be
physically removed and the result is still an ordinary ``TransformerEncoder``.

Shapes: B = batch, S = sequence length, D = d_model, H = heads of a layer, Dh = head_dim, F = d_ff,
V = vocab size, C = classes.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.models.config import EncoderConfig, LayerConfig, TaskHead


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """nn.Linear that may have a zero dimension (a fully pruned block) without torch's init warning."""
    if in_features > 0 and out_features > 0:
        return nn.Linear(in_features, out_features)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection.

    ``qkv_proj`` stacks three row blocks, ``[q heads | k heads | v heads]``, each ``H * Dh`` rows with head
    ``h`` at rows ``h*Dh:(h+1)*Dh`` of its block. One GEMM instead of three matters at small batch sizes,
    where a fixed cost per call is a large part of the time and would mask the speedup of pruned heads.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.dropout = dropout
        inner = n_heads * head_dim
        self.qkv_proj = _linear(d_model, 3 * inner)
        self.out_proj = _linear(inner, d_model)

    @property
    def n_heads(self) -> int:
        """Heads currently present, derived from the qkv projection so it can never go stale."""
        return self.qkv_proj.out_features // (3 * self.head_dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Attend over the sequence.

        Args:
            x: [B, S, D] normalized hidden states.
            attn_mask: [B, 1, 1, S] bool, True where a key may be attended to; None attends everywhere.
        """
        B, S, _ = x.shape
        Dh = self.head_dim
        qkv = self.qkv_proj(x)  # [B, S, 3*H*Dh]
        H = qkv.shape[-1] // (3 * Dh)
        qkv = qkv.view(B, S, 3 * H, Dh).transpose(1, 2)  # [B, 3H, S, Dh]
        q, k, v = qkv.split(H, dim=1)  # [B, H, S, Dh] each
        p = self.dropout if self.training else 0.0
        # The default scale 1/sqrt(Dh) depends only on the head width, so removing heads keeps it exact.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # [B, H, S, Dh]
        y = y.transpose(1, 2).reshape(B, S, H * Dh)  # [B, S, H*Dh]
        return self.out_proj(y)  # [B, S, D]


class FeedForward(nn.Module):
    """Position-wise GELU MLP: D -> F -> D."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc_in = _linear(d_model, d_ff)
        self.fc_out = _linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, D] -> [B, S, D]."""
        h = F.gelu(self.fc_in(x))  # [B, S, F]
        if self.training:  # dropout is the identity in eval; skipping the call matters at batch 1
            h = self.drop(h)
        return self.fc_out(h)  # [B, S, D]


class EncoderLayer(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), then x + FFN(LN(x)).

    A layer with 0 heads (or 0 FFN neurons) skips that sub-block's computation but still adds the output
    projection's bias: that is exactly what the masked layer (all its heads zeroed) computes, so a
    physically shrunk model equals the masked one.
    """

    def __init__(self, d_model: int, spec: LayerConfig, dropout: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = SelfAttention(d_model, spec.n_heads, spec.head_dim, dropout)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.ffn = FeedForward(d_model, spec.d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    @property
    def spec(self) -> LayerConfig:
        """The widths this layer currently has (read from its modules, so always current)."""
        return LayerConfig(self.attn.n_heads, self.attn.head_dim, self.ffn.fc_in.out_features)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """[B, S, D] -> [B, S, D].

        Written to keep Python work per layer small: at batch 1 each ``nn.Module`` call costs about as much
        as a small kernel, and the pruned model pays it as often as the dense one, which shrinks the
        measured speedup of pruning (``benchmarks/structured_speedup.py`` measures this against a bare
        functional forward). So the LayerNorms run as ``F.layer_norm`` on their own parameters, and the
        attention and FFN containers run their ``forward`` directly. Every hook point the library uses
        still runs through ``__call__``: the Linears (Wanda calibration, head and neuron gates) and this
        layer (layer gates).
        """
        attn, ffn = self.attn, self.ffn
        if attn.qkv_proj.out_features:
            h = attn.forward(_layer_norm(self.norm1, x), attn_mask)  # [B, S, D]
            x = x + (self.drop(h) if self.training else h)
        else:
            x = x + attn.out_proj.bias  # [D] broadcast: the constant a fully masked block adds
        if ffn.fc_in.out_features:
            h = ffn.forward(_layer_norm(self.norm2, x))  # [B, S, D]
            x = x + (self.drop(h) if self.training else h)
        else:
            x = x + ffn.fc_out.bias
        return x


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without the module dispatch (same function, same parameters)."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class TransformerEncoder(nn.Module):
    """Token + position embeddings, encoder layers, final LayerNorm and one task head."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self._base_config = config
        self.head_kind = config.head
        self.max_positions = config.max_positions
        d = config.d_model
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.embed_positions = nn.Embedding(config.max_positions, d)
        self.embed_drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d, spec, config.dropout, config.layer_norm_eps) for spec in config.layers
        )
        self.final_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        if config.head is TaskHead.MLM:
            # BERT-style transform; the decoder weight is the token embedding itself (tied, not copied),
            # so the checkpoint holds no shared tensors.
            self.mlm_transform = nn.Linear(d, d)
            self.mlm_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
            self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.cls_drop = nn.Dropout(config.dropout)
            self.classifier = nn.Linear(d, config.num_labels)

    @property
    def config(self) -> EncoderConfig:
        """The architecture as the modules are now.

        Per-layer widths are read back from the modules, so a model whose heads, neurons or layers were
        physically removed always describes itself exactly (no separate ``n_heads`` to forget to update).
        """
        return replace(self._base_config, layers=tuple(layer.spec for layer in self.layers))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the encoder.

        Args:
            input_ids: [B, S] token ids, S <= max_positions.
            attention_mask: [B, S], nonzero/True for real tokens, 0/False for padding; None = no padding.

        Returns:
            [B, S, D] final hidden states.
        """
        S = input_ids.shape[1]
        if S > self.max_positions:
            raise ValueError(f"sequence length {S} exceeds max_positions {self.max_positions}")
        x = self.embed_tokens(input_ids) + self.embed_positions.weight[:S]  # [B, S, D]: positions 0..S-1
        if self.training:
            x = self.embed_drop(x)
        mask = None
        if attention_mask is not None:
            mask = attention_mask.to(torch.bool)[:, None, None, :]  # [B, 1, 1, S]
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)  # [B, S, D]

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., D] hidden states -> [..., V] token logits (pass only masked positions to save work)."""
        h = self.mlm_norm(F.gelu(self.mlm_transform(hidden)))  # [..., D]
        return F.linear(h, self.embed_tokens.weight, self.mlm_bias)  # [..., V]

    @staticmethod
    def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over real tokens: [B, S, D] -> [B, D]."""
        if attention_mask is None:
            return hidden.mean(dim=1)
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [B, S, 1]
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # [B, D]

    def classify(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, S, D] -> [B, C] class logits."""
        return self.classifier(self.cls_drop(self.pool(hidden, attention_mask)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder plus the configured head: [B, S] -> [B, S, V] (mlm) or [B, C] (cls)."""
        hidden = self.encode(input_ids, attention_mask)  # [B, S, D]
        if self.head_kind is TaskHead.MLM:
            return self.mlm_logits(hidden)
        return self.classify(hidden, attention_mask)


@torch.no_grad()
def init_weights_(model: nn.Module, generator: torch.Generator) -> None:
    """BERT-style initialization (normal(0, 0.02) weights, zero biases, unit LayerNorms).

    Uses an explicit generator so that building a model never touches the global RNG.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if module.weight.numel() > 0:
                module.weight.normal_(0.0, 0.02, generator=generator)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


def build_encoder(config: EncoderConfig, seed: int = 0) -> TransformerEncoder:
    """Build a freshly initialized encoder; the same ``seed`` always gives the same weights.

    nn.Linear's constructor draws its default init from the global RNG; fork_rng restores that state
    afterwards, so building a model never shifts anyone else's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        model = TransformerEncoder(config)
    init_weights_(model, torch.Generator().manual_seed(seed))
    return model
