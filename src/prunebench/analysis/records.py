"""The analysis records: frozen dataclasses of plain figures (what the report and the CLI show)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prunebench.results.cell import DEFAULT_BACKEND, CellRecord


@dataclass(frozen=True)
class CellAnalysis(CellRecord):
    """One stored cell (every :class:`~prunebench.results.cell.CellRecord` field, same names and units) plus
    what the analysis derives from it against dense. A failed cell carries no figures."""

    method: str | None = None
    #: ``faster`` / ``slower`` only when the CI clears the noise floor (see :func:`speedup_verdict`).
    verdict: str = "n/a"
    #: half-width of the noise band used for the verdict: the twin's largest distance from 1 at this shape.
    noise_margin: float = 0.0
    #: realized speedup / FLOP-ideal speedup: 1.0 means the removed FLOPs turned fully into time saved.
    realized_over_ideal: float | None = None
    #: peak memory of this variant / peak memory of dense at the same batch size and seq len.
    peak_memory_ratio: float | None = None
    #: the whole CI lies above the FLOP-ideal (beyond the noise floor): faster than a perfect kernel could
    #: make it, so a timing fault or a cost the FLOP count misses (see :func:`~prunebench.analysis.core.beyond_ideal`).
    beyond_ideal: bool = False


@dataclass(frozen=True)
class VariantAnalysis:
    """One variant's size, accuracy and fidelity figures, with ratios and deltas against dense."""

    name: str
    method: str | None
    requested_sparsity: float | None
    measured_sparsity: float | None
    materialization: str | None
    status: str | None
    error: str | None
    params: int | None
    params_ratio: float | None
    nonzero_params: int | None
    nonzero_ratio: float | None
    disk_bytes: int | None
    disk_ratio: float | None
    macs: int | None
    effective_macs: int | None
    #: dense MACs / this variant's effective MACs: the speedup if time were proportional to FLOPs.
    flop_ideal_speedup: float | None
    accuracy: float | None
    #: accuracy - dense accuracy (a fraction; x100 for percentage points).
    accuracy_delta: float | None
    metric_name: str | None
    agreement: float | None
    kl: float | None
    cosine: float | None
    trivial_accuracy: float | None
    fidelity_max_abs_diff: float | None
    fidelity_ok: bool | None
    #: paired-bootstrap 95% CI of ``accuracy_delta`` over the evaluated predictions (None without them).
    accuracy_delta_ci_low: float | None = None
    accuracy_delta_ci_high: float | None = None
    #: ``more accurate`` / ``less accurate`` / ``no measurable change`` (the CI holds 0) / ``n/a``, or, where
    #: the evaluation measures nothing, ``too few predictions`` / ``task does not fit the model``
    #: (:data:`~prunebench.analysis.accuracy.ACCURACY_VERDICTS`).
    accuracy_verdict: str = "n/a"
    #: predictions the variant's evaluation scored (None: not evaluated, or not said).
    n_predictions: int | None = None
    #: recovery, refit or calibration steps that went wrong, one line each (``details.step_problems``).
    step_problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Crossover:
    """A batch size at which a variant starts (or stops) being measurably faster than dense."""

    variant: str
    seq_len: int
    #: the first batch size with the new verdict.
    batch_size: int
    #: the batch size just before it (the last one with the old verdict).
    previous_batch_size: int
    kind: str  # "starts_faster" or "stops_faster"
    before: str
    after: str


@dataclass(frozen=True)
class ParetoPoint:
    """A variant's (latency, accuracy) at one batch size, and whether no other variant beats it on both."""

    variant: str
    latency_ms: float
    accuracy: float
    on_front: bool


@dataclass(frozen=True)
class Analysis:
    """Everything the report shows about one run."""

    seq_len: int | None
    batch_sizes: tuple[int, ...]
    variants: tuple[VariantAnalysis, ...]
    cells: tuple[CellAnalysis, ...]
    crossovers: tuple[Crossover, ...]
    #: batch size -> the Pareto points at that batch size (smallest and largest batch size of the run).
    pareto: dict[int, tuple[ParetoPoint, ...]] = field(default_factory=dict)
    #: 95% interval of the dense model's accuracy (None: unknown), and whether it reaches the trivial baseline
    #: (then no accuracy difference can show a loss).
    dense_accuracy_ci: tuple[float, float] | None = None
    accuracy_uninformative: bool = False
    #: predictions the dense evaluation scored, and whether its accuracy is below its trivial baseline (the
    #: task does not fit the model).
    dense_predictions: int | None = None
    task_unfit: bool = False

    def cell(self, variant: str, batch_size: int, seq_len: int | None = None,
             backend: str = DEFAULT_BACKEND) -> CellAnalysis | None:
        """The cell of ``variant`` at ``batch_size`` (and the run's main seq len unless given) on ``backend``
        (eager unless given: a run with ``--backends`` holds one cell per backend at the same shape)."""
        want = self.seq_len if seq_len is None else seq_len
        for c in self.cells:
            if c.variant == variant and c.batch_size == batch_size and c.seq_len == want and c.backend == backend:
                return c
        return None

    def variant(self, name: str) -> VariantAnalysis | None:
        """The variant called ``name``, or None."""
        return next((v for v in self.variants if v.name == name), None)
