"""What a pruning run did, measured on the model afterwards (not copied from the request).

Sparsity is measured over the *original* prunable weights: a weight counts as pruned if it was removed
(shrunk away) or is exactly zero now.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from prunebench.models.adapters import as_adapter
from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import evaluation_mode, model_device, to_device
from prunebench.pruning.plan import PrunePlan
from prunebench.serde import check_schema_version, reject_unknown

SCHEMA_VERSION = 1
#: Shape at which the report counts MACs: one sequence of 128 tokens.
REFERENCE_BATCH, REFERENCE_SEQ = 1, 128


@dataclass(frozen=True)
class ModuleRow:
    """One prunable Linear: its original name and what pruning did to it."""

    name: str
    shape_before: tuple[int, ...]
    shape_after: tuple[int, ...] | None  # None: the whole layer was removed
    params_before: int  # weight + bias
    params_after: int
    requested_sparsity: float | None  # None where the target is not per module (global / structured)
    measured_sparsity: float  # removed-or-zero weights / original weights


@dataclass(frozen=True)
class Snapshot:
    """The model before pruning, as much of it as the report needs."""

    shapes: dict[str, tuple[int, ...]]
    params: dict[str, int]
    params_total: int
    params_encoder: int
    groups: dict[str, int]
    macs: int


@dataclass(frozen=True)
class PruneReport:
    """Requested and measured outcome of ``prune_`` (plain data; JSON round-trip via to_dict/from_dict)."""

    method: str
    spec: dict[str, Any]
    requested_sparsity: float
    measured_sparsity: float
    materialization: str  # "zeros" | "shrunk"
    modules: tuple[ModuleRow, ...]
    params_before: dict[str, int]
    params_after: dict[str, int]
    encoder_fraction_removed: float  # (physically removed encoder params + zeroed prunable weights) / before
    group_sparsity: dict[str, float] | None  # structured: measured fraction of heads / neurons / layers gone
    macs_before: int
    macs_after: int  # dense execution of the pruned model
    macs_after_effective: int  # counting only non-zero weights (an ideal sparse kernel)
    reference_shape: dict[str, int]
    schedule: tuple[float, ...]
    wall_seconds: float  # pruning itself, excluding on_step callbacks
    callback_seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["modules"] = [asdict(r) for r in self.modules]
        data["schedule"] = list(self.schedule)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneReport:
        """Inverse of :meth:`to_dict`."""
        reject_unknown(data, (f.name for f in fields(cls)), "prune report keys")
        check_schema_version(data.get("schema_version", SCHEMA_VERSION), SCHEMA_VERSION, "prune report")
        d = dict(data)
        d["modules"] = tuple(
            ModuleRow(**{**r, "shape_before": tuple(r["shape_before"]),
                         "shape_after": None if r["shape_after"] is None else tuple(r["shape_after"])})
            for r in data["modules"]
        )
        d["schedule"] = tuple(data.get("schedule", ()))
        return cls(**d)


def _encoder_params(adapter: ArchAdapter) -> int:
    return sum(p.numel() for p in adapter.encoder_parameters())


def _ref_seq(adapter: ArchAdapter) -> int:
    limit = adapter.max_seq_len
    return REFERENCE_SEQ if limit is None else min(REFERENCE_SEQ, limit)


def _macs(adapter: ArchAdapter, effective: bool = False) -> int:
    return adapter.macs(REFERENCE_BATCH, _ref_seq(adapter), effective=effective)["total"]


def live_groups(model: nn.Module | ArchAdapter) -> dict[str, int]:
    """Heads, neurons and layers that still carry a non-zero weight (shrunk or zeroed ones do not)."""
    adapter = as_adapter(model)
    out = {"heads": 0, "neurons": 0, "layers": 0}
    for i in range(adapter.n_layers):
        for kind in ("heads", "neurons"):
            parts = adapter.group_weights(kind, i)  # each [groups, elements]
            if parts[0].shape[0] > 0:
                alive = torch.stack([(p != 0).any(dim=1) for p in parts]).any(dim=0)  # [groups]
                out[kind] += int(alive.sum())
        out["layers"] += int(any(bool((lin.weight != 0).any()) for lin in adapter.layer_linears(i).values()))
    return out


def snapshot(model: nn.Module | ArchAdapter, groups: bool = True) -> Snapshot:
    """Record what the report compares against, before pruning (``groups``: count live heads etc. too)."""
    adapter = as_adapter(model)
    linears = adapter.prunable_linears()
    return Snapshot(
        shapes={n: tuple(lin.weight.shape) for n, lin in linears.items()},
        params={n: sum(p.numel() for p in lin.parameters()) for n, lin in linears.items()},
        params_total=sum(p.numel() for p in adapter.model.parameters()),
        params_encoder=_encoder_params(adapter),
        groups=live_groups(adapter) if groups else {},
        macs=_macs(adapter),
    )


def build_prune_report(
    before: Snapshot, model: nn.Module | ArchAdapter, plan: PrunePlan, materialization: str,
    wall_seconds: float, callback_seconds: float = 0.0,
) -> PruneReport:
    """Measure the pruned ``model`` (or its adapter) against ``before`` and assemble the report."""
    spec = plan.spec
    adapter = as_adapter(model)
    linears = adapter.prunable_linears()
    shrunk_layers = materialization == "shrunk" and plan.layers is not None
    new_index = {old: new for new, old in enumerate(plan.layers)} if shrunk_layers else None
    per_module = spec.per_module_target
    rows, removed_total, weights_total, zero_after = [], 0, 0, 0
    for name, shape in before.shapes.items():
        numel = int(torch.Size(shape).numel())
        current = name
        if new_index is not None:
            layer = adapter.layer_of(name)
            current = adapter.rename_layer(name, new_index[layer]) if layer in new_index else None
        lin = linears.get(current) if current is not None else None
        if lin is None:
            nonzero, shape_after, params_after = 0, None, 0
        else:
            nonzero = int(torch.count_nonzero(lin.weight).item())
            shape_after, params_after = tuple(lin.weight.shape), sum(p.numel() for p in lin.parameters())
            zero_after += lin.weight.numel() - nonzero
        removed_total += numel - nonzero
        weights_total += numel
        rows.append(ModuleRow(
            name=name, shape_before=shape, shape_after=shape_after, params_before=before.params[name],
            params_after=params_after, requested_sparsity=spec.sparsity if per_module else None,
            measured_sparsity=(numel - nonzero) / numel if numel else 0.0,
        ))
    enc_after = _encoder_params(adapter)
    group_sparsity = None
    if plan.structured and before.groups:
        after = live_groups(adapter)
        group_sparsity = {k: 1.0 - after[k] / before.groups[k] for k in after if before.groups[k] > 0}
    seq = _ref_seq(adapter)
    return PruneReport(
        method=spec.method, spec=spec.to_dict(), requested_sparsity=spec.sparsity,
        measured_sparsity=removed_total / weights_total if weights_total else 0.0,
        materialization=materialization, modules=tuple(rows),
        params_before={"total": before.params_total, "encoder": before.params_encoder},
        params_after={"total": sum(p.numel() for p in adapter.model.parameters()), "encoder": enc_after},
        encoder_fraction_removed=(before.params_encoder - enc_after + zero_after) / before.params_encoder,
        group_sparsity=group_sparsity, macs_before=before.macs,
        macs_after=_macs(adapter),
        macs_after_effective=_macs(adapter, effective=True),
        reference_shape={"batch_size": REFERENCE_BATCH, "seq_len": seq}, schedule=tuple(plan.schedule),
        wall_seconds=wall_seconds, callback_seconds=callback_seconds,
    )


#: Largest absolute difference of outputs at which a materialized model still counts as its masked reference.
#: A physically shrunk model computes the same sums as the masked one in another order (other GEMM shapes,
#: over every layer), so float32 rounding differs by up to ~1e-5 on real encoders; 1e-4 leaves room for that
#: while any wrong row or column (a pruning bug) shows as O(0.1). The one tolerance every run, the search's
#: verification and the HF run use.
FIDELITY_ATOL = 1e-4


@torch.no_grad()
def check_fidelity(
    masked_model: nn.Module | ArchAdapter, materialized_model: nn.Module | ArchAdapter, batch: Batch,
    atol: float = FIDELITY_ATOL,
) -> dict[str, Any]:
    """Compare the masked reference and the materialized model on one batch (run before any timing).

    ``atol`` defaults to :data:`FIDELITY_ATOL`; a reload check passes 0 (it must be bit-identical).

    Returns:
        ``{"max_abs_diff": float, "ok": bool, "atol": float}`` over the head's outputs (adapter ``outputs``).
    """
    outs = []
    for model in (masked_model, materialized_model):
        adapter = as_adapter(model)
        b = to_device(batch, model_device(adapter.model))
        with evaluation_mode(adapter.model):
            outs.append(adapter.outputs(b).float().cpu())
    if outs[0].shape != outs[1].shape:
        raise ValueError(f"outputs differ in shape: {tuple(outs[0].shape)} vs {tuple(outs[1].shape)}")
    diff = float((outs[0] - outs[1]).abs().max()) if outs[0].numel() else 0.0
    return {"max_abs_diff": diff, "ok": diff <= atol, "atol": atol}
