"""Refit a saved latency model without some of its calibration configurations, and re-check it, no timing.

A search benchmark's JSON keeps the measured latency table (its per-layer tables and every calibration
configuration with its measured speedup) and the held-out check (20 other configurations with theirs). This
refits the in-model factors (:func:`prunebench.search.latency.fit_in_model`) on the calibration
configurations with and without the all-(1, 1) one (every layer at one head and one neuron, dropped from
:func:`prunebench.search.measure.axis_configs`), and reports each fit's error on the held-out check: the
evidence for dropping it, reproducible from the saved measurements of a run that still had it.

Usage: python benchmarks/latency_refit.py FILE [FILE ...]   (e.g. search_minilm.json at commit 11e9bae:
    git show 11e9bae:benchmarks/results/search_minilm.json > /tmp/minilm_old.json)
Prints one line per file and fit, and writes --out (default benchmarks/results/latency_refit.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from prunebench.search.latency import LatencyTable, fit_in_model


def _widths(rows: list[list[int]]) -> tuple[tuple[int, int], ...]:
    return tuple((int(h), int(f)) for h, f in rows)


def _check(table: LatencyTable, held_out: list[dict[str, Any]]) -> dict[str, Any]:
    errors = np.array([table.speedup(_widths(c["widths"])) / c["measured"] - 1 for c in held_out])
    return {"median_abs_error": float(np.median(np.abs(errors))), "mean_error": float(errors.mean()),
            "max_abs_error": float(np.abs(errors).max()), "over_predicted": int((errors > 0).sum()),
            "n": len(errors)}


def refit(report: dict[str, Any]) -> dict[str, Any]:
    """Held-out errors of the saved fit, its refit on all calibration rows, and the refit without all-(1, 1)."""
    saved = LatencyTable.from_dict(report["latency_table"])
    dense_units = saved.latency(saved.full)  # the fit's dense latency in units (fixed + coefficients . base)
    rows = list(saved.calibration)
    smallest = [[1, 1] for _ in saved.full]
    kept = [r for r in rows if r["widths"] != smallest]
    held_out = report["latency_check"]["configs"]
    out = {"saved": _check(saved, held_out), "calibration_rows": len(rows), "had_all_1_1": len(kept) < len(rows)}
    for name, use in (("refit_all", rows), ("refit_without_all_1_1", kept)):
        table = fit_in_model(saved, [_widths(r["widths"]) for r in use], [r["measured"] for r in use], dense_units)
        out[name] = _check(table, held_out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latency_refit.json")
    args = parser.parse_args()
    results = {}
    for path in args.files:
        results[str(path)] = res = refit(json.loads(path.read_text()))
        for name in ("saved", "refit_all", "refit_without_all_1_1"):
            r = res[name]
            print(f"{path.name} {name}: median |error| {r['median_abs_error']:.1%}, mean {r['mean_error']:+.1%}, "
                  f"{r['over_predicted']}/{r['n']} over-predicted")
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
