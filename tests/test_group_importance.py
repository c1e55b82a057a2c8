"""The activation criterion (through the registry, on HF and built-in models), uniform shrinking, the refit."""

from __future__ import annotations

import copy

import pytest
import torch

from prunebench.models.adapters import adapter_for
from prunebench.models.hf import hf_adapter_for
from prunebench.pruning import PruneSpec, apply_plan_, plan_pruning
from prunebench.pruning.criteria import criteria_for, get_criterion
from prunebench.pruning.group_importance import shrink_refit_, shrink_uniform_, top_k
from tests import hf_tiny

KINDS = ("heads", "neurons")


def activation_scores(adapter, calib):
    return get_criterion("activation").group_scores_many(adapter, KINDS, calib, 0)


def _calib(n: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return [hf_tiny.padded_batch(4, 12, seed=seed + k) for k in range(n)]


def _hidden(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**b).last_hidden_state[b["attention_mask"].bool()] for b in batches])


def test_activation_scores_have_one_per_group_and_a_silenced_group_scores_zero():
    model = hf_tiny.tiny_model("bert", "BertModel")
    ad = hf_adapter_for(model)
    ad.zero_groups_("heads", 1, [2])
    ad.zero_groups_("neurons", 0, [5, 7])
    scores = activation_scores(ad, _calib())
    assert [len(s) for s in scores["heads"]] == [4, 4, 4]
    assert [len(s) for s in scores["neurons"]] == [24, 24, 24]
    assert float(scores["heads"][1][2]) == 0.0 and float(scores["heads"][1][0]) > 0.0
    assert float(scores["neurons"][0][5]) == 0.0 and float(scores["neurons"][0][7]) == 0.0
    assert float(scores["neurons"][0].sum()) > 0.0


def test_activation_is_a_registered_structured_criterion_for_every_model(tiny_model):
    """No labels, calibration needed; the engine plans with it on the built-in encoder as on an HF one."""
    crit = get_criterion("activation")
    assert crit.needs_calibration and not crit.needs_labels and not crit.loss_change
    assert "activation" in criteria_for("structured")
    spec = PruneSpec(method="structured", sparsity=0.5, granularity="both", criterion="activation")
    assert spec.needs_calib
    ids = torch.randint(5, 97, (4, 10), generator=torch.Generator().manual_seed(0))
    calib = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    with torch.no_grad():  # head 3 of layer 1 writes nothing: it must score 0 and go first
        tiny_model.layers[1].attn.out_proj.weight[:, 12:16] = 0.0
    scores = crit.group_scores_many(adapter_for(tiny_model), KINDS, calib, 0)
    assert float(scores["heads"][1][3]) == 0.0 and float(scores["heads"][1][:3].min()) > 0.0
    plan = plan_pruning(tiny_model, spec, calib)
    assert 3 not in plan.heads[1]
    shrunk = copy.deepcopy(tiny_model)
    apply_plan_(shrunk, plan, "shrink")
    assert shrunk.config.layers[1].n_heads == 2
    hf = hf_tiny.tiny_model("bert", "BertModel")
    assert plan_pruning(hf, spec, _calib(2)).heads  # the same criterion through the HF adapter
    with pytest.raises(ValueError, match="heads and neurons, not layers"):
        crit.group_scores(adapter_for(tiny_model), "layers", calib, 0)
    with pytest.raises(ValueError, match="needs calibration data"):
        crit.group_scores(adapter_for(tiny_model), "heads", None, 0)


def test_taylor_and_l2_group_scores_on_hf_models_and_unknown_names():
    model = hf_tiny.tiny_model("bert", "BertForSequenceClassification")
    ad = hf_adapter_for(model)
    calib = [{**b, "labels": torch.tensor([0, 1, 2, 0])} for b in _calib(2)]
    taylor = get_criterion("taylor").group_scores_many(ad, KINDS, calib, 0)
    assert all(float(s.sum()) > 0 for s in taylor["heads"] + taylor["neurons"])
    assert all(p.grad is None for p in model.parameters())  # scoring leaves no gradients behind
    l2 = get_criterion("l2").group_scores_many(ad, KINDS, None, 0)
    rows, cols = ad.group_weights("heads", 0)
    assert torch.allclose(l2["heads"][0], (rows.pow(2).sum(1) + cols.pow(2).sum(1)).sqrt())
    with pytest.raises(ValueError, match="unknown criterion 'entropy'; choose from: l1, l2, taylor"):
        get_criterion("entropy")


def test_top_k_and_uniform_shrink_keep_the_best_groups_in_every_layer():
    assert top_k(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2) == [1, 3]
    model = hf_tiny.tiny_model("distilbert", "DistilBertModel")
    ad = hf_adapter_for(model)
    scores = activation_scores(ad, _calib())
    kept = shrink_uniform_(ad, 0.5, scores)
    assert [w["heads"] for w in ad.layer_widths()] == [2, 2, 2]
    assert [w["neurons"] for w in ad.layer_widths()] == [12, 12, 12]
    assert kept["heads"][0] == top_k(scores["heads"][0], 2)
    with pytest.raises(ValueError, match="sparsity"):
        shrink_uniform_(ad, 1.0, scores)


def test_refit_brings_the_shrunk_model_closer_to_dense_than_the_plain_shrink():
    dense = hf_tiny.tiny_model("bert", "BertModel", num_hidden_layers=2)
    calib = _calib(12)
    scores = activation_scores(hf_adapter_for(dense), calib)
    plain, refit = copy.deepcopy(dense), copy.deepcopy(dense)
    shrink_uniform_(hf_adapter_for(plain), 0.5, scores)
    kept = shrink_refit_(hf_adapter_for(refit), hf_adapter_for(dense), 0.5, scores, calib)
    assert kept["neurons"][1] == top_k(scores["neurons"][1], 12)
    assert hf_adapter_for(refit).layer_widths() == hf_adapter_for(plain).layer_widths()
    target = _hidden(dense, calib)
    err_plain = (_hidden(plain, calib) - target).pow(2).mean()
    err_refit = (_hidden(refit, calib) - target).pow(2).mean()
    assert err_refit < 0.5 * err_plain
    same = copy.deepcopy(dense)
    shrink_refit_(hf_adapter_for(same), hf_adapter_for(dense), 0.0, scores, calib)
    assert torch.equal(_hidden(same, calib), target)  # nothing removed: nothing refitted
