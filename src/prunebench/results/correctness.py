"""Per-prediction correctness of an evaluation, stored compactly: one bit per prediction, base64 text.

The evaluation scores the same (seeded) predictions for every variant, so two variants' bit strings pair up one
to one; the analysis bootstraps accuracy differences over them (see ``analysis.accuracy``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np


def pack_correct(hits: Sequence[bool]) -> str:
    """Booleans as base64 of their packed bits (an eighth of a byte per prediction)."""
    bits = np.packbits(np.asarray(hits, dtype=bool).astype(np.uint8))  # [ceil(N / 8)]
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_correct(packed: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_correct`: the first ``n`` values, as 0/1 (uint8).

    Raises:
        ValueError: the text is not base64 or holds fewer than ``n`` bits.
    """
    try:
        raw = base64.b64decode(packed, validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"per-prediction correctness is not base64 text ({exc})") from None
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits.size < n:
        raise ValueError(f"per-prediction correctness holds {bits.size} bits, expected {n}")
    return bits[:n]
