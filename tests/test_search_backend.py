"""Searching for the deploy runtime: the backend correction, verification on the backend against dense eager,
fidelity before timing, refusals, and ``run --targets T@BACKEND``."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch
from torch import nn

from prunebench.backends import BACKENDS, FP32, PrepareOptions, Runnable
from prunebench.backends.base import FidelityError
from prunebench.backends.torch_backends import EagerBackend, torch_runnable
from prunebench.cli.main import main
from prunebench.search import SearchOptions, search_family
from prunebench.search import backend as sb
from prunebench.search.backend import BackendCorrection, fit_correction
from tests.test_search import FAST, _calib, _table


def test_backend_correction_recovers_a_known_affine_map_and_inverts_it():
    truth = BackendCorrection("x", 0.25, 0.05)
    eager = [1.0, 1.3, 1.8, 2.5, 4.0]
    got = fit_correction("x", eager, [truth.speedup(s) for s in eager])
    assert got.scale == pytest.approx(0.25) and got.offset == pytest.approx(0.05)
    assert got.speedup(1.0) == pytest.approx(1 / 0.3)  # dense on the backend: 3.33x against dense eager
    for target in (2.0, 5.0, 10.0):
        assert got.speedup(got.eager_aim(target)) == pytest.approx(target)
    assert got.eager_aim(2.0) < 1.0  # dense on the backend already meets 2x
    assert got.eager_aim(1 / 0.05) == float("inf")  # the offset alone is that slow: no width reaches it
    with pytest.raises(ValueError, match="at least two"):
        fit_correction("x", [1.0], [2.0])


def _options(**kw) -> SearchOptions:
    base = dict(targets=(1.05,), seq_len=8, check_configs=0, neuron_step=8, table_timing=FAST, verify_timing=FAST,
                config_timing=FAST, max_tries=2, allow_busy=True, backend_configs=1, backend_check_configs=2)
    return SearchOptions(**{**base, **kw})


def _backend_clock(monkeypatch, factor: float = 2.0) -> list:
    """The backend's clock made deterministic: every model prepared on it (for real: quantized, checked against
    eager) measures ``factor`` times the hand-made table's eager prediction for its widths. Timings of a model this
    small are all overhead and noise; what these tests claim is the path, not the speed."""
    from prunebench.search._arch import adapter_of, full_widths
    from prunebench.search.verify import Measured

    prepared, real_prepare, table = [], sb.BackendTimer.prepare, _table()

    def prepare(self, model):
        prepared.append(full_widths(adapter_of(model)))
        return real_prepare(self, model)

    def clock(dense_call, cand_call, timing, **kw):
        dense_call(), cand_call()  # both sides run: dense eager and the prepared model
        s = factor * table.speedup(prepared[-1])
        return Measured(s, s * 0.99, s * 1.01, 10)

    monkeypatch.setattr(sb.BackendTimer, "prepare", prepare)
    monkeypatch.setattr(sb, "measure_calls", clock)
    return prepared


def _score(model, reference):
    return {"accuracy": 0.5, "n_predictions": 100, "agreement": 0.9}


def test_a_search_on_int8_legacy_verifies_on_it_against_dense_eager(tmp_path, tiny_model, monkeypatch):
    on_backend, prepared = [], _backend_clock(monkeypatch)

    def score_backend(model, runnable, reference):
        on_backend.append(runnable.backend)
        hidden = runnable.outputs({"input_ids": torch.randint(1, 97, (2, 8))})
        assert hidden.shape == (2, 8, 16)
        return {"accuracy": 0.4, "n_predictions": 100}

    result = search_family(tiny_model, _calib(97), _options(backend="int8-legacy"), evaluate=_score,
                           evaluate_backend=score_backend,
                           out_dir=tmp_path, table=_table())
    report = result.report
    entry = report["targets"][0]
    measured = entry["measured"]
    assert measured["backend"] == "int8-legacy" and measured["baseline"] == "dense eager"
    assert measured["fidelity"]["ok"] and measured["fidelity"]["backend"] == "int8-legacy"
    assert entry["met"] and measured["ci"][0] >= 1.05  # judged on the backend's figure
    assert report["backend"]["dense_speedup"] == pytest.approx(2.0)  # dense on the backend, against dense eager
    # The correction learnt the backend's factor, so the held-out check is exact and the knapsack aimed lower.
    assert report["backend_check"]["median_abs_error"] < 1e-6
    assert entry["tries"][0]["eager_aim"] == pytest.approx(1.001)  # dense on it already meets 1.05x
    assert prepared[0] == ((4, 32), (4, 32))  # dense on the backend first
    assert all(t["measured"]["backend"] == "int8-legacy" for t in entry["tries"])
    assert entry["uniform"]["measured"]["backend"] == "int8-legacy"  # uniform at the same speed on the backend
    correction = report["backend"]["correction"]
    assert correction["backend"] == "int8-legacy" and len(correction["calibration"]) == 1 + 3 + 1
    assert correction["calibration"][0]["widths"] == [[4, 32], [4, 32]]  # dense on the backend first
    assert len(report["backend_check"]["configs"]) == 2
    # Accuracy on the backend (it changes the numerics): dense, searched and uniform, eager's kept beside it.
    assert on_backend == ["int8-legacy"] * 3
    assert entry["backend_accuracy"]["accuracy"] == 0.4 and entry["accuracy"]["accuracy"] == 0.5
    assert entry["backend_fidelity"]["ok"]
    manifest = json.loads((tmp_path / "search-1.05x" / "manifest.json").read_text())
    assert manifest["backend"] == "int8-legacy" and manifest["measured"]["backend"] == "int8-legacy"


class _Shifted(EagerBackend):
    """A backend whose outputs are eager's plus 0.5: it must never be timed."""

    name: ClassVar[str] = "shifted"

    def prepare(self, model: nn.Module, options: PrepareOptions) -> Runnable:
        runnable = torch_runnable(self.name, model, FP32)
        eager = runnable.outputs
        runnable.outputs = lambda batch: eager(batch) + 0.5
        return runnable


def test_a_backend_that_misses_eager_is_never_timed(tiny_model, monkeypatch):
    timed = []
    real = sb.measure_calls
    monkeypatch.setattr(sb, "measure_calls", lambda *a, **k: timed.append(1) or real(*a, **k))
    with BACKENDS.registered("shifted", _Shifted()):
        with pytest.raises(FidelityError, match="cannot be searched for this model.*shifted does not match eager"):
            search_family(tiny_model, _calib(97), _options(backend="shifted"), table=_table())
    assert timed == []


class _Absent(_Shifted):
    name: ClassVar[str] = "absent"

    def availability(self) -> str | None:
        return "absent needs a device this machine lacks"


def test_a_backend_that_cannot_run_here_is_refused_in_one_line_before_any_folder(capsys, tmp_path):
    out = tmp_path / "o"
    with BACKENDS.registered("absent", _Absent()):
        assert main(["search", "--model", "medium", "--targets", "2", "--backend", "absent", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot run here" in err and "lacks" in err and not out.exists()
    assert main(["search", "--model", "medium", "--targets", "2", "--backend", "nope", "--out", str(out)]) == 2
    assert "onnxruntime-int8" in capsys.readouterr().err  # an unknown name lists the registry's backends
    with pytest.raises(ValueError, match="cannot run this model"):
        sb.refuse_model("sparse", nn.Sequential(nn.Linear(4, 4)))  # nothing sparse to run


def test_run_targets_name_a_backend_or_take_the_fastest_listed_one():
    from prunebench.config import RunConfig

    config = RunConfig(methods=("structured",), targets=(1.5, "3@int8-legacy"))
    assert config.targets == (1.5, "3@int8-legacy") and config.backends == ("eager", "int8-legacy")  # timed too
    assert config.target_specs() == ((1.5, None), (3.0, "int8-legacy"))
    assert [v[0] for v in config.variants()][1:] == ["search@1.5x", "search@3x@int8-legacy"]
    assert RunConfig.from_dict({"targets": ["2@onnxruntime-int8", 2]}).targets == ("2@onnxruntime-int8", 2.0)
    for bad, message in (("3@nope", "choose from: eager"), ("0.5@int8", "above 1"), ("x@int8", "not a number"),
                         ("3@", "names no backend")):
        with pytest.raises(ValueError, match=message):
            RunConfig(targets=(bad,))
    with pytest.raises(ValueError, match="twice"):
        RunConfig(targets=("2@int8", "2.0@int8"))


def test_run_cli_refuses_a_target_on_an_unknown_backend_in_one_line(capsys, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--model", "small", "--targets", "1.5,3@nope", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and not out.exists()
    assert "unknown backend 'nope'" in err and "onnxruntime-int8" in err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "3@onnxruntime-int8" in help_text and "fastest of --backends" in help_text


def test_the_fastest_backend_is_the_measured_one_and_a_backend_missing_eager_is_left_out(tiny_model):
    with BACKENDS.registered("shifted", _Shifted()), BACKENDS.registered("absent", _Absent()):
        best, seen = sb.fastest_backend(tiny_model, ("eager", "int8-legacy", "shifted", "absent"), 1, 8, FAST)
    assert "does not match eager" in seen["shifted"]["skipped"] and "lacks" in seen["absent"]["skipped"]
    speeds = {n: r["speedup"] for n, r in seen.items() if "speedup" in r}
    assert set(speeds) == {"eager", "int8-legacy"} and best == max(speeds, key=speeds.get)
    assert seen["int8-legacy"]["baseline"] == "dense eager" and seen["int8-legacy"]["fidelity"]["ok"]


def test_run_search_records_the_backend_each_target_was_searched_on(tmp_path, tiny_model, monkeypatch):
    from prunebench.config import RunConfig
    from prunebench.runner import searched

    real, calls = searched.search_family, []

    def search(d, c, o, table=None, **kw):
        calls.append((o.backend, o.targets, table is None, o.check_configs))
        # A hand-made table (the tiny model's timings are noise): allow_busy lets its checks through, marked.
        fast = {"table_timing": FAST, "verify_timing": FAST, "config_timing": FAST, "check_configs": 0,
                "allow_busy": True, "backend_check_configs": 2, "backend_configs": 0}
        return real(d, c, SearchOptions(**{**o.__dict__, **fast}), table=table or _table(), **kw)

    monkeypatch.setattr(searched, "search_family", search)
    _backend_clock(monkeypatch)
    monkeypatch.setattr(searched, "fastest_backend", lambda *a, **k: ("int8-legacy", {"int8-legacy": {"speedup": 2}}))
    config = RunConfig(methods=("structured",), targets=(1.05, "1.1@int8-legacy"), batch_sizes=(1,), seq_len=8)
    out = searched.run_search(tiny_model, _calib(97), config, {})
    # The plain target: the fastest of the run's backends (a target's backend is one of them); the named one
    # in a family of its own. One eager check and one latency table for the run.
    assert calls == [("int8-legacy", (1.05,), True, 10), ("int8-legacy", (1.1,), False, 0)]
    plain, named = out["search@1.05x"][1]["details"]["search"], out["search@1.1x@int8-legacy"][1]["details"]["search"]
    assert plain["backend"] == "int8-legacy" and not plain["backend_named"]
    assert plain["backend_choice"]["among"] == ["eager", "int8-legacy"]
    assert named["backend"] == "int8-legacy" and named["backend_named"] and named["backend_choice"] is None
    assert named["measured"]["backend"] == "int8-legacy" and named["measured"]["baseline"] == "dense eager"
    assert named["latency_check_on_backend"]["backend"] == "int8-legacy"
    calls.clear()
    alone = RunConfig(methods=("structured",), targets=(1.05,), batch_sizes=(1,), seq_len=8)
    entry = searched.run_search(tiny_model, _calib(97), alone, {})["search@1.05x"][1]["details"]["search"]
    assert calls[0][0] == "eager" and entry["backend"] == "eager" and entry["measured"]["backend"] == "eager"


def test_a_configuration_the_backend_misses_is_left_out_of_the_correction_not_the_search(tiny_model):
    """One borderline configuration (dynamic int8 of a random tiny model once read cosine 0.987 < 0.99) is never
    timed, is recorded with why, and the correction is fitted on the others; all missing: the search stops."""
    from types import SimpleNamespace

    class Timer:
        name = "fake"

        def __init__(self, refuse: set[int]) -> None:
            self.calls, self.refuse = 0, refuse

        def measure(self, model, timing):
            self.calls += 1
            if self.calls in self.refuse:
                raise RuntimeError("not timed: fake does not match eager: cosine 0.98 < 0.99")
            return SimpleNamespace(speedup=1.0 + 0.1 * self.calls, ci_low=1.0, ci_high=2.0, fidelity={"ok": True})

    table = _table()
    correction = sb.measure_correction(Timer({2}), tiny_model, table, FAST, random_configs=1)
    assert len(correction.calibration) >= 2 and all(r["measured"] is not None for r in correction.calibration)
    check = sb.check_backend_model(Timer({1}), tiny_model, table, correction, FAST, n_configs=2)
    assert len(check["configs"]) == 1 and check["not_timed"][0]["skipped"].startswith("not timed")
    # Every configuration refused (all-MiniLM-L6-v2 on onnxruntime-int8 here): one line, the CLI's exit 2, not a
    # traceback; it names the backend, the count and the first refusal.
    with pytest.raises(FidelityError, match=r"--backend fake cannot be searched for this model: on \d+ of \d+ "
                       r"whole-model configurations its outputs miss the eager model's \(fake does not match"):
        sb.measure_correction(Timer(set(range(1, 20))), tiny_model, table, FAST, random_configs=1)
