"""Number formatting shared by the rich table, the HTML page and the Markdown summary (one source of truth)."""

from __future__ import annotations

from typing import Any

#: What a missing figure looks like everywhere.
MISSING = "–"
#: What a cell the busy machine left unmeasured shows instead of a speedup (never a ratio, never a verdict).
UNMEASURED = "unmeasured (machine busy)"


def num(value: float | None, digits: int = 3) -> str:
    """A plain number with ``digits`` significant digits, or the missing mark."""
    return MISSING if value is None else f"{value:.{digits}g}"


def times(value: float | None, digits: int = 2) -> str:
    """A ratio such as a speedup: ``1.42×``."""
    return MISSING if value is None else f"{value:.{digits}f}×"


def speedup_ci(speedup: float | None, low: float | None, high: float | None) -> str:
    """``1.42× [1.38–1.47]``; without a CI only the point estimate."""
    if speedup is None:
        return MISSING
    if low is None or high is None:
        return times(speedup)
    return f"{speedup:.2f}× [{low:.2f}–{high:.2f}]"


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.503`` -> ``50.3%``."""
    return MISSING if value is None else f"{100 * value:.{digits}f}%"


def delta_pp(value: float | None) -> str:
    """An accuracy difference (fraction) in signed percentage points: ``-0.021`` -> ``-2.1 pp``."""
    return MISSING if value is None else f"{100 * value:+.1f} pp"


def count(value: int | None) -> str:
    """A large integer with thousands separators; ``1.2M`` style above ten million."""
    if value is None:
        return MISSING
    if abs(value) >= 10_000_000:
        return f"{value / 1e6:.1f}M"
    return f"{value:,}"


def nbytes(value: int | None, digits: int = 1) -> str:
    """Bytes in binary units: ``12.3 MiB`` (``digits`` decimals above one KiB)."""
    if value is None:
        return MISSING
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.{digits}f} {unit}"
        size /= 1024
    return MISSING  # unreachable; keeps type checkers content


def ms(value: float | None) -> str:
    """A latency in milliseconds."""
    return MISSING if value is None else f"{value:.3g} ms"


def plain(value: Any) -> str:
    """Any config/environment value as short text (None -> missing mark, bools lower-case)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value)
    return str(value)


def cell_speedup(cell: Any) -> str:
    """A speedup cell as tables show it: missing, ``skipped``, :data:`UNMEASURED`, ``FAILED``, or
    ``speedup [CI] verdict``."""
    if cell is None:
        return MISSING
    if cell.status == "skipped":
        return "skipped"
    if cell.status == "unmeasured":
        return UNMEASURED
    if cell.status != "ok":
        return "FAILED"
    return f"{speedup_ci(cell.speedup, cell.speedup_ci_low, cell.speedup_ci_high)} {cell.verdict}"
