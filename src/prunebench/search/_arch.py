"""The one place the search obtains an architecture adapter (so a new adapter family needs no search change)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from torch import nn

from prunebench.models.adapters import adapter_for
from prunebench.models.arch import ArchAdapter

#: Per-layer widths ``((heads, neurons), ...)``: what the search chooses and the latency model prices.
Widths = tuple[tuple[int, int], ...]


def adapter_of(model: nn.Module) -> ArchAdapter:
    """The adapter of ``model`` (one-line ValueError for a model no adapter understands)."""
    return adapter_for(model)


def full_widths(adapter: ArchAdapter) -> Widths:
    """Current (heads, neurons) of every layer."""
    return tuple((adapter.group_count("heads", i), adapter.group_count("neurons", i)) for i in range(adapter.n_layers))


def shrunk_copy(
    model: nn.Module, heads: Mapping[int, Sequence[int]], neurons: Mapping[int, Sequence[int]]
) -> nn.Module:
    """A deep copy of ``model`` keeping only the given head / neuron indices per layer (others untouched)."""
    out = copy.deepcopy(model).eval()
    adapter = adapter_of(out)
    for kind, kept in (("heads", heads), ("neurons", neurons)):
        for layer, keep in kept.items():
            if len(keep) != adapter.group_count(kind, layer):
                adapter.keep_groups_(kind, layer, sorted(keep))
    return out


def first_k_copy(model: nn.Module, widths: Widths) -> nn.Module:
    """A copy with the first ``h`` heads and ``f`` neurons of each layer: for timing, where identity is moot."""
    return shrunk_copy(model, {i: range(h) for i, (h, _) in enumerate(widths)},
                       {i: range(f) for i, (_, f) in enumerate(widths)})
