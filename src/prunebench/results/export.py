"""Exports of a store snapshot: ``results.json`` (everything) and ``results.csv`` (one row per variant x batch).

Both are deterministic functions of the snapshot (sorted keys, fixed column order, no clock), so rebuilding
them from the same store gives the same bytes, and both are written atomically (temporary file + rename) so a
reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prunebench.results.schema import CELLS, EVALUATIONS, VARIANTS

#: Variant columns of the CSV (dict-valued fields are flattened or left to the JSON export).
_VARIANT_COLS = tuple(f for f, k in VARIANTS.fields if k != "json" and f not in ("name", "status", "error"))
_EVAL_COLS = tuple(f for f, k in EVALUATIONS.fields if k != "json" and f != "variant")
_CELL_COLS = tuple(f for f, k in CELLS.fields if k != "json" and f not in ("variant", "status", "error"))
#: A cell field whose name a variant or evaluation column already has (``macs``) is exported as ``cell_<name>``.
_CELL_CSV = {f: f"cell_{f}" if f in _VARIANT_COLS or f in _EVAL_COLS else f for f in _CELL_COLS}

#: Every CSV column, in order: identity, variant figures, fidelity, evaluation, then the benchmark cell.
CSV_COLUMNS = (
    "variant",
    *_VARIANT_COLS,
    "variant_status",
    "variant_error",
    "fidelity_max_abs_diff",
    "fidelity_ok",
    *_EVAL_COLS,
    *_CELL_CSV.values(),
    "cell_status",
    "cell_error",
)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp creates 0600; results and reports are meant to be read by others (served, attached to PRs).
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by None, recursively: strict JSON has no NaN/Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def export_json(snapshot: Mapping[str, Any], path: str | Path) -> Path:
    """Write the whole snapshot (run, variants, evaluations, cells incl. raw samples) as strict JSON."""
    text = json.dumps(json_safe(dict(snapshot)), sort_keys=True, indent=2, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def csv_rows(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The CSV's rows as dicts: one per variant x (batch size, seq len); a variant without cells gets one row."""
    evals = {e["variant"]: e for e in snapshot.get("evaluations", [])}
    cells_by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for cell in snapshot.get("cells", []):
        cells_by_variant.setdefault(cell["variant"], []).append(cell)
    names = [v["name"] for v in snapshot.get("variants", [])]
    # Cells of a variant that has no variant record (a producer bug) still get exported, after the rest.
    names += [n for n in cells_by_variant if n not in names]
    variants = {v["name"]: v for v in snapshot.get("variants", [])}
    rows = []
    for name in names:
        variant = variants.get(name, {})
        fidelity = variant.get("fidelity") or {}
        ev = evals.get(name, {})
        base: dict[str, Any] = {"variant": name}
        base.update({c: variant.get(c) for c in _VARIANT_COLS})
        base.update(
            variant_status=variant.get("status"),
            variant_error=variant.get("error"),
            fidelity_max_abs_diff=fidelity.get("max_abs_diff"),
            fidelity_ok=fidelity.get("ok"),
        )
        base.update({c: ev.get(c) for c in _EVAL_COLS})
        cells = sorted(cells_by_variant.get(name, []), key=lambda c: (c["seq_len"], c["batch_size"]))
        for cell in cells or [{}]:
            row = dict(base)
            row.update({_CELL_CSV[c]: cell.get(c) for c in _CELL_COLS})
            row.update(cell_status=cell.get("status"), cell_error=cell.get("error"))
            rows.append(row)
    return rows


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # repr keeps every digit (round-trips exactly); non-finite values stay readable.
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def export_csv(snapshot: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``results.csv``: the columns of :data:`CSV_COLUMNS`, one row per variant x batch size."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in csv_rows(snapshot):
        writer.writerow([_csv_value(row.get(c)) for c in CSV_COLUMNS])
    return write_bytes_atomic(path, buf.getvalue().encode("utf-8"))
