"""Searching for the deploy runtime: the backend correction, verification on the backend against dense eager,
fidelity before timing, refusals, and ``run --targets T@BACKEND``."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch
from torch import nn

from prunebench.backends import BACKENDS, FP32, PrepareOptions, Runnable
from prunebench.backends.torch_backends import torch_runnable
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


def _score(model, reference):
    return {"accuracy": 0.5, "n_predictions": 100, "agreement": 0.9}


def test_a_search_on_int8_legacy_verifies_on_it_against_dense_eager(tmp_path, tiny_model):
    on_backend = []

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
    assert measured["speedup"] > 0 and measured["fidelity"]["ok"] and measured["fidelity"]["backend"] == "int8-legacy"
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


class _Shifted:
    """A backend whose outputs are eager's plus 0.5: it must never be timed."""

    name: ClassVar[str] = "shifted"
    changes_numerics: ClassVar[bool] = False

    def availability(self) -> str | None:
        return None

    def skip_reason(self, model: nn.Module) -> str | None:
        return None

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
        with pytest.raises(RuntimeError, match="not timed: shifted does not match eager"):
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
