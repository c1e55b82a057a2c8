"""``prunebench export``: each format loads where its users load it, with dynamic batch and sequence axes, and
matches prunebench's own forward; the check is printed and stored beside the artifact; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install -e \".[hf]\"")

from prunebench.cli.main import main  # noqa: E402
from prunebench.export import EXPORT_FILE, FORMATS, export_model  # noqa: E402
from prunebench.models import EncoderConfig, LayerConfig, build_encoder  # noqa: E402
from prunebench.models.hf import hf_adapter_for, save_hf_model  # noqa: E402
from prunebench.models.io import load_model, save_model  # noqa: E402
from tests.hf_tiny import padded_batch, tiny_model, write_tokenizer  # noqa: E402


def _hf_source(tmp: Path, uneven: bool = True, empty: bool = False) -> Path:
    """A prunebench-saved tiny BERT (with its tokenizer): per-layer widths, or (``uneven=False``) a shape plain
    transformers expresses (one FFN width, a layer removed); ``empty`` leaves layer 2 with no head."""
    src = tmp / "src"
    tiny_model("bert", "BertModel").save_pretrained(str(src))
    write_tokenizer(src)
    model = load_model(src)
    adapter = hf_adapter_for(model)
    if uneven:
        adapter.keep_groups_("heads", 0, [1, 3])
        adapter.keep_groups_("neurons", 1, range(5))
        if empty:
            adapter.keep_groups_("heads", 2, [])
    else:
        for i in range(3):
            adapter.keep_groups_("neurons", i, range(2, 13))
        adapter.keep_layers_([0, 2])
    return save_hf_model(model, tmp / "pruned")


def _encoder_source(tmp: Path) -> Path:
    """prunebench's own encoder with per-layer widths, a layer without heads and one without FFN."""
    config = EncoderConfig(vocab_size=101, d_model=12, layers=(LayerConfig(3, 4, 100), LayerConfig(0, 4, 9),
                                                             LayerConfig(2, 4, 0)), max_positions=32)
    return save_model(build_encoder(config, seed=0).eval(), tmp / "encoder")


def _export(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(["export", *argv])
    except SystemExit as exc:  # argparse's own one-line errors
        rc = int(exc.code or 0)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip()


def _hidden(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if hasattr(model, "encode"):
            return model.encode(ids, mask)
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def _new_shape(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 4, 11 tokens, two rows padded: neither the traced shape nor the check's probes."""
    ids = torch.randint(5, vocab, (4, 11), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    return ids, mask


def test_hf_plain_shape_loads_in_automodel_without_remote_code(tmp_path, capsys):
    src = _hf_source(tmp_path, uneven=False)
    rc, out, err = _export(capsys, str(src), "--format", "hf", "--out", str(tmp_path / "out"))
    assert rc == 0, err
    assert "check" in out and "ok" in out and "AutoModel.from_pretrained(DIR)" in out
    folder = tmp_path / "out"
    assert not (folder / "modeling_prunebench.py").exists() and (folder / "vocab.txt").is_file()
    plain = transformers.AutoModel.from_pretrained(str(folder), trust_remote_code=False).eval()
    ids, mask = padded_batch().values()
    assert (_hidden(plain, ids, mask) - _hidden(load_model(src), ids, mask)).abs().max() <= 1e-5
    record = json.loads((folder / EXPORT_FILE).read_text())
    assert record["check"]["ok"] and record["plain_transformers"] is True
    assert record["check"]["outputs"]["hidden"]["max_abs"] <= 1e-5 and record["check"]["probes"] == [[1, 7], [3, 29]]


def test_hf_per_layer_shape_needs_remote_code_and_matches(tmp_path, capsys):
    src = _hf_source(tmp_path)
    rc, out, err = _export(capsys, str(src), "--format", "hf", "--out", str(tmp_path / "out"))
    assert rc == 0, err
    assert "trust_remote_code=True" in out
    folder = tmp_path / "out"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        transformers.AutoModel.from_pretrained(str(folder), trust_remote_code=False)
    loaded = transformers.AutoModel.from_pretrained(str(folder), trust_remote_code=True).eval()
    ids, mask = padded_batch().values()
    assert (_hidden(loaded, ids, mask) - _hidden(load_model(src), ids, mask)).abs().max() <= 1e-5
    record = json.loads((folder / EXPORT_FILE).read_text())
    assert record["check"]["ok"] and record["plain_transformers"] is False
    assert "modeling_prunebench.py" in record["files"] and "prunebench_hf.json" in record["files"]
    assert json.loads((folder / "prunebench_hf.json").read_text())["metadata"]["exported_from"] == str(src)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("kind", ["hf", "encoder"])
def test_runtime_formats_run_with_dynamic_batch_and_sequence_and_match(tmp_path, capsys, fmt, kind):
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "openvino")
    # ONNX Runtime also runs an HF layer left with no head (OpenVINO refuses it: see the bad-input test)
    src = _hf_source(tmp_path, empty=fmt == "onnx") if kind == "hf" else _encoder_source(tmp_path)
    folder = tmp_path / "out"
    rc, out, err = _export(capsys, str(src), "--format", fmt, "--out", str(folder))
    assert rc == 0, err
    model = load_model(src)
    ids, mask = _new_shape(int(hf_adapter_for(model).vocab_size) if kind == "hf" else 101)
    want = _hidden(model, ids, mask).numpy()
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.shape for i in session.get_inputs()] == [["batch", "seq"], ["batch", "seq"]]
        got = session.run(["hidden"], feeds)[0]
    else:
        import openvino as ov

        compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        assert all(i.get_partial_shape().is_dynamic for i in compiled.inputs)
        got = compiled.create_infer_request().infer(feeds)[compiled.output("hidden")]
    real = mask.bool().numpy()
    assert np.abs(got[real] - want[real]).max() <= 1e-4
    record = json.loads((folder / EXPORT_FILE).read_text())
    assert record["check"]["ok"] and record["check"]["outputs"]["hidden"]["max_abs"] <= 1e-4
    assert "max |diff|" in out and record["inputs"]["input_ids"]["shape"] == ["batch", "seq"]
    assert (folder / "vocab.txt").is_file() == (kind == "hf") and record["tokenizer"] == (kind == "hf")


def test_a_failed_check_is_exit_1_and_recorded(tmp_path, capsys, monkeypatch):
    src = _encoder_source(tmp_path)
    onnx = FORMATS.get("onnx")

    def wrong(out, model):
        return lambda batch: {"hidden": torch.zeros(*batch["input_ids"].shape, 12)}

    monkeypatch.setattr(onnx, "load", wrong)
    rc, out, err = _export(capsys, str(src), "--format", "onnx", "--out", str(tmp_path / "out"))
    assert rc == 1 and "\n" not in err and "failed its check" in err and "FAILED" in out
    record = json.loads((tmp_path / "out" / EXPORT_FILE).read_text())
    assert record["check"]["ok"] is False and record["check"]["outputs"]["hidden"]["max_abs"] > 1e-4


def test_force_replaces_an_earlier_export_and_keeps_other_files(tmp_path):
    src = _hf_source(tmp_path)
    folder = tmp_path / "out"
    export_model(src, "onnx", folder)
    (folder / "notes.txt").write_text("the user's")
    result = export_model(src, "hf", folder, force=True)
    assert result.ok and not (folder / "model.onnx").exists() and (folder / "notes.txt").read_text() == "the user's"


def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, monkeypatch):
    encoder = _encoder_source(tmp_path)
    empty_heads = _hf_source(tmp_path / "e", empty=True)
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("no model here")
    cases = [
        ([str(not_a_model), "--format", "onnx"], "is not a prunebench model: config.json is missing"),
        ([str(tmp_path / "missing"), "--format", "onnx"], "no model folder at"),
        ([str(encoder), "--format", "hf"], "cannot be exported as hf: it holds prunebench's own encoder"),
        ([str(empty_heads), "--format", "openvino"], "cannot be exported as openvino: layer 2 has no attention head"),
        ([str(encoder), "--format", "tflite"], "unknown format 'tflite'; choose from: hf, onnx, openvino"),
        ([str(encoder), "--format", "onnx", "--out", str(encoder)], "is not empty"),
        ([str(encoder), "--format", "onnx", "--out", str(encoder), "--force"], "is the model folder itself"),
    ]
    for argv, message in cases:
        if "--out" not in argv:
            argv = [*argv, "--out", str(tmp_path / "out")]
        rc, _, err = _export(capsys, *argv)
        assert rc == 2 and "\n" not in err and message in err, (argv, err)
        assert not (tmp_path / "out").exists()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    rc, _, err = _export(capsys, str(encoder), "--format", "onnx", "--out", str(tmp_path / "out"))
    assert rc == 2 and "\n" not in err and "pip install -e \".[onnx]\"" in err and not (tmp_path / "out").exists()
    monkeypatch.undo()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x.txt").write_text("keep")
    rc, _, err = _export(capsys, str(encoder), "--format", "onnx", "--out", str(taken))
    assert rc == 2 and "is not empty; use --force" in err and sorted(p.name for p in taken.iterdir()) == ["x.txt"]


def test_hf_model_with_a_head_is_checked_on_its_logits_too(tmp_path):
    model = tiny_model("roberta", "RobertaForSequenceClassification")
    hf_adapter_for(model).keep_groups_("neurons", 0, range(4))
    hf_adapter_for(model).keep_groups_("heads", 2, [0, 3])
    src = save_hf_model(model, tmp_path / "src")
    result = export_model(src, "hf", tmp_path / "out")
    outputs = result.record["check"]["outputs"]
    assert result.ok and set(outputs) == {"hidden", "outputs"} and outputs["outputs"]["max_abs"] <= 1e-5
    assert result.record["loads_with"] == [
        "transformers.AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)"]
