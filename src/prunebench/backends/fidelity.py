"""Fidelity before timing: a runnable is timed only after its outputs matched the eager model, in eval mode.

:func:`check_fidelity` compares a runnable's hidden states with the eager model's on the same batch (max
absolute difference and cosine of the flattened outputs) against the runnable's tolerance, and, where the caller
has task text (a run's or a search's source: :meth:`~prunebench.sources.ModelSource.check_text`), on held-out
rows of it as well. *Why both*: the timed batch is random token ids, which a runtime can reproduce while it
breaks on real text: OpenVINO's NNCF int8 of all-MiniLM-L6-v2 read cosine 0.987 on random ids (above its 0.98)
and 0.819 on tweets; ORT's dynamic int8 of it 0.922 and 0.946 (AMD EPYC, AVX2).
Cells are timed by :func:`~prunebench.backends.cells.bench_backends`: :func:`check_fidelity` once, then a
block sweep that calls :func:`assert_eval` on both runnables before every block. :func:`time_runnables` is
the one-stretch form (``benchmarks/backends.py``): it asserts eval mode on both sides and checks both against
the reference immediately before :func:`~prunebench.bench.timing.time_paired`, and raises
:class:`~prunebench.backends.base.FidelityError` (nothing timed) when either fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunebench.backends.base import FidelityError, Runnable, Tolerance
from prunebench.backends.torch_backends import effective_mask, hidden_fn
from prunebench.bench.records import PairedResult
from prunebench.bench.timing import time_paired
from prunebench.models.batch import Batch


@dataclass(frozen=True)
class FidelityResult:
    """One comparison of a runnable with the eager reference.

    Attributes:
        backend: the runnable's backend.
        max_abs: largest absolute difference of any hidden-state element.
        cosine: cosine similarity of the flattened hidden states.
        ok: whether both met the tolerance (and the output shapes agreed).
        tolerance: what was demanded.
        message: one line saying what failed ("" when ok).
        text: the same comparison on held-out task text (``{"max_abs", "cosine", "ok", "rows"}``), None when
            the caller had none.
    """

    backend: str
    max_abs: float
    cosine: float
    ok: bool
    tolerance: Tolerance
    message: str = ""
    text: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["tolerance"] = self.tolerance.to_dict()
        return out


def reference_outputs(reference: nn.Module, batch: Batch) -> torch.Tensor:
    """The eager model's hidden states [B, S, D] (float32, CPU); the reference must be in eval mode."""
    if reference.training:
        raise FidelityError("the eager reference model is in training mode; call .eval() before checking")
    with torch.inference_mode():
        return hidden_fn(reference)(batch["input_ids"], effective_mask(batch)).detach().float().cpu()


def compare(backend: str, got: torch.Tensor, want: torch.Tensor, tolerance: Tolerance) -> FidelityResult:
    """Compare hidden states ``got`` with ``want`` under ``tolerance``."""
    if got.shape != want.shape:
        return FidelityResult(backend, math.inf, 0.0, False, tolerance,
                              f"{backend}: output shape {tuple(got.shape)} != eager {tuple(want.shape)}")
    got, want = got.float(), want.float()
    max_abs = float((got - want).abs().max()) if got.numel() else 0.0
    cosine = float(F.cosine_similarity(got.flatten(), want.flatten(), dim=0)) if got.numel() else 1.0
    problems = []
    if not math.isfinite(max_abs):
        problems.append("non-finite outputs")
    limit = tolerance.abs_limit(want)
    if limit is not None and not max_abs <= limit:
        problems.append(f"max |diff| {max_abs:.3g} > {limit:.3g}")
    if tolerance.min_cosine is not None and not cosine >= tolerance.min_cosine:
        problems.append(f"cosine {cosine:.6f} < {tolerance.min_cosine:g}")
    message = f"{backend} does not match eager: {'; '.join(problems)}" if problems else ""
    return FidelityResult(backend, max_abs, cosine, not problems, tolerance, message)


def assert_eval(runnable: Runnable) -> None:
    """Raise :class:`FidelityError` if any module the runnable calls is in training mode."""
    bad = runnable.training_modules()
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise FidelityError(f"{runnable.backend}: module(s) in training mode would be timed: {shown}")


def check_fidelity(runnable: Runnable, reference: nn.Module, batch: Batch,
                   want: torch.Tensor | None = None, *, text: Batch | None = None) -> FidelityResult:
    """Eval-mode check, then the runnable's outputs against the reference's on ``batch`` and on ``text``.

    Args:
        runnable: what will be timed.
        reference: the eager model (the dense or pruned model itself), in eval mode.
        batch: the inputs that will be timed.
        want: the reference's outputs on ``batch`` if already computed (saves a forward).
        text: held-out task text (padded rows of real token ids), checked too when given: the result is ok only
            when both are, its message says which failed, and ``text`` records the second comparison.

    Raises:
        FidelityError: the runnable or the reference is in training mode.
    """
    assert_eval(runnable)
    want = reference_outputs(reference, batch) if want is None else want
    result = compare(runnable.backend, runnable.outputs(batch), want, runnable.tolerance)
    if text is None or not result.ok:
        return result
    on_text = compare(runnable.backend, runnable.outputs(text), reference_outputs(reference, text), runnable.tolerance)
    summary = {"max_abs": on_text.max_abs, "cosine": on_text.cosine, "ok": on_text.ok,
               "rows": int(text["input_ids"].shape[0])}
    if not on_text.ok:
        return replace(on_text, message=on_text.message.replace(" does not match eager", " does not match eager on "
                                                                "held-out task text", 1), text=summary)
    return replace(result, text=summary)


def time_runnables(baseline: tuple[Runnable, nn.Module], candidate: tuple[Runnable, nn.Module], batch: Batch,
                   *, timer: Callable[..., PairedResult] = time_paired,
                   **timing: Any) -> tuple[PairedResult, FidelityResult, FidelityResult]:
    """Paired timing of two runnables on ``batch``, each first checked against its own eager reference.

    Args:
        baseline, candidate: ``(runnable, eager reference)``; the reference of a backend's runnable is the
            model it was prepared from.
        batch: the inputs both are timed on.
        timer: the paired timing function (``time_paired``; injected by tests).
        **timing: keyword arguments of ``time_paired``.

    Returns:
        The paired result and both fidelity results.

    Raises:
        FidelityError: a side is in training mode or does not match its reference; nothing was timed.
    """
    checks = []
    for runnable, reference in (baseline, candidate):
        result = check_fidelity(runnable, reference, batch)
        if not result.ok:
            raise FidelityError(result.message)
        checks.append(result)
    base_fn, cand_fn = baseline[0].bind(batch), candidate[0].bind(batch)
    # Checked again right before the clock starts: nothing may flip a mode between the check and the timing.
    assert_eval(baseline[0])
    assert_eval(candidate[0])
    return timer(base_fn, cand_fn, **timing), checks[0], checks[1]
