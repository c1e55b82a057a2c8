"""Saved pruned HF folders load where users load them: plain transformers for shapes it can express, else
``trust_remote_code=True`` through the modelling file beside them (refused without it, never half-initialised);
prunebench itself reloads them through its manifest and never imports that file."""

from __future__ import annotations

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'prunebench[hf]'")

from prunebench.errors import CheckpointError  # noqa: E402
from prunebench.models.hf import HF_ADAPTERS, check_hf_folder, hf_adapter_for, save_hf_model  # noqa: E402
from prunebench.models.hf import modeling_prunebench as template  # noqa: E402
from prunebench.models.hf.families import supported_architectures  # noqa: E402
from prunebench.models.hf.portable import MODELLING_FILE, modelling_source, template_class  # noqa: E402
from prunebench.models.io import load_model  # noqa: E402
from tests.hf_text_fixtures import st_folder  # noqa: E402
from tests.hf_tiny import padded_batch, tiny_model, write_tokenizer  # noqa: E402

#: (family, class, the Auto class users load it with): every family, every kind of head.
CASES = [("bert", "BertModel", "AutoModel"), ("bert", "BertForMaskedLM", "AutoModelForMaskedLM"),
         ("roberta", "RobertaForSequenceClassification", "AutoModelForSequenceClassification"),
         ("xlm-roberta", "XLMRobertaModel", "AutoModel"),
         ("camembert", "CamembertForSequenceClassification", "AutoModelForSequenceClassification"),
         ("distilbert", "DistilBertForMaskedLM", "AutoModelForMaskedLM"),
         ("distilbert", "DistilBertModel", "AutoModel")]
CODE = 'from pathlib import Path\nPath({marker!r}).write_text("the folder\'s code ran")\n'


def _uneven(family: str, cls: str):
    """4 layers cut to: (2 heads, 5 neurons), skipped, (no head, no neuron), removed; biases non-trivial."""
    layers = {"n_layers": 4} if family == "distilbert" else {"num_hidden_layers": 4}
    model = tiny_model(family, cls, **layers)
    adapter = hf_adapter_for(model)
    adapter.keep_groups_("heads", 0, [1, 3])
    adapter.keep_groups_("neurons", 0, range(5))
    adapter.zero_layer_(1)
    adapter.keep_groups_("heads", 2, [])
    adapter.keep_groups_("neurons", 2, [])
    adapter.keep_layers_([0, 1, 2])
    return model


def _out(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize(("family", "cls", "auto"), CASES)
def test_per_layer_shapes_load_with_remote_code_only_and_match(tmp_path, family, cls, auto):
    model = _uneven(family, cls)
    out = save_hf_model(model, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == f"prunebench-{family}" and config["architectures"] == [f"Prunebench{cls}"]
    assert config["prunebench_layers"] == hf_adapter_for(model).layer_widths()  # what the folder holds
    assert [w["heads"] for w in config["prunebench_layers"]] == [2, 4, 0]
    assert (out / MODELLING_FILE).read_bytes() == modelling_source()
    # Without trust_remote_code transformers refuses, with or without the hint that once loaded it half-initialised.
    for kwargs in ({}, {"ignore_mismatched_sizes": True}):
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            getattr(transformers, auto).from_pretrained(str(out), trust_remote_code=False, **kwargs)
    loaded, info = getattr(transformers, auto).from_pretrained(str(out), trust_remote_code=True,
                                                               output_loading_info=True)
    assert type(loaded).__name__ == f"Prunebench{cls}"
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    batch = padded_batch()
    assert (_out(model, batch) - _out(loaded.eval(), batch)).abs().max() <= 1e-5
    base = transformers.AutoModel.from_pretrained(str(out), trust_remote_code=True).eval()  # the encoder alone
    with torch.no_grad():
        want = hf_adapter_for(model).hidden_states(batch)
    assert (base(**batch).last_hidden_state - want).abs().max() <= 1e-5


def test_prunebench_reloads_through_its_manifest_and_never_imports_the_modelling_file(tmp_path):
    model = _uneven("bert", "BertForMaskedLM")
    out = save_hf_model(model, tmp_path / "out")
    marker = tmp_path / "MARKER"
    (out / MODELLING_FILE).write_text(CODE.format(marker=str(marker)))
    again = load_model(out)
    assert type(again) is type(model) and not marker.exists()
    batch = padded_batch()
    assert torch.equal(_out(model, batch), _out(again, batch))
    config = json.loads((out / "config.json").read_text())
    config["prunebench_layers"][0]["heads"] = 4  # the config and the manifest must tell one story
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="disagree on the layer shapes"):
        load_model(out)
    assert not marker.exists()


def test_the_tokenizer_loads_without_remote_code(tmp_path):
    src = tmp_path / "src"
    tiny_model("bert", "BertModel").save_pretrained(str(src))
    write_tokenizer(src)  # vocab.txt only: no tokenizer_config.json naming a class
    model = load_model(src)
    hf_adapter_for(model).keep_groups_("heads", 1, [0])
    out = save_hf_model(model, tmp_path / "out")
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "BertTokenizer"
    tok = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=False)
    assert tok("w1 w2")["input_ids"] == transformers.AutoTokenizer.from_pretrained(str(src))("w1 w2")["input_ids"]
    check_hf_folder(out)  # prunebench's own checks accept its folder (the auto_map is for users)


def test_plain_shapes_stay_plain_and_a_stale_modelling_file_goes(tmp_path):
    model = tiny_model("bert", "BertModel")
    out = tmp_path / "out"
    uneven = tiny_model("bert", "BertModel")
    hf_adapter_for(uneven).keep_groups_("heads", 0, [0])
    save_hf_model(uneven, out)
    assert (out / MODELLING_FILE).is_file()
    for i in range(3):
        hf_adapter_for(model).keep_groups_("neurons", i, range(7))
    save_hf_model(model, out)  # the same folder, now a shape transformers expresses
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config and config["intermediate_size"] == 7
    assert not (out / MODELLING_FILE).exists()
    plain = transformers.AutoModel.from_pretrained(str(out), trust_remote_code=False)
    batch = padded_batch()
    assert torch.equal(_out(model, batch), _out(plain.eval(), batch))


def test_the_modelling_file_follows_prunebench_layouts_and_covers_every_architecture():
    for adapter in HF_ADAPTERS:  # the file is standalone, so it repeats the layouts: they must agree
        layout = template.DISTILBERT_LAYOUT if adapter.name == "distilbert" else template.BERT_LAYOUT
        for key, value in layout.items():
            assert getattr(adapter.layout, key) == value, (adapter.name, key)
    for name in supported_architectures():
        cls = template_class(name)
        assert cls.__bases__ == (getattr(transformers, name),) and cls.config_class.model_type.startswith("prunebench-")
    assert "prunebench" not in {line.split()[1].split(".")[0] for line in modelling_source().decode().splitlines()
                                if line.startswith(("import ", "from "))}


def test_sentence_transformers_embeddings_match_prunebench(tmp_path):
    st = pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers")
    from prunebench.models.hf import load_hf_tokenizer
    from prunebench.tasks.hf_eval import embed, read_pooling

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = load_model(st_folder(tmp_path))
    adapter = hf_adapter_for(model)
    adapter.keep_groups_("heads", 0, [1])
    adapter.keep_groups_("neurons", 1, range(9))
    out = save_hf_model(model, tmp_path / "out")
    texts = ["the good movie", "a bad bad film in the night", "happy"]
    want = embed(model, load_hf_tokenizer(out), texts, read_pooling(out))
    assert read_pooling(out).normalize and read_pooling(out).mode == "mean"
    got = st.SentenceTransformer(str(out), trust_remote_code=True, device="cpu").encode(texts, convert_to_tensor=True)
    assert (got - want).abs().max() <= 1e-5
