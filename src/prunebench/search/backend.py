"""Searching for the runtime the user deploys on (``SearchOptions.backend`` other than ``eager``).

A prepared ONNX Runtime session or int8 model cannot time one layer alone, so the search's layer tables stay
eager (:mod:`prunebench.search.measure`). What the user gets is the *whole model on the backend* against dense
eager (switching model and runtime at once), so the eager model's prediction is corrected by whole-model
measurements on the backend: a :class:`BackendCorrection` says ``latency_B(w) / latency_eager(dense) =
scale * latency_eager(w) / latency_eager(dense) + offset``, fitted (non-negative least squares) on a few
configurations (dense, the table's three axis configurations, a few random ones) each prepared on the backend,
checked against its eager model (:func:`prunebench.backends.check_fidelity`, the backend's own tolerance) and
only then timed against dense eager; and checked on other random configurations against the same 10% limit as
the eager model (:func:`check_backend_model`). An affine map of the eager latency keeps the knapsack's order,
so the search asks the eager model for :meth:`BackendCorrection.eager_aim` of a backend target.

*Approximate*: one scale and offset for the whole model. A backend that speeds attention and the FFN by
different factors (int8 quantizes the Linears, not the attention scores' matmuls) is only right on average
over widths; the held-out check measures how far off that is, and every searched model is verified on the
backend itself, the search aiming higher by the measured shortfall when it misses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunebench.backends import BACKENDS, PrepareOptions, Runnable, check_fidelity
from prunebench.backends.base import FidelityError
from prunebench.backends.cells import prepare_variant
from prunebench.bench.inputs import make_inputs
from prunebench.bench.load import CpuMeter
from prunebench.bench.settings import BenchSettings
from prunebench.bench.timing import pinned_threads
from prunebench.models.batch import Batch
from prunebench.search._arch import Widths, adapter_of, first_k_copy
from prunebench.search.latency import LatencyTable, nonnegative_lstsq
from prunebench.search.measure import CALIBRATION_SEED_OFFSET, axis_configs, random_widths
from prunebench.search.verify import Measured, measure_calls

log = logging.getLogger(__name__)

#: The baseline every backend speedup is against: what the user runs before switching model and runtime.
BASELINE = "dense eager"
#: Random configurations fitted on the backend besides dense and the three axis ones (each is an export).
BACKEND_CALIBRATION_CONFIGS = 2
#: Random configurations the corrected model is checked on (held out: the check's seed).
BACKEND_CHECK_CONFIGS = 6
#: The smallest eager speedup the knapsack is asked for when dense on the backend already meets a target.
MIN_EAGER_AIM = 1.001


def check_search_backend(name: str) -> str:
    """``name`` if the search can time models on it here; else a one-line ValueError saying why not.

    Unknown names get the registry's message (every backend listed); a backend whose package or hardware is
    missing gets its own one-line reason (the install command, or the device it needs).
    """
    if name == "eager":
        return name  # without importing the optional backends' dependencies
    backend = BACKENDS.get(name)
    reason = backend.availability()
    if reason is not None:
        raise ValueError(f"backend {name} cannot run here: {reason}")
    return name


def refuse_model(name: str, model: nn.Module) -> None:
    """One-line ValueError when backend ``name`` cannot express ``model`` (e.g. ``sparse`` on a dense model)."""
    if name == "eager":
        return
    reason = BACKENDS.get(name).skip_reason(model)
    if reason is not None:
        raise ValueError(f"--backend {name} cannot run this model: {reason}")


@dataclass(frozen=True)
class BackendCorrection:
    """Whole-model latency on a backend as an affine map of the eager latency model's prediction.

    Attributes:
        backend: the backend's registry name.
        scale, offset: ``latency_B(w) / latency_eager(dense) = scale / s_eager(w) + offset``, with
            ``s_eager`` the eager model's predicted speedup (:meth:`LatencyTable.speedup`); both >= 0.
        calibration: per configuration ``{"widths", "eager_predicted", "measured", "ci", "predicted",
            "fidelity"}`` (speedups against dense eager).
    """

    backend: str
    scale: float
    offset: float
    calibration: tuple[dict[str, Any], ...] = ()

    def speedup(self, eager_speedup: float) -> float:
        """Predicted speedup on the backend, against dense eager, of widths whose eager prediction is
        ``eager_speedup``."""
        return 1.0 / (self.scale / eager_speedup + self.offset)

    def eager_aim(self, target: float) -> float:
        """The eager speedup whose widths reach ``target`` on the backend (inf: no width does)."""
        room = 1.0 / target - self.offset
        return self.scale / room if room > 0 and self.scale > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def fit_correction(backend: str, eager_speedups: Sequence[float], measured: Sequence[float],
                   rows: Sequence[dict[str, Any]] = ()) -> BackendCorrection:
    """Least squares (non-negative) of ``1 / measured`` on ``[1 / eager_speedups, 1]``, unweighted as the eager
    fit is (:func:`prunebench.search.latency.fit_in_model`).

    Raises:
        ValueError: fewer than two configurations, or lengths that differ.
    """
    if len(eager_speedups) < 2 or len(eager_speedups) != len(measured):
        raise ValueError(f"the backend correction needs at least two measured configurations; got "
                         f"{len(eager_speedups)} predictions and {len(measured)} measurements")
    x = np.array([[1.0 / s, 1.0] for s in eager_speedups])  # [K, 2]
    coef = nonnegative_lstsq(x, 1.0 / np.asarray(measured, dtype=float))
    if coef[0] <= 0:  # noise left the width out of it: latency proportional to eager's, through the mean
        coef = np.array([float(np.mean(x[:, 0] / np.asarray(measured)) / np.mean(x[:, 0] ** 2)), 0.0])
    fitted = BackendCorrection(backend, float(coef[0]), float(coef[1]))
    out = [{**r, "predicted": fitted.speedup(s)} for r, s in zip(rows, eager_speedups, strict=False)]
    return BackendCorrection(backend, fitted.scale, fitted.offset, tuple(out))


class BackendTimer:
    """Models prepared on one backend, checked against their eager selves, and timed against dense eager.

    One batch (seeded, unpadded, at the search's shape) serves the fidelity check and the timing, as a cell of
    the run's backend stage does, and held-out task text (``check_text``, where the caller has it) is checked
    too; dense eager is the eager backend's runnable of the dense model.
    """

    def __init__(self, name: str, dense: nn.Module, batch_size: int, seq_len: int, *, seed: int = 0,
                 threads: int | None = None, calibration: Sequence[Batch] = (),
                 check_text: Batch | None = None) -> None:
        self.name = name
        self.backend = BACKENDS.get(name)
        self.threads = threads
        self.options = PrepareOptions(threads=threads or torch.get_num_threads(), shapes=((batch_size, seq_len),),
                                      seed=seed, calibration=tuple(calibration))
        device = next(dense.parameters()).device
        self.batch: Batch = make_inputs(adapter_of(dense).vocab_size, batch_size, seq_len, seed=seed, device=device)
        self.check_text = None if check_text is None else {k: v.to(device) for k, v in check_text.items()}
        self.base = self._prepare("eager", dense)
        self.dense = dense

    def _prepare(self, name: str, model: nn.Module) -> Runnable:
        with pinned_threads(self.threads):
            got = prepare_variant(BACKENDS.get(name), name, model, self.options)
        if got.runnable is None:
            raise ValueError(f"--backend {name} cannot run the model: {got.skip}")
        return got.runnable

    def prepare(self, model: nn.Module) -> tuple[Runnable, dict[str, Any]]:
        """``model`` on the backend, its outputs checked against ``model`` itself (eager) on the timed batch and
        the held-out task text.

        Raises:
            RuntimeError: the backend's outputs miss its tolerance (never timed).
        """
        runnable = self._prepare(self.name, model.eval())
        with pinned_threads(self.threads):
            fidelity = check_fidelity(runnable, model, self.batch, text=self.check_text)
        if not fidelity.ok:
            raise RuntimeError(f"not timed: {fidelity.message}")
        return runnable, fidelity.to_dict()

    def measure(self, model: nn.Module, timing: BenchSettings, *, meter: CpuMeter | None = None) -> Measured:
        """Paired speedup of ``model`` prepared on the backend (checked first) against dense eager."""
        runnable, fidelity = self.prepare(model)
        with pinned_threads(self.threads):
            got = measure_calls(self.base.bind(self.batch), runnable.bind(self.batch), timing, meter=meter)
        return Measured(got.speedup, got.ci_low, got.ci_high, got.pairs, busy=got.busy, contention=got.contention,
                        tries=got.tries, backend=self.name, baseline=BASELINE, fidelity=fidelity)


def unsearchable(backend: str, where: str, why: str) -> FidelityError:
    """The one-line refusal of a search on a backend whose outputs miss eager's (``where``: for which models;
    ``why``: the fidelity check's message): nothing unchecked is ever timed."""
    return FidelityError(f"--backend {backend} cannot be searched for this model: {where} its outputs miss the eager "
                         f"model's ({why.removeprefix('not timed: ')}); search on a backend that computes what eager "
                         "does (eager, openvino)")


def _measure_configs(timer: BackendTimer, dense: nn.Module, table: LatencyTable, configs: Sequence[Widths],
                     timing: BenchSettings) -> list[dict[str, Any]]:
    """Each configuration measured on the backend; one whose backend outputs miss its eager self is left out of
    the timing (recorded with why): a latency figure needs no accurate model, but nothing unchecked is timed, and
    one borderline configuration (a random tiny model under dynamic int8) must not stop the search."""
    rows = []
    for widths in configs:
        row: dict[str, Any] = {"widths": [list(w) for w in widths], "eager_predicted": table.speedup(widths)}
        try:
            got = timer.measure(first_k_copy(dense, widths), timing)
        except RuntimeError as exc:  # the fidelity check refused it: never timed
            rows.append({**row, "measured": None, "skipped": str(exc)})
            continue
        rows.append({**row, "measured": got.speedup, "ci": [got.ci_low, got.ci_high], "fidelity": got.fidelity})
    return rows


def _timed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["measured"] is not None]


@torch.inference_mode()
def measure_correction(timer: BackendTimer, dense: nn.Module, table: LatencyTable, timing: BenchSettings, *,
                       random_configs: int = BACKEND_CALIBRATION_CONFIGS, seed: int = 0) -> BackendCorrection:
    """Fit :class:`BackendCorrection` on dense, the table's axis configurations and ``random_configs`` random
    ones (the calibration seed, so the check stays held out), each measured on the backend against dense eager."""
    gen = torch.Generator().manual_seed(seed + CALIBRATION_SEED_OFFSET + 1)
    configs = [table.full, *axis_configs(table), *(random_widths(table, gen) for _ in range(random_configs))]
    measured = _measure_configs(timer, dense, table, configs, timing)
    rows = _timed(measured)
    if len(rows) < 2:  # nothing to fit a correction on: one line with the first refusal (all are in -v's log)
        refused = [r["skipped"] for r in measured if r["measured"] is None]
        log.info("%s refusals: %s", timer.name, "; ".join(refused))
        first = refused[0] if refused else "too few configurations"
        raise unsearchable(timer.name, f"on {len(refused)} of {len(measured)} whole-model configurations", first)
    return fit_correction(timer.name, [r["eager_predicted"] for r in rows], [r["measured"] for r in rows], rows)


@torch.inference_mode()
def check_backend_model(timer: BackendTimer, dense: nn.Module, table: LatencyTable, correction: BackendCorrection,
                        timing: BenchSettings, *, n_configs: int = BACKEND_CHECK_CONFIGS, seed: int = 0
                        ) -> dict[str, Any]:
    """Predicted (eager model, corrected) vs measured speedup on the backend of ``n_configs`` random widths
    (the eager check's seed): the same record as :func:`prunebench.search.measure.check_latency_model`."""
    gen = torch.Generator().manual_seed(seed)
    measured = _measure_configs(timer, dense, table, [random_widths(table, gen) for _ in range(n_configs)], timing)
    rows = _timed(measured)
    if not rows:
        raise RuntimeError(f"no held-out configuration could be timed on {timer.name}: "
                           + "; ".join(r["skipped"] for r in measured)[:300])
    for r in rows:
        r["predicted"] = correction.speedup(r["eager_predicted"])
        r["error"] = (r["predicted"] - r["measured"]) / r["measured"]
    errors = np.array([r["error"] for r in rows])
    return {"backend": timer.name, "median_abs_error": float(np.median(np.abs(errors))),
            "max_abs_error": float(np.abs(errors).max()), "mean_error": float(errors.mean()),
            "over_predicted": int((errors > 0).sum()), "configs": rows,
            "not_timed": [r for r in measured if r["measured"] is None]}


def fastest_backend(dense: nn.Module, names: Sequence[str], batch_size: int, seq_len: int, timing: BenchSettings,
                    *, seed: int = 0, threads: int | None = None, calibration: Sequence[Batch] = (),
                    check_text: Batch | None = None) -> tuple[str, dict[str, Any]]:
    """The backend of ``names`` on which dense runs fastest against dense eager (each checked against eager
    first), and per backend its measured speedup or why it was left out. ``eager`` counts as 1.0."""
    seen: dict[str, Any] = {}
    best, best_speedup = "eager", 1.0
    for name in names:
        if name == "eager":
            seen[name] = {"speedup": 1.0}
            continue
        reason = BACKENDS.get(name).availability() or BACKENDS.get(name).skip_reason(dense)
        if reason is not None:
            seen[name] = {"skipped": reason}
            continue
        try:
            timer = BackendTimer(name, dense, batch_size, seq_len, seed=seed, threads=threads, calibration=calibration,
                                 check_text=check_text)
            got = timer.measure(dense, timing)
        except (RuntimeError, ValueError) as exc:
            seen[name] = {"skipped": str(exc)}
            continue
        seen[name] = got.to_dict()
        if got.speedup > best_speedup:
            best, best_speedup = name, got.speedup
    log.info("fastest backend for the search: %s (%s)", best, seen)
    return best, seen
