"""Settings of a latency-budget search (:class:`SearchOptions`), validated when they are built, so a bad
value fails in one line before anything is measured."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from prunebench.bench.settings import BenchSettings
from prunebench.search.allocate import check_targets
from prunebench.search.backend import BACKEND_CALIBRATION_CONFIGS, BACKEND_CHECK_CONFIGS, check_search_backend
from prunebench.search.importance import search_criterion
from prunebench.search.measure import CONFIG_TIMING, TABLE_TIMING
from prunebench.search.verify import VERIFY_TIMING

#: How the groups kept at a width are chosen (:attr:`SearchOptions.keep`).
KEEP_CHOICES = ("obs", "score")
#: The latency model is trusted only when its held-out median error is at most this (:attr:`max_model_error`).
MAX_MODEL_ERROR = 0.10

@dataclass(frozen=True)
class SearchOptions:
    """Settings of a search run (validated at construction).

    Attributes:
        targets: speedups to reach (> 1), measured against the dense model at the shape below.
        batch_size, seq_len: the timed shape.
        backend: the runtime the targets are met on (a registered backend that can run here): its speedups are
            against dense eager, every model is checked against eager on it before timing, and the eager latency
            model is corrected by whole-model measurements on it (:mod:`prunebench.search.backend`).
        backend_configs: random configurations the backend correction is fitted on (besides dense and the three
            axis configurations); ``backend_check_configs`` the held-out ones it is checked on (0: no check).
        criterion: importance (``fisher`` or ``taylor``).
        neuron_step: kept FFN widths are 1 or multiples of this, each measured in the table (None: d_ff / 16).
        calibration_configs: random whole-model configurations the table's in-model factors are fitted to
            (besides three that separate the head and FFN axes).
        rescale: least-squares refit of output projections (kept only when it lowers held-out loss).
        keep: which groups of a layer stay at a given width: ``obs`` (greedy group OBS on the output
            projection's least squares, :mod:`prunebench.search.reconstruct`; it assumes the refit) or
            ``score`` (the top ``criterion`` scores). None: ``obs`` with rescaling, ``score`` without.
        select: propose several allocations per aim (raw, layer-balanced and layer-normalized importance, and
            uniform fractions; :mod:`prunebench.search.select`) and keep the one with the lowest held-out
            calibration loss; False: the raw-importance knapsack alone.
        check_configs: random widths the latency model is checked on (0: skip the check).
        max_tries: searches per target (a later one aims higher by the measured shortfall of the CI's low end, or
            lower after an overshoot; see :data:`prunebench.search.family.OVERSHOOT`).
        compare_uniform: also build and time uniform pruning at the searched model's measured speed.
        seed: input and check seed.
        max_model_error: the search stops before any pruning when the latency model's held-out median error
            (``check_configs``) is above this (:class:`prunebench.errors.UntrustedTiming`).
        allow_busy: search on with a latency model above ``max_model_error``, and judge targets on verifying
            measurements taken while the machine was busy (both marked in the report); copied into the timings.
    """

    targets: tuple[float, ...]
    batch_size: int = 1
    seq_len: int = 128
    backend: str = "eager"
    backend_configs: int = BACKEND_CALIBRATION_CONFIGS
    backend_check_configs: int = BACKEND_CHECK_CONFIGS
    criterion: str = "fisher"
    neuron_step: int | None = None
    calibration_configs: int = 10
    rescale: bool = True
    keep: str | None = None
    select: bool = True
    check_configs: int = 20
    max_tries: int = 4
    compare_uniform: bool = True
    seed: int = 0
    max_model_error: float = MAX_MODEL_ERROR
    allow_busy: bool = False
    table_timing: BenchSettings = TABLE_TIMING
    verify_timing: BenchSettings = VERIFY_TIMING
    config_timing: BenchSettings = CONFIG_TIMING
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", check_targets(tuple(self.targets)))
        check_search_backend(self.backend)
        search_criterion(self.criterion)
        if self.keep is None:
            object.__setattr__(self, "keep", "obs" if self.rescale else "score")
        if self.keep not in KEEP_CHOICES:
            raise ValueError(f"unknown keep rule {self.keep!r}; choose from: {', '.join(KEEP_CHOICES)}")
        if not 0.0 < self.max_model_error:
            raise ValueError(f"max_model_error must be positive, got {self.max_model_error!r}")
        for name in ("table_timing", "verify_timing", "config_timing"):
            object.__setattr__(self, name, replace(getattr(self, name), allow_busy=self.allow_busy))
        if not isinstance(self.check_configs, int) or isinstance(self.check_configs, bool) or self.check_configs < 0:
            raise ValueError(f"check_configs must be an integer >= 0 (0 skips the check), got {self.check_configs!r}")
        for name in ("backend_configs", "backend_check_configs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("batch_size", "seq_len", "neuron_step", "max_tries"):
            value = getattr(self, name)
            if name == "neuron_step" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
