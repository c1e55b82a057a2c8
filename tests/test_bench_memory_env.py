"""Memory figures (parameters, non-zeros, disk, peak of a forward) and the environment fingerprint."""

from __future__ import annotations

import json

import pytest
import torch

from prunebench.bench.env import environment, fingerprint_hash
from prunebench.bench.memory import disk_bytes, parameter_report, peak_forward_memory
from prunebench.bench.records import MemoryReport
from prunebench.models.config import count_parameters
from prunebench.models.io import save_model
from prunebench.models.presets import create_model


def tiny(**kw):
    return create_model("custom", vocab_size=50, d_model=16, n_heads=2, n_layers=2, d_ff=32, **kw).eval()


def test_parameter_report_counts_tied_weights_once_and_nonzeros() -> None:
    model = tiny()
    rep = parameter_report(model)
    assert rep.param_count == count_parameters(model.config)["total"]
    assert rep.param_bytes == 4 * rep.param_count
    assert rep.nonzero_count < rep.param_count  # biases start at zero
    before = rep.nonzero_count
    with torch.no_grad():
        w = model.layers[0].ffn.fc_in.weight
        w[:8] = 0.0
    after = parameter_report(model)
    assert after.nonzero_count == before - 8 * 16 and after.nonzero_bytes == 4 * after.nonzero_count
    assert after.param_bytes == rep.param_bytes  # dense storage keeps the zeros
    assert 0 < after.sparsity < 1
    assert MemoryReport.from_dict(json.loads(json.dumps(after.to_dict()))) == after


def test_disk_bytes_of_saved_model(tmp_path) -> None:
    model = tiny()
    folder = save_model(model, tmp_path / "m")
    size = disk_bytes(folder)
    assert size == sum(f.stat().st_size for f in folder.iterdir())
    assert size > parameter_report(model).param_bytes  # weights + header + config
    assert parameter_report(model, folder).disk_bytes == size
    with pytest.raises(ValueError, match="no model folder"):
        disk_bytes(tmp_path / "missing")


def test_peak_memory_methods_agree_and_scale_with_batch() -> None:
    model = tiny()
    ids = torch.randint(1, 50, (8, 16))
    small, big = ids[:2].clone(), ids.clone()
    p_small = peak_forward_memory(lambda: model.encode(small))
    p_big = peak_forward_memory(lambda: model.encode(big))
    assert p_big > 3 * p_small
    assert p_big >= 8 * 16 * 16 * 4  # at least the [B, S, D] output
    assert peak_forward_memory(lambda: model.encode(big), method="profiler") == p_big


def test_peak_memory_tracks_frees() -> None:
    # Two 4 MB temporaries alive one after the other: the peak is 4 MB plus the tiny result, not 8 MB.
    def fn() -> torch.Tensor:
        a = torch.ones(1024, 1024)
        s = a.sum()
        del a
        b = torch.ones(1024, 1024)
        return s + b.sum()

    peak = peak_forward_memory(fn)
    assert 4 * 2**20 <= peak < 5 * 2**20


def test_peak_memory_bad_arguments() -> None:
    with pytest.raises(ValueError, match="choose from: tensors, profiler"):
        peak_forward_memory(lambda: None, method="rss")
    with pytest.raises(ValueError, match="unknown device"):
        peak_forward_memory(lambda: None, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            peak_forward_memory(lambda: None, device="cuda")


def test_environment_fingerprint() -> None:
    env = environment()
    for key in ("prunebench_version", "git_sha", "python", "torch", "mkl", "mkldnn", "cpu_model", "cpu_count",
                "threads", "device", "device_name", "os"):
        assert key in env
    assert env["device"] == "cpu" and env["threads"] == torch.get_num_threads()
    json.dumps(env)  # JSON-ready
    h = fingerprint_hash(env)
    assert len(h) == 12 and h == fingerprint_hash(dict(env))
    assert fingerprint_hash({**env, "git_sha": "other"}) == h  # code revision does not split machines
    assert fingerprint_hash({**env, "threads": env["threads"] + 1}) != h
    assert fingerprint_hash({**env, "cpu_model": "another CPU"}) != h
