"""One variant of a run: prune a copy of the dense model, check it, save it, describe it as a store record.

Kept apart from the orchestration so that each step (spec, fidelity, record) can be tested on tiny models.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.bench import disk_bytes, forward_macs, parameter_report
from prunebench.errors import PrunebenchError
from prunebench.models import load_model
from prunebench.models.adapters import adapter_for, with_loss
from prunebench.models.batch import Batch, LossFn
from prunebench.models.io import nonfinite_tensor
from prunebench.pruning import METHODS, PruneSpec, apply_plan_, check_fidelity, prune_with_plan_, save_pruned
from prunebench.pruning.refit import refit_outputs_

#: Ridge of the least-squares refit after a structured shrink, relative to the mean input energy (the value
#: the pretrained-encoder path was tuned with; it pulls the refitted weights toward zero).
REFIT_RIDGE = 1e-3

logger = logging.getLogger(__name__)

OnStep = Callable[[int, float, torch.nn.Module], None]


def prune_spec(method: str, sparsity: float, *, seed: int, iterative_steps: int, schedule: str,
               structured_criterion: str = "") -> PruneSpec:
    """The :class:`PruneSpec` a run uses for one of its methods (each method's defaults, e.g. heads and
    neurons for structured, 2:4 for N:M; a gradual method gets the run's steps and schedule).

    ``structured_criterion`` (from the model source: ``activation`` for pretrained encoders) replaces the
    default criterion of the structured method only; '' keeps it.
    """
    info = METHODS.get(method)
    criterion = {"criterion": structured_criterion} if structured_criterion and method == "structured" else {}
    if info.gradual:
        return PruneSpec(method=method, sparsity=sparsity, steps=iterative_steps, schedule=schedule, seed=seed)
    return PruneSpec(method=method, sparsity=None if info.nm_pattern else sparsity, seed=seed, **criterion)


def make_variant(
    dense: nn.Module,
    name: str,
    spec: PruneSpec,
    *,
    seq_len: int,
    calib: Sequence[Batch] | None,
    on_step: OnStep | None,
    check_batch: Batch,
    save_dir: Path | None,
    loss_fn: LossFn | None = None,
    refit_calib: Sequence[Batch] | None = None,
    recover: Callable[[nn.Module], dict[str, Any] | None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``dense`` and return it with its variant record (status ``ok``).

    After the fidelity check, a one-shot structured variant gets the least-squares refit of its shrunk output
    projections on ``refit_calib`` (None: no refit) and then ``recover(model)`` (the source's recovery; None:
    none); both are recorded in ``details``. ``loss_fn`` is the task loss of gradient criteria for a model
    without one of its own.

    The fidelity check compares the materialized model with a masked reference built from the same plan:
    for one-shot methods, the dense model with the plan's groups zeroed ("masked-dense"); for the iterative
    method, whose fine-tuning moves the kept weights, the final masks re-applied to the pruned model itself
    ("masks-reapplied": fine-tuning must have kept every pruned weight at zero). When ``save_dir`` is given
    the model is saved and reloaded, and the reload must give identical outputs.

    Raises:
        ValueError / RuntimeError / PrunebenchError: from pruning; the caller records the failure.
    """
    model = copy.deepcopy(dense)
    calibration = calibration_record(calib, needs_labels=spec.needs_labels) if calib is not None else None
    start = time.perf_counter()
    report, plan = prune_with_plan_(with_loss(model, loss_fn), spec, calib=calib, on_step=on_step)
    seconds = time.perf_counter() - start
    model.eval()
    check_finite(model, name)

    if spec.gradual:
        reference, how = copy.deepcopy(model), "masks-reapplied"
    else:
        reference, how = copy.deepcopy(dense), "masked-dense"
    apply_plan_(reference, plan, "zeros")
    fidelity = {**check_fidelity(reference, model, check_batch), "reference": how}
    del reference
    details: dict[str, Any] = {"spec": spec.to_dict(), "prune_report": report.to_dict()}
    if calibration is not None:
        details["calibration"] = calibration
    histories = getattr(on_step, "histories", None)
    if histories:  # recovery between the steps of a gradual method, whichever kind it was
        details["recovery"] = [h if isinstance(h, dict) else h.to_dict() for h in histories]
    one_shot_shrunk = METHODS.get(spec.method).structured and not spec.gradual
    if one_shot_shrunk and refit_calib:
        # After the check: the refit moves kept weights on purpose, the check is of the shrink itself.
        details["refit"] = _refit(model, dense, refit_calib)
        fidelity["reference"] = how + " (before the refit)"
    if one_shot_shrunk and recover is not None:
        recovery = recover(model)
        if recovery is not None:
            details["recovery"] = recovery
            fidelity["reference"] = how + " (before the refit and recovery)"
    details["step_problems"] = step_problems(details)
    for problem in details["step_problems"]:
        logger.warning("%s: %s", name, problem)
    model.eval()
    check_finite(model, name)

    disk = None
    if save_dir is not None:
        save_pruned(model, save_dir, plan, report, metadata={"variant": name, "spec": spec.to_dict()})
        reload = check_fidelity(model, load_model(save_dir), check_batch, atol=0.0)  # must be bit-identical
        fidelity["reload_max_abs_diff"], fidelity["reload_ok"] = reload["max_abs_diff"], reload["ok"]
        fidelity["ok"] = bool(fidelity["ok"] and fidelity["reload_ok"])
        disk = disk_bytes(save_dir)
    if not fidelity["ok"]:
        logger.error("FIDELITY CHECK FAILED for %s: %s", name, fidelity)

    record = describe(model, name, spec.method, seq_len, requested=spec.sparsity or 0.0, disk=disk)
    record.update(
        measured_sparsity=report.measured_sparsity, materialization=report.materialization,
        prune_seconds=seconds, fidelity=fidelity, details=details,
    )
    return model, record


def calibration_record(calib: Sequence[Batch], *, needs_labels: bool) -> dict[str, Any]:
    """What the criterion's calibration held (batches, real tokens, labelled positions) and, under ``problem``,
    why it could not inform a criterion: no real token, or no label where the criterion's loss needs one (a
    masked-LM's text read as special tokens only gives no masked position, and a loss over none is NaN)."""
    tokens = sum(int(b["attention_mask"].sum()) for b in calib)
    labels = sum(int((b["labels"] != -100).sum()) for b in calib if "labels" in b)
    out: dict[str, Any] = {"batches": len(calib), "tokens": tokens, "labelled": labels}
    if tokens == 0:
        out["problem"] = f"calibration failed: no real token in {len(calib)} batch(es)"
    elif needs_labels and labels == 0:
        out["problem"] = f"calibration failed: no labelled position in {len(calib)} batch(es)"
    return out


def _refit(model: nn.Module, dense: nn.Module, calib: Sequence[Batch]) -> dict[str, Any]:
    """The least-squares refit of ``model``'s shrunk output projections, in place, and what it did. A refit that
    fails (a singular system: calibration without a real token) or leaves a weight non-finite is undone, the
    shrunk weights kept, and says so under ``problem``: the variant is still the shrink, measured as such."""
    started = time.perf_counter()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {"sequences": sum(int(b["input_ids"].shape[0]) for b in calib)}
    try:
        refitted = refit_outputs_(model, dense, calib, ridge=REFIT_RIDGE, prior="zero")
        bad = nonfinite_tensor(model)
        out["projections"] = len(refitted)
        if bad is not None:
            out["problem"] = f"refit failed: non-finite weights in {bad}, reverted"
    except (RuntimeError, ValueError) as exc:  # torch's LinAlgError is a RuntimeError
        out["projections"] = 0
        out["problem"] = f"refit failed: {' '.join(str(exc).split())[:200]}, reverted"
    if "problem" in out:
        model.load_state_dict(before)
    out["seconds"] = time.perf_counter() - started
    return out


def step_problems(details: dict[str, Any]) -> list[str]:
    """One line per recovery, refit or calibration step of a variant that went wrong (a non-finite loss, no
    step, its work undone), from what each step recorded under ``problem`` in ``details``; the summary's status
    column and the report show them."""
    steps: list[Any] = []
    for key in ("calibration", "refit", "recovery"):
        value = details.get(key)
        steps += value if isinstance(value, list) else [value]
    found = [str(step["problem"]) for step in steps if isinstance(step, dict) and step.get("problem")]
    return list(dict.fromkeys(found))  # an iterative run's steps often fail alike: each text once


def check_finite(model: nn.Module, name: str) -> None:
    """Raise if a weight holds NaN or Inf: such a model's outputs cannot pass any fidelity check.

    Raises:
        PrunebenchError: naming the first non-finite tensor (a run records the variant as failed).
    """
    bad = nonfinite_tensor(model)
    if bad is not None:
        raise PrunebenchError(f"fidelity check failed: {name} has NaN/Inf weights (tensor {bad!r})")


def describe(
    model: nn.Module, name: str, method: str, seq_len: int, *, requested: float, disk: int | None
) -> dict[str, Any]:
    """Size and cost figures of a model as a variant record (dense by default; callers add pruning fields).

    Every figure comes through the model's adapter, so our encoder and a pretrained one are described alike.
    """
    sizes = parameter_report(model)
    adapter = adapter_for(model)
    return {
        "name": name,
        "method": method,
        "requested_sparsity": requested,
        "measured_sparsity": 0.0,
        "materialization": "dense",
        "params": sizes.param_count,
        "nonzero_params": sizes.nonzero_count,
        "encoder_params": sum(p.numel() for p in adapter.encoder_parameters()),
        "disk_bytes": disk,
        "macs": forward_macs(model, 1, seq_len),
        "effective_macs": forward_macs(model, 1, seq_len, effective=True),
        "status": "ok",
        "error": None,
        "details": {"config": adapter.config_dict()},
    }


def load_variant(folder: Path) -> nn.Module:
    """A variant saved by an earlier (interrupted) run of the same folder."""
    return load_model(folder).eval()
