"""PruneSpec validation, defaults and round-trip; schedules."""

from __future__ import annotations

import itertools

import pytest

from prunebench.pruning import METHODS, PruneSpec, schedule_values, sparsity_at


def test_registry_has_every_method() -> None:
    assert set(METHODS.names()) >= {"magnitude", "structured", "iterative", "wanda", "nm"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "prune_it"}, "choose from: magnitude, structured, iterative, wanda, nm"),
        ({"sparsity": 1.0}, r"sparsity must lie in \[0, 1\)"),
        ({"sparsity": -0.1}, r"sparsity must lie in \[0, 1\)"),
        ({"sparsity": "half"}, r"sparsity must lie in \[0, 1\)"),
        ({"sparsity": True}, r"sparsity must lie in \[0, 1\)"),
        ({"scope": "model"}, "choose from: layer, global"),
        ({"method": "wanda", "scope": "global"}, "choose from: layer"),
        ({"granularity": "rows"}, "choose from: heads, neurons, both, layers"),
        ({"criterion": "entropy"}, "choose from: l1, l2, taylor, random"),
        ({"method": "structured", "criterion": "wanda"}, "choose from: l1, l2, taylor, random"),
        ({"schedule": "exp"}, "choose from: one_shot, linear, cubic"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"steps": 101}, r"steps must be an integer in \[1, 100\], got 101"),
        ({"method": "iterative", "base_method": "nm"}, "choose from: magnitude, structured, wanda"),
        ({"method": "nm", "n": 5, "m": 4}, "n <= m"),
        ({"method": "nm", "sparsity": 0.7}, "nm with 2:4 has sparsity 0.5"),
        ({"round_to": 0}, "round_to must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"allow_empty_layers": "yes"}, "allow_empty_layers must be true or false"),
    ],
)
def test_bad_specs_fail_with_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        PruneSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_defaults_are_resolved() -> None:
    assert PruneSpec().criterion == "l1" and PruneSpec().sparsity == 0.5
    assert PruneSpec(method="wanda").criterion == "wanda"
    assert PruneSpec(method="nm", n=1, m=4).sparsity == pytest.approx(0.75)
    it = PruneSpec(method="iterative", base_method="wanda", sparsity=0.3, steps=3)
    assert it.criterion == "wanda" and it.effective_method == "wanda" and it.needs_calib
    step = it.step_spec(0.1)
    assert step.method == "wanda" and step.sparsity == 0.1 and step.steps == 1


def test_round_trip() -> None:
    spec = PruneSpec(method="structured", sparsity=0.25, granularity="heads", criterion="l2", round_to=2, seed=3)
    assert PruneSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown prune spec keys: colour"):
        PruneSpec.from_dict({**spec.to_dict(), "colour": 1})


@pytest.mark.parametrize("schedule", ["one_shot", "linear", "cubic"])
def test_schedules_rise_and_end_at_target(schedule: str) -> None:
    values = schedule_values(schedule, 5, 0.8)
    assert len(values) == 5 and values[-1] == 0.8
    assert all(a <= b for a, b in itertools.pairwise(values))


def test_schedule_values() -> None:
    assert schedule_values("linear", 4, 0.8) == pytest.approx((0.2, 0.4, 0.6, 0.8))
    assert schedule_values("one_shot", 3, 0.5) == (0.5, 0.5, 0.5)
    # Zhu & Gupta: s_t = s (1 - (1 - t/n)^3)
    assert sparsity_at("cubic", 1, 4, 0.8) == pytest.approx(0.8 * (1 - 0.75**3))
    with pytest.raises(ValueError, match="choose from"):
        sparsity_at("exp", 1, 2, 0.5)
    with pytest.raises(ValueError, match="step must lie"):
        sparsity_at("linear", 3, 2, 0.5)
