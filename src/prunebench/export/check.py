"""The check every exported artifact gets: its outputs, loaded the way a user loads it, against prunebench's model.

Probe batches are seeded random token ids with right padding, at two shapes that differ from the one the export
traced (so a fixed batch or sequence axis fails here, not in production). Outputs are compared at real tokens only
(padding positions carry no meaning a user reads) with :func:`prunebench.backends.fidelity.compare`: largest
absolute difference and cosine of the flattened outputs, against the format's tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunebench.backends.base import Tolerance
from prunebench.backends.fidelity import FidelityResult, compare, reference_outputs
from prunebench.bench.inputs import make_inputs
from prunebench.models.adapters import adapter_for
from prunebench.models.batch import Batch

#: ``[B, S]`` of the probe batches; the export itself traces ``[2, 8]``.
PROBE_SHAPES = ((1, 7), (3, 29))
#: Expected share of padding in the probes (the first row of a batch is kept full length by chance or not).
PAD_FRACTION = 0.3

#: An artifact as a runtime runs it: batch -> named outputs (``hidden`` [B, S, D], and for an HF model with a
#: task head ``outputs``: its logits).
ArtifactRunner = Callable[[Batch], dict[str, torch.Tensor]]


def probe_batches(model: nn.Module) -> list[Batch]:
    """Seeded, padded batches at :data:`PROBE_SHAPES` (sequence length capped by the model's positions)."""
    adapter = adapter_for(model)
    longest = adapter.max_seq_len or max(s for _, s in PROBE_SHAPES)
    pad = int(getattr(getattr(model, "config", None), "pad_token_id", None) or 0)
    return [make_inputs(adapter.vocab_size, b, min(s, longest), seed=i, pad_fraction=PAD_FRACTION, pad_token_id=pad)
            for i, (b, s) in enumerate(PROBE_SHAPES)]


def model_outputs(model: nn.Module, batch: Batch, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """prunebench's own outputs of ``model`` on ``batch``: ``hidden`` states and, if asked, the head's ``outputs``."""
    out = {"hidden": reference_outputs(model, batch)}
    if "outputs" in names:
        with torch.inference_mode():
            out["outputs"] = adapter_for(model).outputs(batch).float()
    return out


def _real(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The rows of real tokens of a per-token output [B, S, ...] (a per-sequence output [B, C] as it is)."""
    return tensor[mask.bool()] if tensor.dim() >= 3 else tensor


def check_artifact(model: nn.Module, run: ArtifactRunner, tolerance: Tolerance, label: str) -> dict[str, Any]:
    """Compare ``run``'s outputs with ``model``'s on the probe batches; the JSON-ready result.

    Returns:
        ``{"ok", "tolerance", "probes", "compared", "outputs": {name: {"max_abs", "cosine", "ok", "message"}}}``:
        per output name the worst over the probe batches (largest difference, smallest cosine).
    """
    results: dict[str, list[FidelityResult]] = {}
    batches = probe_batches(model)
    for batch in batches:
        got = run(batch)
        want = model_outputs(model, batch, tuple(got))
        mask = batch["attention_mask"]
        for name, tensor in got.items():
            results.setdefault(name, []).append(
                compare(f"{label} {name}", _real(tensor.float().cpu(), mask), _real(want[name], mask), tolerance))
    worst = {name: {"max_abs": max(r.max_abs for r in rs), "cosine": min(r.cosine for r in rs),
                    "ok": all(r.ok for r in rs), "message": next((r.message for r in rs if r.message), "")}
             for name, rs in results.items()}
    return {"ok": all(r["ok"] for r in worst.values()), "tolerance": tolerance.to_dict(),
            "probes": [list(b["input_ids"].shape) for b in batches], "compared": "real (unpadded) tokens, worst probe",
            "outputs": worst}
