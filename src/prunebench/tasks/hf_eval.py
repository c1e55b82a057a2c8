"""Scoring Hugging Face encoders: pooled embeddings, a frozen linear probe, MLM and classifier accuracy.

Every function returns *per-example* results (not only a mean), so that the deltas between a pruned model
and the dense one get paired confidence intervals (:mod:`prunebench.analysis.bootstrap`).

Pooling follows the model folder's own sentence-transformers config when it has one (``modules.json``
naming a ``Pooling`` module, its ``config.json`` giving the mode, and a ``Normalize`` module), so the
embedding scored is the one the model's users get; without one it is the mean over real tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.tasks.hf_text import encode_texts, length_batches, pad_batch, pad_id
from prunebench.user_files import UnsafeFileError, contained, read_json

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


@dataclass(frozen=True)
class Pooling:
    """How token states become one embedding: ``mode`` (see :data:`POOLING_MODES`), then L2 ``normalize``."""

    mode: str = "mean"
    normalize: bool = False
    source: str = "default"

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"unknown pooling mode {self.mode!r}; choose from: {', '.join(POOLING_MODES)}")


def read_pooling(folder: str | Path | None) -> Pooling:
    """The pooling a sentence-transformers folder declares (``modules.json``), else mean pooling.

    Every path is read through :mod:`prunebench.user_files`: bounded JSON, and the pooling folder that
    ``modules.json`` names must lie inside the model folder (a hostile ``"path": "../../etc"`` is refused).
    """
    if folder is None or not (Path(folder) / "modules.json").is_file():
        return Pooling()
    root = Path(folder)
    try:
        modules = read_json(root / "modules.json")
        types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
        mode = "mean"
        if "Pooling" in types:
            pooling_dir = contained(root, str(types["Pooling"].get("path", "")))
            cfg = read_json(pooling_dir / "config.json")
            chosen = [m for m in ("cls", "max", "mean_sqrt_len", "mean") if cfg.get(f"pooling_mode_{m}_token")
                      or cfg.get(f"pooling_mode_{m}_tokens")]
            mode = chosen[0] if chosen else "mean"
        return Pooling(mode, "Normalize" in types, "sentence-transformers")
    except UnsafeFileError:
        raise  # a path outside the folder or an unreadable file is the user's to see, not a silent default
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        logger.warning("unreadable sentence-transformers config in %s (%s); using mean pooling", root, exc)
        return Pooling()


def hidden_states(model: nn.Module, batch: dict[str, torch.Tensor], *, all_layers: bool = False) -> Any:
    """Last hidden states [B, S, D] of any HF encoder (or the tuple of every layer's, embeddings first)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=True, return_dict=True)
    return out.hidden_states if all_layers else out.hidden_states[-1]


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[B, D] embeddings of ``hidden`` [B, S, D] over real tokens ``mask`` [B, S], as ``pooling`` says."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # [B, S, 1]
    if pooling.mode == "cls":
        out = hidden[:, 0]  # [B, D]
    elif pooling.mode == "max":
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)  # [B, D]
    else:
        total = (hidden * m).sum(dim=1)  # [B, D]
        n = m.sum(dim=1).clamp_min(1.0)  # [B, 1]
        out = total / (n.sqrt() if pooling.mode == "mean_sqrt_len" else n)
    return F.normalize(out, dim=-1) if pooling.normalize else out


@torch.no_grad()
def embed(model: nn.Module, tokenizer: Any, texts: list[str], pooling: Pooling, *, max_length: int = 128,
          batch_size: int = 64) -> torch.Tensor:
    """Pooled embeddings [N, D] of ``texts`` in their order (batched by length, in eval mode)."""
    rows = encode_texts(tokenizer, texts, max_length)
    was_training = model.training
    model.eval()
    try:
        out: torch.Tensor | None = None
        for idx in length_batches(rows, batch_size):
            batch = pad_batch([rows[i] for i in idx], pad_id(tokenizer))
            emb = pool(hidden_states(model, batch), batch["attention_mask"], pooling).float()  # [B, D]
            if out is None:
                out = torch.empty(len(rows), emb.shape[1])
            out[torch.tensor(idx)] = emb
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("no texts to embed")
    return out


class LinearProbe:
    """Multinomial logistic regression on standardized embeddings, fitted once and then frozen.

    The standardization statistics are those of the embeddings it was fitted on (the dense model's) and are
    kept: a pruned model's embeddings go through exactly the transform and weights a downstream user keeps.

    Args:
        weight_decay: L2 penalty on the weights (mean loss + ``weight_decay * |W|^2``).
        max_iter: L-BFGS iterations (full batch; deterministic).
    """

    def __init__(self, weight_decay: float = 1e-3, max_iter: int = 200) -> None:
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.linear: nn.Linear | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor, num_labels: int) -> LinearProbe:
        """Fit on embeddings ``x`` [N, D] and class ids ``y`` [N]."""
        if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
            raise ValueError(f"probe needs [N, D] embeddings and [N] labels, got {tuple(x.shape)} and {tuple(y.shape)}")
        x = x.detach().double()
        self.mean = x.mean(dim=0)  # [D]
        self.std = x.std(dim=0).clamp_min(1e-6)  # [D]
        z = (x - self.mean) / self.std  # [N, D]
        lin = nn.Linear(z.shape[1], num_labels, dtype=torch.float64)
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
        opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(lin(z), y) + self.weight_decay * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.linear = lin.requires_grad_(False)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] class scores of embeddings ``x`` [N, D] (differentiable in ``x``)."""
        if self.linear is None or self.mean is None or self.std is None:
            raise ValueError("the probe is not fitted yet")
        z = (x.double() - self.mean.to(x.device)) / self.std.to(x.device)  # [N, D]
        return self.linear.to(x.device)(z)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """[N] predicted class ids."""
        return self.logits(x).argmax(dim=-1)


@torch.no_grad()
def mlm_hits(model: nn.Module, masked: dict[str, torch.Tensor],
             batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row hits [N] and masked tokens [N] of an MLM model's top-1 predictions on ``masked`` rows, and the
    per-token correctness [T] (row-major order of the masked positions, the same for every model)."""
    hits, counts, tokens = [], [], []
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(masked["input_ids"]), batch_size):
            ids = masked["input_ids"][s : s + batch_size]
            labels = masked["labels"][s : s + batch_size]  # [B, S]
            logits = model(input_ids=ids, attention_mask=masked["attention_mask"][s : s + batch_size]).logits
            where = labels != -100  # [B, S]
            correct = (logits.argmax(dim=-1) == labels) & where  # [B, S]
            hits.append(correct.sum(dim=1))
            counts.append(where.sum(dim=1))
            tokens.append(correct[where])
    finally:
        model.train(was_training)
    return torch.cat(hits), torch.cat(counts), torch.cat(tokens)  # [N], [N], [masked tokens]


@torch.no_grad()
def classifier_predictions(model: nn.Module, tokenizer: Any, texts: list[str], *, max_length: int = 128,
                           batch_size: int = 64) -> torch.Tensor:
    """[N] predicted class ids of a sequence classifier on ``texts`` (in their order)."""
    rows = encode_texts(tokenizer, texts, max_length)
    pred = torch.empty(len(rows), dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        for idx in length_batches(rows, batch_size):
            batch = pad_batch([rows[i] for i in idx], pad_id(tokenizer))
            pred[torch.tensor(idx)] = model(**batch).logits.argmax(dim=-1)
    finally:
        model.train(was_training)
    return pred
