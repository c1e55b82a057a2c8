"""Checkpoints: exact round trips, and one-line errors for every kind of broken folder."""

from __future__ import annotations

import json

import pytest
import torch

from prunebench.errors import CheckpointError
from prunebench.models import build_encoder, load_model, read_config, save_model
from prunebench.models.config import EncoderConfig, LayerConfig
from tests.conftest import random_batch


def test_heterogeneous_model_round_trips_bit_exactly(tmp_path, hetero_config):
    model = build_encoder(hetero_config, seed=7).eval()
    save_model(model, tmp_path / "m", metadata={"note": "hetero"})
    loaded = load_model(tmp_path / "m")
    assert loaded.config == hetero_config
    batch = random_batch(101, seq=9)
    assert torch.equal(model(**batch), loaded(**batch))
    assert read_config(tmp_path / "m")[1] == {"note": "hetero"}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_checkpoint_holds_no_pickle(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path)
    raw = (tmp_path / "model.safetensors").read_bytes()
    assert b"\x80\x04" not in raw[:64]  # no pickle protocol header; safetensors starts with a JSON length
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["format"] == "prunebench-model" and doc["schema_version"] == 1 and "prunebench_version" in doc


def test_missing_folder_and_files(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="no model folder"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(tmp_path)
    save_model(tiny_model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_model(tmp_path)


def test_truncated_weights(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_model(tmp_path)


def test_corrupted_config(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a prunebench model config"):
        load_model(tmp_path)


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["config"]["layers"][1]["d_ff"] = 31  # the file holds d_ff 32
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert "layers.1.ffn.fc_in.weight" in message and "(32, 16)" in message and "(31, 16)" in message
    assert "\n" not in message


def test_missing_tensor_is_named(tmp_path):
    small = build_encoder(EncoderConfig(vocab_size=20, d_model=8, layers=(LayerConfig(2, 4, 4),), max_positions=8))
    big = build_encoder(
        EncoderConfig(vocab_size=20, d_model=8, layers=(LayerConfig(2, 4, 4),) * 2, max_positions=8)
    )
    save_model(small, tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["config"] = big.config.to_dict()
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"lacks tensor 'layers\.1\."):
        load_model(tmp_path)


def test_checkpoint_with_separate_qkv_loads_fused_to_identical_outputs(tmp_path, hetero_config):
    """Checkpoints written before q/k/v were fused (three Linears per layer) still load, unchanged."""
    from safetensors.torch import load_file, save_file

    model = build_encoder(hetero_config, seed=3)
    save_model(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    legacy = {}
    for name, t in tensors.items():
        if "qkv_proj" not in name:
            legacy[name] = t
            continue
        n = t.shape[0] // 3  # the q, k and v row blocks (0 rows in a layer without heads)
        for i, part in enumerate("qkv"):
            legacy[name.replace("qkv_proj", f"{part}_proj")] = t[i * n:(i + 1) * n].clone()
    save_file(legacy, str(tmp_path / "model.safetensors"), metadata={"format": "prunebench-model"})
    batch = random_batch(hetero_config.vocab_size, 2, 8)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path).encode(**batch), model.eval().encode(**batch))
