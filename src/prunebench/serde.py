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


def comma_items(text: str, what: str) -> list[str]:
    """The items of a comma list typed by a user (``--sparsity``, ``--batch-sizes``, ``--targets``, ``--methods``,
    ``--backends``): one rule for every list, so none drops what another refuses.

    Raises:
        ValueError: nothing given, or an empty item (``1,,2``, a trailing comma).
    """
    items = [v.strip() for v in text.split(",")]
    if not any(items):
        raise ValueError(f"expected comma-separated {what}, got {text!r}")
    if not all(items):
        raise ValueError(f"empty item in {text!r}; expected comma-separated {what}")
    return items


def reject_duplicates(values: Iterable[object], text: str) -> None:
    """Refuse a list that names a value twice (``0.5,0.5`` ran every variant twice under one name).

    Raises:
        ValueError: naming the first repeated value and the list as given.
    """
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice in {text!r}; give each value once")
        seen.add(value)
