"""The two checks every ``from_dict`` (and every options mapping) makes before building anything.

Records, specs, plans, configs and option overrides all refuse unknown keys and layouts newer than this
prunebench understands, with the same one-line messages, instead of guessing or silently dropping fields.
"""

from __future__ import annotations

from collections.abc import Iterable


def reject_unknown(given: Iterable[str], valid: Iterable[str], what: str, *, list_valid: bool = False) -> None:
    """Raise if ``given`` has a key outside ``valid``.

    Args:
        given: the keys supplied (a mapping iterates its keys).
        valid: the accepted keys.
        what: how the message names them, e.g. ``"plan keys"`` -> ``unknown plan keys: x, y``.
        list_valid: also list the accepted keys (for things users type, like options).

    Raises:
        ValueError: one line naming every unknown key, sorted.
    """
    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        tail = f"; valid: {', '.join(sorted(valid))}" if list_valid else ""
        raise ValueError(f"unknown {what}: {', '.join(unknown)}{tail}")


def check_schema_version(version: object, supported: int, what: str) -> None:
    """Raise unless ``version`` is an int this prunebench reads (``<= supported``).

    Raises:
        ValueError: one line naming ``what``, the version found and the newest one supported.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version > supported:
        raise ValueError(f"{what} has schema_version {version!r}; this prunebench reads up to {supported}")
