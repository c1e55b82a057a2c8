"""Prune to a target: the most accurate model that meets a *measured* speedup on this machine.

Stages (each its own module): :mod:`~prunebench.search.latency` and :mod:`~prunebench.search.measure`
(latency table measured with paired timing, its in-model fit and its held-out check),
:mod:`~prunebench.search.importance` (Fisher / Taylor scores of heads and neurons from calibration data),
:mod:`~prunebench.search.reconstruct` (which groups stay at a width: greedy OBS on the output projection),
:mod:`~prunebench.search.allocate` (per-layer widths under the predicted latency),
:mod:`~prunebench.search.rescale` (least-squares refit of output projections), :mod:`~prunebench.search.verify`
(build, fidelity, paired verification, uniform pruning at equal measured speed) and
:mod:`~prunebench.search.backend` (the deploy runtime: eager model corrected by whole-model timings on it) and
:mod:`~prunebench.search.family` (one run: a model per target, saved with plan and manifest; its settings are
:class:`~prunebench.search.options.SearchOptions`)."""

from prunebench.search.allocate import Allocation, check_targets, reachable_speedup, search_widths, uniform_widths
from prunebench.search.backend import BackendCorrection, check_search_backend
from prunebench.search.family import MANIFEST_FILE, FamilyResult, search_family
from prunebench.search.importance import Importance, group_importance, search_criterion
from prunebench.search.latency import LatencyTable, LayerTable, fit_in_model
from prunebench.search.measure import check_latency_model, measure_latency_table
from prunebench.search.options import KEEP_CHOICES, SearchOptions
from prunebench.search.rescale import rescale_

__all__ = [
    "KEEP_CHOICES",
    "MANIFEST_FILE",
    "Allocation",
    "BackendCorrection",
    "FamilyResult",
    "Importance",
    "LatencyTable",
    "LayerTable",
    "SearchOptions",
    "check_latency_model",
    "check_search_backend",
    "check_targets",
    "fit_in_model",
    "group_importance",
    "measure_latency_table",
    "reachable_speedup",
    "rescale_",
    "search_criterion",
    "search_family",
    "search_widths",
    "uniform_widths",
]
