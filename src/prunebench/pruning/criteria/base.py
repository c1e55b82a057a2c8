"""What a pruning criterion is, and the registry of them.

A criterion turns a model (through its :class:`~prunebench.models.arch.ArchAdapter`) into importance
scores, higher = keep; scores never modify the model. It says what it needs (calibration batches, labels)
and which methods accept it, so the spec, the CLI and the run ask it instead of comparing names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from prunebench.models.arch import ArchAdapter
from prunebench.models.batch import Batch
from prunebench.registry import Registry


class Criterion:
    """Base class of importance criteria; subclasses override the score levels they define.

    Attributes:
        name: registry key (``--criterion NAME``).
        description: one line for ``prunebench list criteria``.
        needs_calibration: the scores read calibration batches (``calib``).
        needs_labels: those batches must carry ``labels`` (gradient-based criteria).
        methods: pruning methods that accept this criterion.
        loss_change: its group scores estimate the loss increase of removing each group, on one scale for
            heads and neurons, so one may be traded for the other (what the latency search needs).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    methods: ClassVar[tuple[str, ...]] = ()
    loss_change: ClassVar[bool] = False

    def weight_scores(
        self, adapter: ArchAdapter, calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, torch.Tensor]:
        """Per-weight importance of every prunable Linear: name -> [out, in] scores.

        Raises:
            ValueError: the criterion has no per-weight scores, or its calibration data is missing.
        """
        raise ValueError(f"criterion {self.name!r} gives no per-weight scores")

    def group_scores(
        self, adapter: ArchAdapter, kind: str, calib: Sequence[Batch] | None, seed: int
    ) -> list[torch.Tensor]:
        """Importance of every group of ``kind``: per layer a [groups] tensor (``layers``: one [n_layers]).

        Raises:
            ValueError: the criterion has no group scores, or its calibration data is missing.
        """
        raise ValueError(f"criterion {self.name!r} gives no structured (group) scores")

    def group_scores_many(
        self, adapter: ArchAdapter, kinds: Sequence[str], calib: Sequence[Batch] | None, seed: int
    ) -> dict[str, list[torch.Tensor]]:
        """Scores of several group kinds: kind -> :meth:`group_scores`; override to share passes over data."""
        return {kind: self.group_scores(adapter, kind, calib, seed) for kind in kinds}

    @property
    def scores(self) -> tuple[str, ...]:
        """Score levels this criterion defines: ``weights`` and/or ``groups``."""
        cls = type(self)
        out = []
        if cls.weight_scores is not Criterion.weight_scores:
            out.append("weights")
        if cls.group_scores is not Criterion.group_scores or cls.group_scores_many is not Criterion.group_scores_many:
            out.append("groups")
        return tuple(out)


#: name -> criterion object, in listing order (built-ins first).
CRITERIA: Registry[Criterion] = Registry("criterion")


def register_criterion(criterion: Criterion) -> Criterion:
    """Add ``criterion`` to :data:`CRITERIA` under its ``name``; returns it (usable at module level)."""
    return CRITERIA.add(criterion.name, criterion)


def criteria_for(method: str) -> tuple[str, ...]:
    """Names of the registered criteria that ``method`` accepts, in registry order."""
    return tuple(name for name, c in CRITERIA if method in c.methods)


def loss_change_criteria() -> tuple[str, ...]:
    """Names of the registered criteria whose group scores are a loss change (:attr:`Criterion.loss_change`)."""
    return tuple(name for name, c in CRITERIA if c.loss_change)


def get_criterion(name: str) -> Criterion:
    """The criterion called ``name``; a ValueError listing the valid names otherwise."""
    return CRITERIA.get(name)
