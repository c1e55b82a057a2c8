"""The serializable result of planning: which weights (or heads / neurons / layers) go.

A plan is computed once (``prunebench.pruning.plan``) and applied any number of times: to the model it was
computed from, or to a fresh copy of the same architecture. Unstructured masks are stored bit-packed
(base64), so a plan for the ``medium`` preset is about a megabyte of JSON.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.models.adapters import as_adapter
from prunebench.models.arch import ArchAdapter
from prunebench.pruning.spec import PruneSpec
from prunebench.serde import check_schema_version, reject_unknown

SCHEMA_VERSION = 1


def encode_mask(mask: torch.Tensor) -> dict[str, Any]:
    """A bool tensor as ``{"shape", "bits"}`` (row-major, packed 8 per byte, base64)."""
    flat = mask.detach().to("cpu", torch.bool).reshape(-1).numpy()
    return {"shape": list(mask.shape), "bits": base64.b64encode(np.packbits(flat).tobytes()).decode("ascii")}


def decode_mask(data: dict[str, Any]) -> torch.Tensor:
    """Inverse of :func:`encode_mask`."""
    try:
        shape = [int(d) for d in data["shape"]]
        raw = np.frombuffer(base64.b64decode(data["bits"], validate=True), dtype=np.uint8)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid mask in plan: {exc}") from None
    count = int(np.prod(shape)) if shape else 1
    bits = np.unpackbits(raw)
    if bits.size < count or bits.size - count >= 8:
        raise ValueError(f"invalid mask in plan: {raw.size} bytes cannot hold shape {shape}")
    return torch.from_numpy(bits[:count].astype(bool)).reshape(shape)


def _brief(value: Any) -> str:
    """A config value in one short line (per-layer dicts as tuples of their values)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return str([tuple(v.values()) for v in value])
    return repr(value)


@dataclass
class PrunePlan:
    """What a pruning run removes, independent of how it is materialized.

    Attributes:
        spec: the request the plan answers.
        config: architecture (the adapter's ``config_dict()``) of the model the plan applies to.
        masks: unstructured plans: keep-mask (bool, weight-shaped) per prunable Linear name.
        heads: structured plans: kept head indices per original layer index.
        neurons: structured plans: kept FFN neuron indices per original layer index.
        layers: structured plans: kept original layer indices (``None`` = every layer kept).
        schedule: sparsity reached after each step (one entry for one-shot methods).
    """

    spec: PruneSpec
    config: dict[str, Any]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, tuple[int, ...]] = field(default_factory=dict)
    neurons: dict[int, tuple[int, ...]] = field(default_factory=dict)
    layers: tuple[int, ...] | None = None
    schedule: tuple[float, ...] = ()

    @property
    def structured(self) -> bool:
        """Whether the plan removes whole groups (and so can be physically shrunk)."""
        return bool(self.heads or self.neurons or self.layers is not None)

    def check_model(self, model: nn.Module | ArchAdapter) -> None:
        """Raise a one-line ValueError unless ``model`` (or adapter) has the architecture the plan was made for."""
        # Both sides through JSON: a plan read from disk holds lists where a live config may hold tuples.
        expected = json.loads(json.dumps(self.config))
        actual = json.loads(json.dumps(as_adapter(model).config_dict()))
        if actual != expected:
            key = next(k for k in sorted(set(expected) | set(actual)) if expected.get(k) != actual.get(k))
            raise ValueError(
                f"this plan was computed for a different architecture ({key} {_brief(expected.get(key))}, "
                f"model has {_brief(actual.get(key))})"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (masks bit-packed)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "spec": self.spec.to_dict(),
            "config": self.config,
            "masks": {name: encode_mask(m) for name, m in self.masks.items()},
            "heads": {str(k): list(v) for k, v in self.heads.items()},
            "neurons": {str(k): list(v) for k, v in self.neurons.items()},
            "layers": None if self.layers is None else list(self.layers),
            "schedule": list(self.schedule),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        """Inverse of :meth:`to_dict`; raises a one-line ValueError on a malformed plan."""
        valid = ("schema_version", "spec", "config", "masks", "heads", "neurons", "layers", "schedule")
        reject_unknown(data, valid, "plan keys", list_valid=True)
        check_schema_version(data.get("schema_version"), SCHEMA_VERSION, "plan")
        try:
            return cls(
                spec=PruneSpec.from_dict(data["spec"]),
                config=dict(data["config"]),
                masks={name: decode_mask(m) for name, m in data.get("masks", {}).items()},
                heads={int(k): tuple(int(i) for i in v) for k, v in data.get("heads", {}).items()},
                neurons={int(k): tuple(int(i) for i in v) for k, v in data.get("neurons", {}).items()},
                layers=None if data.get("layers") is None else tuple(int(i) for i in data["layers"]),
                schedule=tuple(float(s) for s in data.get("schedule", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed plan: {exc!r}") from None
