"""Unstructured selection: torch.nn.utils.prune equivalence, N:M, Wanda, group selection."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.prune as tprune

from prunebench.models.adapter import EncoderAdapter
from prunebench.pruning import PruneSpec, apply_plan_, plan_pruning
from prunebench.pruning.criteria import wanda_scores
from prunebench.pruning.select import global_masks, layer_masks, nm_masks, row_masks, select_groups


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_layer_matches_torch_l1_unstructured(tiny_model, sparsity: float) -> None:
    ours = copy.deepcopy(tiny_model)
    apply_plan_(ours, plan_pruning(ours, PruneSpec(method="magnitude", sparsity=sparsity)))
    theirs = copy.deepcopy(tiny_model)
    for lin in EncoderAdapter(theirs).prunable_linears().values():
        tprune.l1_unstructured(lin, "weight", amount=sparsity)
        tprune.remove(lin, "weight")
    for (name, a), b in zip(EncoderAdapter(ours).prunable_linears().items(),
                            EncoderAdapter(theirs).prunable_linears().values(), strict=True):
        assert torch.equal(a.weight, b.weight), name


@pytest.mark.parametrize("sparsity", [0.2, 0.7])
def test_magnitude_global_matches_torch_global_unstructured(tiny_model, sparsity: float) -> None:
    ours = copy.deepcopy(tiny_model)
    apply_plan_(ours, plan_pruning(ours, PruneSpec(method="magnitude", sparsity=sparsity, scope="global")))
    theirs = copy.deepcopy(tiny_model)
    params = [(lin, "weight") for lin in EncoderAdapter(theirs).prunable_linears().values()]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=sparsity)
    for lin, _ in params:
        tprune.remove(lin, "weight")
    a = [lin.weight for lin in EncoderAdapter(ours).prunable_linears().values()]
    b = [lin.weight for lin, _ in params]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    per_module = [float((w == 0).float().mean()) for w in a]
    assert max(per_module) - min(per_module) > 0.01  # a global threshold does not prune evenly


def test_nm_keeps_exactly_n_in_every_group() -> None:
    g = torch.Generator().manual_seed(0)
    scores = {"w": torch.rand(6, 16, generator=g), "tail": torch.rand(3, 10, generator=g)}
    for n, m in ((2, 4), (1, 4), (4, 8), (3, 3)):
        masks = nm_masks(scores, n, m)
        groups = masks["w"].reshape(6, 16 // m, m) if 16 % m == 0 else masks["w"][:, :15].reshape(6, 5, 3)
        assert (groups.sum(dim=2) == n).all()
        # the kept ones are the best of their group
        kept_min = torch.where(groups, scores["w"][:, :groups.shape[1] * m].reshape(groups.shape), 2.0).amin(2)
        dropped_max = torch.where(~groups, scores["w"][:, :groups.shape[1] * m].reshape(groups.shape), -1.0).amax(2)
        assert (kept_min >= dropped_max).all()
    tail = nm_masks(scores, 2, 4)["tail"]
    assert (tail[:, :8].reshape(3, 2, 4).sum(2) == 2).all() and tail[:, 8:].all()


def test_nm_on_model_has_two_of_four(tiny_model) -> None:
    apply_plan_(tiny_model, plan_pruning(tiny_model, PruneSpec(method="nm")))
    for lin in EncoderAdapter(tiny_model).prunable_linears().values():
        w = lin.weight
        assert ((w != 0).reshape(w.shape[0], -1, 4).sum(2) == 2).all()


def test_wanda_hand_made_activation_norms_flip_the_ranking() -> None:
    weight = torch.tensor([[4.0, 3.0, 2.0, 1.0], [-1.0, 2.0, -3.0, 4.0]])  # [out=2, in=4]
    # Input feature norms: two tokens per feature, ||X_j|| = (0.1, 1, 10, 100)
    sq = torch.tensor([0.1, 1.0, 10.0, 100.0]) ** 2
    scores = wanda_scores(weight, sq)  # |W| * ||X||
    assert torch.allclose(scores, torch.tensor([[0.4, 3.0, 20.0, 100.0], [0.1, 2.0, 30.0, 400.0]]))
    keep = row_masks({"w": scores}, 0.5)["w"]
    assert keep.tolist() == [[False, False, True, True], [False, False, True, True]]
    magnitude = row_masks({"w": weight.abs()}, 0.5)["w"]
    assert magnitude[0].tolist() == [True, True, False, False]  # magnitude alone would keep the opposite


def test_wanda_plan_uses_real_token_input_norms(tiny_model) -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, tiny_model.config.vocab_size, (3, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    calib = [{"input_ids": ids, "attention_mask": mask}]
    sq: dict[str, torch.Tensor] = {}
    handles = []
    for name, lin in EncoderAdapter(tiny_model).prunable_linears().items():
        def hook(mod, args, name=name):
            x = args[0][mask.bool()]  # [real tokens, in]
            sq[name] = sq.get(name, 0) + x.double().pow(2).sum(0)
        handles.append(lin.register_forward_pre_hook(hook))
    with torch.no_grad():
        tiny_model.encode(ids, mask)
    for h in handles:
        h.remove()
    p = plan_pruning(tiny_model, PruneSpec(method="wanda", sparsity=0.5), calib)
    for name, lin in EncoderAdapter(tiny_model).prunable_linears().items():
        expected = row_masks({name: lin.weight.detach().abs() * sq[name].sqrt().float()}, 0.5)[name]
        assert torch.equal(p.masks[name], expected), name
        assert (p.masks[name].sum(1) == lin.in_features // 2).all()  # per output row


def test_select_groups_layer_scope_and_min_keep() -> None:
    scores = [torch.tensor([3.0, 1.0, 2.0, 4.0]), torch.tensor([1.0, 2.0])]
    assert select_groups(scores, 0.5, "layer", what="head") == [(0, 3), (1,)]
    # 0.75 of 2 rounds to 2: capped so that each layer keeps its best head
    assert select_groups(scores, 0.75, "layer", what="head") == [(3,), (1,)]
    assert select_groups(scores, 0.75, "layer", what="head", allow_empty=True) == [(3,), ()]


def test_select_groups_global_protects_each_layers_best() -> None:
    scores = [torch.tensor([9.0, 8.0, 7.0, 6.0]), torch.tensor([1.0, 2.0])]
    assert select_groups(scores, 0.5, "global", what="head") == [(0, 1), (1,)]
    assert select_groups(scores, 0.5, "global", what="head", allow_empty=True) == [(0, 1, 2), ()]


def test_select_groups_round_to_and_prior() -> None:
    scores = [torch.arange(8.0)]
    assert select_groups(scores, 0.4, "layer", what="neuron", round_to=4) == [(4, 5, 6, 7)]  # keep 5 -> 4
    assert select_groups(scores, 0.3, "layer", what="neuron", round_to=4) == [tuple(range(8))]  # 6: tie -> more
    # prior: groups removed before stay removed even when they now score best
    assert select_groups([torch.tensor([5.0, 1.0, 2.0, 3.0])], 0.25, "layer", what="head",
                         prior=[(1, 2, 3)]) == [(1, 2, 3)]


def test_select_groups_refuses_to_remove_everything() -> None:
    with pytest.raises(ValueError, match="would remove every head of every layer"):
        select_groups([torch.ones(2), torch.ones(2)], 0.9, "layer", what="head")


def test_exactly_k_go_even_with_ties() -> None:
    scores = {"w": torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 2.0, 2.0, 2.0]])}
    for sparsity, removed in ((0.25, 2), (0.5, 4), (0.75, 6)):
        keep = layer_masks(scores, sparsity)["w"]
        assert int((~keep).sum()) == removed
        assert scores["w"][~keep].max() <= scores["w"][keep].min()
    keep = global_masks({"a": torch.zeros(3), "b": torch.ones(3)}, 0.5)
    assert not keep["a"].any() and keep["b"].all()
