"""What to prune: :class:`PruneSpec`, validated at construction, and the registry of methods."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from prunebench.pruning.criteria import criteria_for, get_criterion
from prunebench.pruning.schedule import SCHEDULE_REGISTRY
from prunebench.registry import Registry
from prunebench.serde import reject_unknown

SCOPES = ("layer", "global")
GRANULARITIES = ("heads", "neurons", "both", "layers")
#: The most pruning steps a gradual (iterative) run may take. At 100 steps each step already raises the sparsity
#: by under one point, finer than any schedule (Zhu & Gupta 2017 use tens); every further step only re-scores
#: every weight and recovers once more, so ``--steps 100000`` would run for days while pruning no better.
MAX_STEPS = 100


@dataclass(frozen=True)
class MethodInfo:
    """Static description of a pruning method (what ``prunebench list methods`` shows and the spec checks).

    The planner that carries the method out is registered under the same name in
    :data:`prunebench.pruning.methods.PLANNERS`; the criteria it accepts are those registered in
    :data:`prunebench.pruning.criteria.CRITERIA` that name it in their ``methods``.

    Attributes:
        name: registry key.
        description: one line for listings.
        scopes: scopes the method accepts.
        default_criterion: the criterion used when a spec names none (None: those of the base method).
        structured: removes whole groups (heads / neurons / layers) and shrinks the model.
        gradual: runs a base method step by step, calling ``on_step`` between steps (``iterative``).
        can_be_base: a gradual method may run it at each step.
        per_module_scopes: scopes in which the target sparsity applies to every module separately (the
            prune report then records it per module).
        nm_pattern: the spec's ``n`` and ``m`` fix the sparsity at ``1 - n/m`` (N:M semi-structured).
    """

    name: str
    description: str
    scopes: tuple[str, ...]
    default_criterion: str | None = None
    structured: bool = False
    gradual: bool = False
    can_be_base: bool = False
    per_module_scopes: tuple[str, ...] = ()
    nm_pattern: bool = False

    @property
    def criteria(self) -> tuple[str, ...]:
        """Registered criteria this method accepts, the default first."""
        names = criteria_for(self.name)
        if self.default_criterion in names:
            names = (self.default_criterion, *(n for n in names if n != self.default_criterion))
        return names


METHODS: Registry[MethodInfo] = Registry("pruning method")


def _add(info: MethodInfo) -> None:
    METHODS.add(info.name, info)


_add(MethodInfo(
    "magnitude", "unstructured: zero the lowest-scoring weights (|W| by default), per layer or one global threshold",
    ("layer", "global"), "l1", can_be_base=True, per_module_scopes=("layer",)))
_add(MethodInfo(
    "structured", "remove whole attention heads / FFN neurons / layers; the model physically shrinks",
    ("layer", "global"), "l1", structured=True, can_be_base=True))
_add(MethodInfo(
    "iterative", "gradual: raise sparsity over `steps` by a schedule, calling on_step (fine-tuning) between steps",
    ("layer", "global"), None, gradual=True))
_add(MethodInfo(
    "wanda", "Wanda (Sun et al. 2023): |W| * ||X||_2 from calibration activations, compared per output row",
    ("layer",), "wanda", can_be_base=True, per_module_scopes=("layer",)))
_add(MethodInfo(
    "nm", "N:M semi-structured (default 2:4): keep the N best of every M consecutive input weights",
    ("layer",), "l1", per_module_scopes=("layer",), nm_pattern=True))

#: Methods a gradual (iterative) run may use at each step.
ITERATIVE_BASES = tuple(name for name, info in METHODS if info.can_be_base)
#: The gradual method ("--method M --steps N" runs M gradually through it).
GRADUAL_METHOD = next(name for name, info in METHODS if info.gradual)


@dataclass(frozen=True)
class PruneSpec:
    """One pruning request; invalid combinations fail at construction with a one-line ValueError.

    Attributes:
        method: registry name (``magnitude``, ``structured``, ``iterative``, ``wanda``, ``nm``).
        sparsity: target fraction in [0, 1): of prunable weights (unstructured) or of heads / neurons /
            layers (structured). ``None`` means 0.5, or ``1 - n/m`` for ``nm`` (which fixes it).
        scope: ``layer`` (every module / layer to the target) or ``global`` (one ranking across them).
        granularity: structured groups: ``heads``, ``neurons``, ``both`` or ``layers``.
        criterion: importance score (higher = keep); ``None`` picks the method's default.
        schedule: iterative schedule: ``one_shot``, ``linear`` or ``cubic`` (Zhu & Gupta 2017).
        steps: iterative pruning steps, 1 .. :data:`MAX_STEPS`.
        base_method: what each iterative step runs (``magnitude``, ``structured`` or ``wanda``).
        n: kept weights per group for ``nm``.
        m: group size for ``nm``.
        round_to: structured: keep per-layer head / neuron counts multiples of this.
        allow_empty_layers: structured: a layer may lose all its heads (or neurons).
        seed: seed of the ``random`` criterion.
    """

    method: str = "magnitude"
    sparsity: float | None = None
    scope: str = "layer"
    granularity: str = "both"
    criterion: str | None = None
    schedule: str = "one_shot"
    steps: int = 1
    base_method: str = "magnitude"
    n: int = 2
    m: int = 4
    round_to: int = 1
    allow_empty_layers: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        info = METHODS.get(self.method)  # unknown method -> ValueError listing the valid ones
        if info.gradual:
            if self.base_method not in ITERATIVE_BASES:
                raise ValueError(
                    f"unknown base method {self.base_method!r} for iterative; choose from: {', '.join(ITERATIVE_BASES)}"
                )
            info = METHODS.get(self.base_method)
        for name, value in (("steps", self.steps), ("n", self.n), ("m", self.m), ("round_to", self.round_to),
                            ("seed", self.seed)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'seed' else 'positive'} integer, "
                                 f"got {value!r}")
        if self.steps > MAX_STEPS:
            raise ValueError(f"steps must be an integer in [1, {MAX_STEPS}], got {self.steps}")
        if self.n > self.m:
            raise ValueError(f"N:M needs n <= m, got {self.n}:{self.m}")
        if info.nm_pattern and self.n == self.m:
            raise ValueError(f"N:M {self.n}:{self.m} keeps every weight and removes nothing; give n < m, e.g. 2:4")
        if info.nm_pattern:
            fixed = 1.0 - self.n / self.m
            if self.sparsity is not None and not math.isclose(float(self.sparsity), fixed, abs_tol=1e-9):
                raise ValueError(f"nm with {self.n}:{self.m} has sparsity {fixed:g}; got {self.sparsity!r}")
            object.__setattr__(self, "sparsity", fixed)
        elif self.sparsity is None:
            object.__setattr__(self, "sparsity", 0.5)
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= float(s) < 1.0:
            raise ValueError(f"sparsity must lie in [0, 1), got {s!r}")
        object.__setattr__(self, "sparsity", float(s))
        if self.scope not in info.scopes:
            raise ValueError(f"unknown scope {self.scope!r} for {self.method}; choose from: {', '.join(info.scopes)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {self.granularity!r}; choose from: {', '.join(GRANULARITIES)}")
        SCHEDULE_REGISTRY.get(self.schedule)  # unknown -> ValueError listing the valid names
        criterion = info.criteria[0] if self.criterion is None else self.criterion
        if criterion not in info.criteria:
            label = f"{self.method}/{self.base_method}" if METHODS.get(self.method).gradual else self.method
            raise ValueError(f"unknown criterion {criterion!r} for {label}; choose from: {', '.join(info.criteria)}")
        object.__setattr__(self, "criterion", criterion)
        if not isinstance(self.allow_empty_layers, bool):
            raise ValueError(f"allow_empty_layers must be true or false, got {self.allow_empty_layers!r}")

    @property
    def info(self) -> MethodInfo:
        """The registered description of :attr:`method`."""
        return METHODS.get(self.method)

    @property
    def gradual(self) -> bool:
        """Whether the method runs its base method step by step (``iterative``)."""
        return self.info.gradual

    @property
    def effective_method(self) -> str:
        """The method each step runs (the base method for a gradual method)."""
        return self.base_method if self.gradual else self.method

    @property
    def per_module_target(self) -> bool:
        """Whether the target sparsity applies to every prunable module separately."""
        return self.scope in METHODS.get(self.effective_method).per_module_scopes

    @property
    def structured(self) -> bool:
        """Whether the result removes whole groups (and is shrunk by default)."""
        return METHODS.get(self.effective_method).structured

    @property
    def needs_calib(self) -> bool:
        """Whether the criterion reads calibration batches (ask it; names are never compared)."""
        return get_criterion(self.criterion).needs_calibration

    @property
    def needs_labels(self) -> bool:
        """Whether those calibration batches must carry labels."""
        return get_criterion(self.criterion).needs_labels

    def step_spec(self, sparsity: float) -> PruneSpec:
        """The one-shot spec an iterative run executes at a step of the given sparsity."""
        data = self.to_dict()
        data.update(method=self.base_method, sparsity=sparsity, schedule="one_shot", steps=1)
        return PruneSpec.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        reject_unknown(data, (f.name for f in fields(cls)), "prune spec keys", list_valid=True)
        return cls(**data)
