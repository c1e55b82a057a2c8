"""Every pruning method runs through the adapter on HF models, end to end: plan, apply, fidelity, report, reload."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'prunebench[hf]'")

from prunebench.models.adapters import adapter_for  # noqa: E402
from prunebench.models.hf import HFEncoderAdapter, hf_adapter_for  # noqa: E402
from prunebench.models.io import load_model, save_model  # noqa: E402
from prunebench.pruning import PrunePlan, PruneSpec, apply_plan_, check_fidelity, prune_with_plan_  # noqa: E402
from tests.hf_tiny import VOCAB, padded_batch, tiny_model  # noqa: E402

SPECS = [
    dict(method="magnitude", sparsity=0.5),
    dict(method="magnitude", sparsity=0.6, scope="global"),
    dict(method="magnitude", sparsity=0.4, criterion="taylor"),
    dict(method="wanda", sparsity=0.5),
    dict(method="nm", n=2, m=4),
    dict(method="structured", sparsity=0.5, granularity="both"),
    dict(method="structured", sparsity=0.5, granularity="heads", criterion="taylor"),
    dict(method="structured", sparsity=0.5, granularity="neurons", scope="global", criterion="l2"),
    dict(method="structured", sparsity=0.34, granularity="layers", criterion="taylor"),
    dict(method="structured", sparsity=0.5, granularity="both", criterion="random"),
    dict(method="structured", sparsity=0.5, granularity="both", criterion="fisher"),
    dict(method="magnitude", sparsity=0.5, criterion="fisher"),
    dict(method="structured", sparsity=0.85, granularity="both", scope="global", allow_empty_layers=True),
    dict(method="iterative", sparsity=0.75, steps=3, schedule="cubic"),
    dict(method="iterative", sparsity=0.5, steps=2, base_method="structured", granularity="both"),
    dict(method="iterative", sparsity=0.5, steps=2, base_method="wanda"),
]


def _calib(head_kind: str, n: int = 2) -> list[dict[str, torch.Tensor]]:
    batches = []
    for i in range(n):
        b = padded_batch(batch_size=4, seq_len=10, seed=10 + i)
        if head_kind == "mlm":
            gen = torch.Generator().manual_seed(i)
            labels = torch.where(torch.rand(b["input_ids"].shape, generator=gen) < 0.3, b["input_ids"], -100)
            labels[:, 0] = b["input_ids"][:, 0]
            b["labels"] = labels
        else:
            b["labels"] = torch.tensor([0, 1, 2, 1])
        batches.append(b)
    return batches


@pytest.mark.parametrize("spec_kw", SPECS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
@pytest.mark.parametrize(("family", "cls", "head"), [("bert", "BertForMaskedLM", "mlm"),
                                                     ("distilbert", "DistilBertForSequenceClassification", "cls")])
def test_every_method_prunes_hf_models_end_to_end(tmp_path, spec_kw, family, cls, head):
    dense = tiny_model(family, cls)
    spec = PruneSpec(**spec_kw)
    calib = _calib(head)
    model = copy.deepcopy(dense)
    steps = []
    report, plan = prune_with_plan_(model, spec, calib, on_step=lambda step, s, m: steps.append(s))
    assert isinstance(adapter_for(model), HFEncoderAdapter)
    assert steps and steps[-1] == pytest.approx(spec.sparsity)
    check = padded_batch(seed=99)
    if plan.structured:
        assert report.materialization == "shrunk"
        assert report.params_after["encoder"] < report.params_before["encoder"]
        assert report.macs_after < report.macs_before
        reference = copy.deepcopy(dense)
        apply_plan_(reference, PrunePlan.from_dict(plan.to_dict()), "zeros")
        assert check_fidelity(reference, model, check, atol=1e-5)["ok"]
    else:
        assert report.materialization == "zeros"
        assert report.measured_sparsity == pytest.approx(spec.sparsity, abs=0.02)
        assert report.macs_after_effective < report.macs_after
    save_model(model, tmp_path / "m", metadata={"pruning": spec.to_dict()})
    assert check_fidelity(model, load_model(tmp_path / "m"), check, atol=0.0)["ok"]


def test_taylor_on_a_base_encoder_needs_a_loss_and_uses_the_one_given():
    base = tiny_model("bert", "BertModel")
    calib = [{**padded_batch(batch_size=3, seed=3), "labels": torch.tensor([0, 1, 1])}]
    spec = PruneSpec(method="structured", sparsity=0.5, granularity="heads", criterion="taylor")
    with pytest.raises(ValueError, match="base encoder with no task loss of its own"):
        prune_with_plan_(copy.deepcopy(base), spec, calib)
    probe = torch.nn.Linear(16, 2)
    torch.manual_seed(0)

    def probe_loss(m, b):  # a frozen linear probe on mean-pooled embeddings
        hidden = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        mask = b["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.cross_entropy(probe(pooled), b["labels"])

    model = copy.deepcopy(base)
    adapter = hf_adapter_for(model, loss_fn=probe_loss)
    report, plan = prune_with_plan_(adapter, spec, calib)
    assert [len(plan.heads[i]) for i in range(3)] == [2, 2, 2]
    assert report.group_sparsity["heads"] == pytest.approx(0.5)


def test_the_bench_call_is_the_hf_module_and_macs_shrink():
    from prunebench.bench.inputs import forward_call, make_inputs

    model = tiny_model("bert", "BertForMaskedLM")
    batch = make_inputs(VOCAB, 2, 12, seed=0)
    out = forward_call(model, batch)()
    assert type(out).__name__ == "BaseModelOutputWithPoolingAndCrossAttentions"  # model.bert, as users call it
    with_head = forward_call(model, batch, include_head=True)()
    assert with_head.logits.shape == (2, 12, VOCAB)
    before = adapter_for(model).macs(1, 16)["total"]
    prune_with_plan_(model, PruneSpec(method="structured", sparsity=0.5, granularity="both"))
    assert adapter_for(model).macs(1, 16)["total"] < 0.6 * before
