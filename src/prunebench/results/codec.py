"""Conversion of record fields to and from their SQLite columns (JSON text for dicts, canonical bytes)."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

from prunebench.results.schema import Table


def _json_default(value: Any) -> Any:
    """JSON fallback for numpy/torch scalars and tuples-like values that producers may hand over."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serializable")


def to_json(value: Any) -> str:
    """Canonical JSON text (sorted keys) so that equal data gives equal bytes."""
    return json.dumps(value, sort_keys=True, default=_json_default, separators=(",", ":"))


def to_db(table: Table, field: str, kind: str, value: Any) -> Any:
    """Convert one field value for storage; a wrong type is a one-line ValueError naming the field."""
    if value is None:
        return None
    where = f"{table.name}.{field}"
    if kind == "json":
        if not isinstance(value, (Mapping, list, tuple)):
            raise ValueError(f"{where} must be a dict or list, got {type(value).__name__}")
        return to_json(value)
    if kind == "text":
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {type(value).__name__}")
        return value
    if kind == "bool":
        return int(bool(value))
    if kind == "int":
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise ValueError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, numbers.Real):  # "real"
        # SQLite turns NaN into NULL anyway; do it explicitly so that the round trip is predictable.
        return None if math.isnan(float(value)) else float(value)
    raise ValueError(f"{where} must be a number, got {value!r}")


def from_db(kind: str, value: Any) -> Any:
    """Convert one stored value back (JSON text to data, 0/1 to bool).

    Raises:
        ValueError: the value is not of the column's kind (a store edited by hand, or damaged): a text where a
            number goes, JSON that does not parse. SQLite's column affinity does not refuse such values.
    """
    if value is None:
        return None
    if kind == "json":
        if not isinstance(value, str):
            raise ValueError(f"expected JSON text, found {type(value).__name__}")
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError("not valid JSON") from None
    if kind == "bool":
        if not isinstance(value, int):
            raise ValueError(f"expected 0 or 1, found {_kind_of(value)}")
        return bool(value)
    if kind == "int" and not isinstance(value, int):
        raise ValueError(f"expected an integer, found {_kind_of(value)}")
    if kind == "real" and not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, found {_kind_of(value)}")
    if kind == "text" and not isinstance(value, str):
        raise ValueError(f"expected text, found {_kind_of(value)}")
    return value


def _kind_of(value: Any) -> str:
    """What a stored value is, for a message (never the value itself: it may be long or binary)."""
    return {str: "text", bytes: "binary data", float: "a number", int: "an integer"}.get(type(value), "a value")
