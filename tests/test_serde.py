"""The shared from_dict checks: unknown keys and schema versions."""

from __future__ import annotations

import pytest

from prunebench.serde import check_schema_version, reject_unknown


def test_reject_unknown_names_every_unknown_key_sorted_and_optionally_the_valid_ones() -> None:
    reject_unknown({"a": 1}, ("a", "b"), "thing keys")  # known keys pass
    with pytest.raises(ValueError, match=r"^unknown thing keys: x, z$"):
        reject_unknown({"z": 1, "a": 2, "x": 3}, ("a", "b"), "thing keys")
    with pytest.raises(ValueError, match=r"^unknown option\(s\): c; valid: a, b$"):
        reject_unknown(["c"], ("b", "a"), "option(s)", list_valid=True)


@pytest.mark.parametrize("version", [2, "1", None, True, 1.0])
def test_schema_version_must_be_a_supported_int(version) -> None:
    check_schema_version(1, 1, "plan")
    check_schema_version(0, 1, "plan")
    with pytest.raises(ValueError, match=r"^plan has schema_version .*; this prunebench reads up to 1$"):
        check_schema_version(version, 1, "plan")
