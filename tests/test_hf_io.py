"""HF save/load: exact rebuild from the shape manifest, plain-transformers loading where the shape allows,
and one-line errors for every bad folder."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install -e \".[hf]\"")

from prunebench.cli.main import main  # noqa: E402
from prunebench.errors import CheckpointError  # noqa: E402
from prunebench.models.hf import (  # noqa: E402
    MANIFEST_FILE,
    HFModelError,
    hf_adapter_for,
    load_hf_model,
    load_hf_tokenizer,
    save_hf_model,
)
from prunebench.models.hf import deps as hf_deps  # noqa: E402
from prunebench.models.hf import loading as hf_loading  # noqa: E402
from prunebench.models.io import load_model, save_model  # noqa: E402
from tests.hf_tiny import VOCAB, padded_batch, tiny_model, write_tokenizer  # noqa: E402


def _logits(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _prune_unevenly(model):
    adapter = hf_adapter_for(model)
    adapter.keep_groups_("heads", 0, [1, 3])
    adapter.keep_groups_("neurons", 0, range(5))
    adapter.keep_groups_("neurons", 2, [0, 4, 9, 20])
    adapter.zero_layer_(1)
    return adapter


@pytest.mark.parametrize(("family", "cls"), [("bert", "BertForMaskedLM"), ("distilbert", "DistilBertModel"),
                                             ("roberta", "RobertaForSequenceClassification")])
def test_pruned_shape_reloads_exactly(tmp_path, family, cls):
    model = tiny_model(family, cls)
    _prune_unevenly(model)
    hf_adapter_for(model).keep_layers_([0, 1])  # layer 1 stays, masked (skipped)
    save_model(model, tmp_path, metadata={"note": "x"})
    doc = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert doc["manifest"]["kept_layers"] == [0, 1]
    assert [w["heads"] for w in doc["manifest"]["layers"]] == [2, 4]
    assert doc["metadata"] == {"note": "x"} and doc["plain_transformers"] is False
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pkl"))
    again = load_model(tmp_path)
    assert type(again) is type(model)
    assert hf_adapter_for(again).shape_manifest() == hf_adapter_for(model).shape_manifest()
    batch = padded_batch()
    assert torch.equal(_logits(model, batch), _logits(again, batch))


@pytest.mark.parametrize(("family", "cls", "auto"), [("bert", "BertForMaskedLM", "AutoModelForMaskedLM"),
                                                     ("distilbert", "DistilBertModel", "AutoModel"),
                                                     ("bert", "BertModel", "AutoModel")])
def test_plain_shapes_load_with_transformers_alone(tmp_path, family, cls, auto):
    model = tiny_model(family, cls)
    adapter = hf_adapter_for(model)
    for i in range(3):
        adapter.keep_groups_("neurons", i, range(3, 14))
    adapter.keep_layers_([0, 2])
    save_hf_model(model, tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["plain_transformers"] is True
    plain = getattr(transformers, auto).from_pretrained(str(tmp_path)).eval()
    batch = padded_batch()
    assert torch.equal(_logits(model, batch), _logits(plain, batch))


def test_uneven_shapes_are_refused_by_plain_transformers(tmp_path):
    model = tiny_model("bert", "BertModel")
    hf_adapter_for(model).keep_groups_("heads", 0, [0])
    save_hf_model(model, tmp_path)
    for kwargs in ({}, {"ignore_mismatched_sizes": True}):  # never silently re-initialised weights
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            transformers.AutoModel.from_pretrained(str(tmp_path), trust_remote_code=False, **kwargs)


def test_unpruned_folder_loads_offline_and_tokenizer_travels(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    model = tiny_model("bert", "BertModel")
    model.save_pretrained(str(src))
    write_tokenizer(src)
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    loaded = load_model(src)
    assert not loaded.training
    batch = padded_batch()
    assert torch.equal(_logits(model, batch), _logits(loaded, batch))
    assert load_hf_tokenizer(src)("w1 w2")["input_ids"][1:3] == [6, 7]
    save_model(loaded, out)  # tokenizer + pooling config copied from the folder it came from
    assert (out / "vocab.txt").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert load_hf_tokenizer(out)("w1")["input_ids"][1] == 6


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_implementation_is_chosen(tmp_path, attn):
    tiny_model("bert", "BertModel").save_pretrained(str(tmp_path))
    assert load_hf_model(tmp_path, attn_implementation=attn).config._attn_implementation == attn
    with pytest.raises(ValueError, match="choose from: sdpa, eager"):
        load_hf_model(tmp_path, attn_implementation="flash")


def _cli_error(capsys, folder) -> str:
    capsys.readouterr()  # drop what setting up the folder wrote (transformers' progress bars)
    assert main(["bench", str(folder), "--batch-sizes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_folders_are_one_line_errors(tmp_path, capsys):
    model = tiny_model("bert", "BertModel")
    no_weights = tmp_path / "no_weights"
    model.config.save_pretrained(str(no_weights))
    with pytest.raises(HFModelError, match="no weights"):
        load_hf_model(no_weights)
    assert "no weights" in _cli_error(capsys, no_weights)
    pickled = tmp_path / "pickled"
    model.config.save_pretrained(str(pickled))
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(HFModelError, match="pickled"):
        load_hf_model(pickled)
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_hf_model(tmp_path)


def test_unsupported_and_indivisible_configs(tmp_path, capsys):
    other = tmp_path / "other"
    transformers.BertForTokenClassification(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=8)).save_pretrained(str(other))
    with pytest.raises(HFModelError, match="unsupported architecture BertForTokenClassification; supported:"):
        load_hf_model(other)
    assert "supported: BertModel" in _cli_error(capsys, other)
    odd = tmp_path / "odd"
    tiny_model("bert", "BertModel").save_pretrained(str(odd))
    doc = json.loads((odd / "config.json").read_text())
    doc["num_attention_heads"] = 5
    (odd / "config.json").write_text(json.dumps(doc))
    with pytest.raises(HFModelError, match="hidden size 16 is not divisible by the head count 5"):
        load_hf_model(odd)
    (odd / "config.json").write_text('{"model_type": "no-such-type"}')
    with pytest.raises(CheckpointError, match="not a usable transformers config"):
        load_hf_model(odd)


def test_missing_tokenizer_transformers_and_network(tmp_path, monkeypatch):
    tiny_model("bert", "BertModel").save_pretrained(str(tmp_path))
    with pytest.raises(HFModelError, match="has no tokenizer"):
        load_hf_tokenizer(tmp_path)
    monkeypatch.setattr(hf_deps.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HFModelError, match=r"pip install -e \"\.\[hf\]\""):
        hf_deps.require_transformers()
    monkeypatch.undo()

    def no_hub(*args, **kwargs):
        raise AssertionError("a name that is no folder must never reach transformers' hub resolution")

    monkeypatch.setattr(hf_loading.AutoConfig, "from_pretrained", no_hub)
    with pytest.raises(HFModelError, match="no model folder at 'someone/some-model'.*downloads nothing"):
        load_hf_model("someone/some-model")
    with pytest.raises(HFModelError, match="no model folder"):
        load_hf_model(tmp_path / "missing")


def test_corrupted_weights_and_a_manifest_that_does_not_fit(tmp_path):
    model = tiny_model("bert", "BertModel")
    _prune_unevenly(model)
    save_hf_model(model, tmp_path)
    doc = json.loads((tmp_path / MANIFEST_FILE).read_text())
    doc["manifest"]["layers"][0]["heads"] = 3
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="config.json and prunebench_hf.json disagree on the layer shapes"):
        load_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["prunebench_layers"] = doc["manifest"]["layers"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_model(tmp_path)


def test_from_manifest_is_the_inverse_of_shape_manifest():
    model = tiny_model("distilbert", "DistilBertForMaskedLM")
    adapter = _prune_unevenly(model)
    adapter.keep_groups_("heads", 2, [])
    rebuilt = type(adapter).from_manifest(adapter.config_dict(), adapter.shape_manifest())
    assert hf_adapter_for(rebuilt).shape_manifest() == adapter.shape_manifest()
    rebuilt.load_state_dict(model.state_dict())
    batch = padded_batch()
    assert torch.equal(_logits(model, batch), _logits(rebuilt.eval(), batch))
    with pytest.raises(ValueError, match="has no architecture"):
        type(adapter).from_manifest({}, {**adapter.shape_manifest(), "architecture": "BertModel"})


def _run_error(capsys, folder, tmp_path) -> str:
    """``prunebench run --model folder``: exit 2, one line, and no run folder left behind."""
    capsys.readouterr()
    out = tmp_path / "run-out"
    assert main(["run", "--model", str(folder), "--seq-len", "16", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists()
    return err


def test_run_refuses_each_bad_hf_input_before_its_folder_exists(tmp_path, capsys, monkeypatch):
    good = tmp_path / "good"
    tiny_model("bert", "BertModel").save_pretrained(str(good))
    write_tokenizer(good)
    no_tokenizer = tmp_path / "no_tokenizer"
    tiny_model("bert", "BertModel").save_pretrained(str(no_tokenizer))
    assert "has no tokenizer" in _run_error(capsys, no_tokenizer, tmp_path)
    no_weights = tmp_path / "no_weights"
    tiny_model("bert", "BertModel").config.save_pretrained(str(no_weights))
    write_tokenizer(no_weights)
    assert "no weights" in _run_error(capsys, no_weights, tmp_path)
    odd = tmp_path / "odd"
    tiny_model("bert", "BertModel").save_pretrained(str(odd))
    write_tokenizer(odd)
    doc = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**doc, "num_attention_heads": 5}))
    assert "not divisible by the head count 5" in _run_error(capsys, odd, tmp_path)
    other = tmp_path / "other"
    transformers.BertForTokenClassification(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=8)).save_pretrained(str(other))
    write_tokenizer(other)
    assert "unsupported architecture BertForTokenClassification; supported: BertModel" in _run_error(
        capsys, other, tmp_path)
    real = hf_deps.importlib.util.find_spec
    monkeypatch.setattr(hf_deps.importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    assert "pip install -e \".[hf]\"" in _run_error(capsys, good, tmp_path)
