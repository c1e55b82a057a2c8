"""The least-squares refit of output projections after heads or neurons were removed (no training).

After groups are removed, the Linear that reads them (the attention output projection for heads, the FFN
output projection for neurons; the adapter's :meth:`~prunebench.models.arch.ArchAdapter.output_linear`)
sees fewer inputs. Refitting it, bias included, so that on calibration tokens it reproduces the *dense*
model's output of that projection from the inputs the *pruned* model now produces there, lets the kept
groups take over what the removed ones contributed on average (Kwon et al. 2022 solve the same layer-wise
least squares for per-group scales; refitting the whole projection is the same problem with more freedom):

    W* = argmin_W ||[X 1] W - Y||^2 + lam ||W - P||^2    X [N, k]: the pruned model's projection inputs
                                                          Y [N, D]: the dense model's projection outputs
                                                          lam = ridge * mean(diag([X 1]^T [X 1]))

with the prior ``P`` either the current (pruned) weights (``prior="current"``: with little data the refit
stays near them) or zero (``prior="zero"``: plain ridge). Projections are fitted one at a time in forward
order (layer by layer, attention first), each on the inputs the already-refitted earlier layers produce, so
earlier errors are corrected on the way and do not compound. The one implementation: the latency search's
:func:`prunebench.search.rescale.rescale_` and the Hugging Face shrink
(:func:`prunebench.pruning.group_importance.shrink_refit_`) both call :func:`refit_outputs_`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prunebench.models.adapters import as_adapter
from prunebench.models.batch import Batch
from prunebench.pruning.calibration import tap_linears

#: Group kinds read by one output projection (``layers`` have none).
REFIT_KINDS = ("heads", "neurons")
PRIORS = ("current", "zero")


def refit_targets(pruned: Any, dense: Any) -> dict[str, tuple[nn.Linear, nn.Linear]]:
    """``"{layer}.{kind}" -> (pruned projection, dense projection)`` for every output projection of ``pruned``
    (a model or adapter) that lost inputs, in forward order. A projection with no input left is skipped: the
    model does not run it (its block adds the bias alone), so there is nothing to fit it on."""
    pa, da = as_adapter(pruned), as_adapter(dense)
    out = {}
    for i in range(pa.n_layers):
        for kind in REFIT_KINDS:
            lin, src = pa.output_linear(kind, i), da.output_linear(kind, i)
            if 0 < lin.in_features < src.in_features:
                out[f"{i}.{kind}"] = (lin, src)
    return out


@torch.no_grad()
def solve_refit_(lin: nn.Linear, xtx: torch.Tensor, xty: torch.Tensor, ridge: float, prior: str = "current") -> None:
    """Replace ``lin``'s weight [D, k] and bias [D] by the ridge solution from ``[X 1]^T [X 1]`` [k+1, k+1] and
    ``[X 1]^T Y`` [k+1, D] (float64), pulled toward ``prior`` (see the module docstring)."""
    if prior not in PRIORS:
        raise ValueError(f"unknown refit prior {prior!r}; choose from: {', '.join(PRIORS)}")
    k = lin.in_features
    lam = ridge * float(xtx.diagonal().mean())
    rhs = xty
    if prior == "current":
        w0 = torch.cat([lin.weight.detach().double().cpu().T, lin.bias.detach().double().cpu()[None, :]])  # [k+1, D]
        rhs = xty + lam * w0
    w = torch.linalg.solve(xtx + lam * torch.eye(k + 1, dtype=torch.float64), rhs)  # [k+1, D]
    lin.weight.copy_(w[:k].T.to(lin.weight))
    lin.bias.copy_(w[k].to(lin.bias))


@torch.no_grad()
def refit_outputs_(pruned: Any, dense: Any, fit: Sequence[Batch], *, ridge: float, prior: str = "current",
                   targets: dict[str, tuple[nn.Linear, nn.Linear]] | None = None) -> list[str]:
    """Refit every output projection of ``pruned`` that lost inputs (:func:`refit_targets`, or ``targets``), in
    place, one by one in forward order, on the ``fit`` batches; returns the refitted names.

    Args:
        pruned, dense: the shrunk model and the model it was shrunk from (models or adapters, same layers).
        ridge, prior: the ridge strength relative to the mean input energy, and what it pulls toward.

    Raises:
        ValueError: no calibration batches, or an unknown prior.
    """
    if not fit:
        raise ValueError("refitting needs calibration batches")
    if prior not in PRIORS:
        raise ValueError(f"unknown refit prior {prior!r}; choose from: {', '.join(PRIORS)}")
    targets = refit_targets(pruned, dense) if targets is None else targets
    if not targets:
        return []
    # Every dense target in one pass: per projection, per batch, [real tokens, D].
    wanted: dict[str, list[torch.Tensor]] = {name: [] for name in targets}
    tap_linears(as_adapter(dense), {name: src for name, (_, src) in targets.items()}, fit,
                lambda name, rows: wanted[name].append(rows.double().cpu()), what="out")
    for name, (lin, _) in targets.items():  # insertion order is forward order
        xtx, xty = _normal_equations(pruned, lin, fit, wanted[name])
        solve_refit_(lin, xtx, xty, ridge, prior)
    return list(targets)


def _normal_equations(pruned: Any, lin: nn.Linear, fit: Sequence[Batch], targets: list[torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(``[X 1]^T [X 1]``, ``[X 1]^T Y``) of ``lin``'s inputs in ``pruned`` now, against the dense rows ``targets``
    (one [n, D] per batch), summed batch by batch so no [N, k] matrix of the whole set is held."""
    k = lin.in_features
    xtx = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    xty = torch.zeros(k + 1, lin.out_features, dtype=torch.float64)
    batch = iter(targets)

    def add(_: object, rows: torch.Tensor) -> None:
        # A stopping tap sees each batch once, in order: its rows pair up with the dense rows of that batch.
        x1 = torch.cat([rows.double().cpu(), torch.ones(len(rows), 1, dtype=torch.float64)], dim=1)  # [n, k+1]
        xtx.add_(x1.T @ x1)
        xty.add_(x1.T @ next(batch))

    tap_linears(as_adapter(pruned), {"lin": lin}, fit, add, what="in", stop=True)
    return xtx, xty
