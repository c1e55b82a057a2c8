"""The seams: a model the library has never seen is pruned through a registered adapter, with a registered
criterion, without any change to ``prunebench.pruning``; registries undo what the tests add."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from prunebench.bench.flops import forward_macs
from prunebench.bench.inputs import forward_call
from prunebench.models import IGNORE_INDEX, load_model, save_model, task_loss
from prunebench.models import adapters as adapters_module
from prunebench.models.adapter import EncoderAdapter
from prunebench.models.adapters import ADAPTERS, adapter_for, find_adapter
from prunebench.models.arch import ArchAdapter
from prunebench.pruning import (
    CRITERIA,
    METHODS,
    PLANNERS,
    SCHEDULE_REGISTRY,
    Criterion,
    PruneSpec,
    apply_plan_,
    check_fidelity,
    plan_pruning,
    prune_,
)
from prunebench.registry import Registry
from prunebench.tasks import prunable_weights
from prunebench.tasks.factory import TASKS
from tests.toy_arch import ToyAdapter, ToyModel


class SmallestFirst(Criterion):
    """Keeps the *smallest* weights and groups: the opposite of l1, so a test can tell it was used."""

    name = "toy-smallest"
    description = "-|W| (test only)"
    methods = ("magnitude", "structured")

    def weight_scores(self, adapter, calib, seed):
        return {n: -lin.weight.detach().abs() for n, lin in adapter.prunable_linears().items()}

    def group_scores(self, adapter, kind, calib, seed):
        per = [-sum(p.detach().abs().sum(dim=1) for p in adapter.group_weights(kind, i))
               for i in range(adapter.n_layers)]
        return [torch.cat(per)] if kind == "layers" else per


@pytest.fixture
def toy() -> Iterator[ToyModel]:
    """A seeded ToyModel with its adapter registered for the test only."""
    with ADAPTERS.registered(ToyAdapter.name, ToyAdapter):
        torch.manual_seed(0)
        yield ToyModel().eval()
    assert ToyAdapter.name not in ADAPTERS


@pytest.fixture
def smallest() -> Iterator[Criterion]:
    with CRITERIA.registered(SmallestFirst.name, SmallestFirst()) as c:
        yield c
    assert SmallestFirst.name not in CRITERIA


def _batch(vocab: int = 23, seed: int = 0, labels: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 7), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if labels:
        out["labels"] = torch.where(torch.rand(ids.shape, generator=g) < 0.5, ids, torch.full_like(ids, IGNORE_INDEX))
        out["labels"][:, 0] = ids[:, 0]
    return out


def test_toy_adapter_satisfies_the_protocol_and_is_found(toy: ToyModel) -> None:
    adapter = adapter_for(toy)
    assert isinstance(adapter, ToyAdapter) and isinstance(adapter, ArchAdapter)
    names = {f"blocks.{i}.{n}.weight" for i in range(2) for n in ("inp", "out", "up", "down")}
    assert set(prunable_weights(toy)) == names
    assert forward_macs(toy, 2, 7) == 2 * 7 * sum(lin.weight.numel() for lin in adapter.prunable_linears().values())
    batch = _batch()
    assert torch.equal(forward_call(toy, batch)(), toy.hidden(batch["input_ids"]))
    assert task_loss(toy, _batch(labels=True)).ndim == 0


def test_unknown_model_lists_supported_architectures() -> None:
    with pytest.raises(ValueError, match="supported: prunebench-encoder"):
        adapter_for(nn.Linear(2, 2))
    assert find_adapter(nn.Linear(2, 2)) is None
    with pytest.raises(ValueError, match="supported: prunebench-encoder"):
        prune_(nn.Linear(2, 2), PruneSpec())


def test_transformers_models_load_the_hf_adapters_lazily_or_name_the_extra(monkeypatch) -> None:
    fake = type("BertModel", (nn.Module,), {"__module__": "transformers.models.bert.modeling_bert"})()
    monkeypatch.setattr(adapters_module, "HF_MODULE", "prunebench.models._no_such_hf_module")
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[hf\]\""):
        adapter_for(fake)


@pytest.mark.parametrize("spec", [
    PruneSpec(method="magnitude", sparsity=0.5),
    PruneSpec(method="magnitude", sparsity=0.5, scope="global", criterion="l2"),
    PruneSpec(method="nm"),
    PruneSpec(method="wanda", sparsity=0.5),
])
def test_engine_zeroes_the_toy_model(toy: ToyModel, spec: PruneSpec) -> None:
    calib = [_batch(seed=1), _batch(seed=2)]
    report = prune_(toy, spec, calib)
    weights = prunable_weights(toy)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros / sum(w.numel() for w in weights.values()) == pytest.approx(spec.sparsity, abs=0.02)
    assert report.measured_sparsity == pytest.approx(zeros / sum(w.numel() for w in weights.values()))
    assert report.materialization == "zeros"


@pytest.mark.parametrize(("granularity", "criterion"), [
    ("both", "l1"), ("heads", "taylor"), ("neurons", "fisher"), ("layers", "l2"), ("both", "toy-smallest"),
])
def test_structured_plan_on_the_toy_shrunk_equals_masked(toy, smallest, granularity: str, criterion: str) -> None:
    spec = PruneSpec(method="structured", sparsity=0.5, granularity=granularity, criterion=criterion)
    calib = [_batch(seed=1, labels=True), _batch(seed=2, labels=True)]
    plan = plan_pruning(toy, spec, calib)
    masked, shrunk = copy.deepcopy(toy), copy.deepcopy(toy)
    assert apply_plan_(masked, plan, "zeros") == "zeros"
    assert apply_plan_(shrunk, plan, "shrink") == "shrunk"
    assert sum(p.numel() for p in shrunk.parameters()) < sum(p.numel() for p in toy.parameters())
    result = check_fidelity(masked, shrunk, _batch(seed=3), atol=1e-6)
    assert result["ok"], result
    report = prune_(copy.deepcopy(toy), spec, calib)
    assert report.materialization == "shrunk" and report.params_after["encoder"] < report.params_before["encoder"]


def test_save_and_load_rebuild_the_toy_from_its_manifest(toy: ToyModel, tmp_path) -> None:
    prune_(toy, PruneSpec(method="structured", sparsity=0.5, granularity="both"))
    save_model(toy, tmp_path)
    again = load_model(tmp_path)
    assert isinstance(again, ToyModel)
    assert ToyAdapter(again).shape_manifest() == ToyAdapter(toy).shape_manifest()
    batch = _batch()
    assert torch.equal(again(batch["input_ids"]), toy(batch["input_ids"]))


def test_a_registered_criterion_is_used_and_listed_for_its_methods(toy, smallest) -> None:
    assert "toy-smallest" in METHODS.get("magnitude").criteria and "toy-smallest" not in METHODS.get("nm").criteria
    biggest = {n: w.detach().abs().max() for n, w in prunable_weights(toy).items()}
    prune_(toy, PruneSpec(method="magnitude", sparsity=0.5, criterion="toy-smallest"))
    for name, w in prunable_weights(toy).items():
        assert float(w.detach().abs().max()) < float(biggest[name])  # the largest weights went first


def test_an_unregistered_criterion_is_refused(smallest) -> None:
    CRITERIA.remove(SmallestFirst.name)
    try:
        with pytest.raises(ValueError, match="choose from: l1, l2, taylor, random"):
            PruneSpec(method="magnitude", criterion="toy-smallest")
    finally:
        CRITERIA.add(SmallestFirst.name, smallest)


def test_iterative_with_recovery_hook_runs_on_the_toy(toy: ToyModel) -> None:
    seen: list[float] = []

    def on_step(step: int, sparsity: float, model: nn.Module) -> None:
        seen.append(sparsity)
        with torch.no_grad():
            for w in prunable_weights(model).values():
                w.add_(0.01)  # "fine-tuning" that would revive pruned weights if the engine let it

    report = prune_(toy, PruneSpec(method="iterative", sparsity=0.6, steps=3, schedule="linear"), on_step=on_step)
    assert seen == pytest.approx([0.2, 0.4, 0.6])
    assert report.measured_sparsity == pytest.approx(0.6, abs=0.02)


def test_every_method_has_a_planner_and_needs_come_from_the_criterion() -> None:
    assert PLANNERS.names() == METHODS.names()
    assert PruneSpec(method="magnitude", criterion="taylor").needs_calib
    assert PruneSpec(method="magnitude", criterion="taylor").needs_labels
    assert PruneSpec(method="iterative", base_method="structured", criterion="taylor").needs_calib
    assert not PruneSpec(method="structured").needs_calib
    assert PruneSpec(method="wanda").needs_calib and not PruneSpec(method="wanda").needs_labels


def test_fisher_with_one_batch_is_taylor_squared(tiny_model) -> None:
    from prunebench.pruning.criteria import get_criterion

    adapter = EncoderAdapter(tiny_model)
    vocab = tiny_model.config.vocab_size
    one = [_batch(vocab, seed=4, labels=True)]
    taylor, fisher = get_criterion("taylor"), get_criterion("fisher")
    t, f = taylor.weight_scores(adapter, one, 0), fisher.weight_scores(adapter, one, 0)
    for name in t:
        torch.testing.assert_close(f[name], t[name].pow(2))
    tg, fg = taylor.group_scores(adapter, "heads", one, 0), fisher.group_scores(adapter, "heads", one, 0)
    for a, b in zip(tg, fg, strict=True):
        torch.testing.assert_close(b, a.pow(2))
    two = [*one, _batch(vocab, seed=5, labels=True)]
    t2, f2 = taylor.weight_scores(adapter, two, 0), fisher.weight_scores(adapter, two, 0)
    name = next(iter(t2))
    assert not torch.allclose(f2[name], t2[name].pow(2))  # per-batch squares differ from the square of the sum


def test_run_specs_are_the_methods_own_defaults() -> None:
    """The run builds each spec from the method's registry entry; the specs equal the ones it always used."""
    from prunebench.runner.variants import prune_spec

    def make(method: str, sparsity: float) -> PruneSpec:
        return prune_spec(method, sparsity, seed=3, iterative_steps=4, schedule="cubic")

    assert make("structured", 0.5) == PruneSpec(method="structured", sparsity=0.5, granularity="both", seed=3)
    assert make("iterative", 0.8) == PruneSpec(method="iterative", sparsity=0.8, steps=4, schedule="cubic",
                                               base_method="magnitude", seed=3)
    assert make("nm", 0.5) == PruneSpec(method="nm", n=2, m=4, seed=3)
    assert make("wanda", 0.5) == PruneSpec(method="wanda", sparsity=0.5, seed=3)
    assert make("magnitude", 0.3) == PruneSpec(method="magnitude", sparsity=0.3, seed=3)


@pytest.mark.parametrize(("what", "registry"), [
    ("criteria", CRITERIA), ("methods", METHODS), ("schedules", SCHEDULE_REGISTRY), ("tasks", TASKS),
])
def test_list_commands_come_from_the_registries(capsys, smallest, what: str, registry: Registry) -> None:
    from prunebench.cli.main import main

    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    keys = [kind.form for _, kind in TASKS] if what == "tasks" else registry.names()
    for key in keys:
        assert key in out
    if what == "criteria":
        assert "toy-smallest" in out  # a criterion registered at run time is listed too


def test_registry_remove_and_registered() -> None:
    reg: Registry[int] = Registry("thing")
    with reg.registered("a", 1):
        assert reg.get("a") == 1
    assert "a" not in reg
    with pytest.raises(RuntimeError, match="boom"), reg.registered("b", 2):
        raise RuntimeError("boom")
    assert reg.names() == []
    with pytest.raises(ValueError, match="unknown thing 'c'"):
        reg.remove("c")


def test_config_json_names_the_adapter_and_old_files_still_load(tmp_path, tiny_model) -> None:
    import json

    from prunebench.errors import CheckpointError

    save_model(tiny_model, tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["adapter"] == "prunebench-encoder"
    assert doc["shape_manifest"] == {"layers": doc["config"]["layers"]}
    legacy = {k: v for k, v in doc.items() if k not in ("adapter", "shape_manifest")}  # written before the seam
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    batch = _batch(tiny_model.config.vocab_size)
    assert torch.equal(load_model(tmp_path)(batch["input_ids"]), tiny_model(batch["input_ids"]))
    (tmp_path / "config.json").write_text(json.dumps({**doc, "adapter": "no-such-arch"}))
    with pytest.raises(CheckpointError, match="unknown model architecture 'no-such-arch'; choose from: "):
        load_model(tmp_path)
