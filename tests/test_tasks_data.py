"""Corpus split, tokenizer, MLM task preparation and caching, masking, budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.models.batch import IGNORE_INDEX
from prunebench.tasks import Budget, BudgetKind, build_task
from prunebench.tasks import corpus as corpus_mod
from prunebench.tasks import mlm as mlm_mod
from prunebench.tasks.mlm_masking import mask_tokens
from prunebench.tasks.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

VOCAB = 300
SEQ = 32



def _write_corpus(root: Path, n: int = 60) -> None:
    for i in range(n):
        pkg = root / ("pkg" if i % 2 else "") / f"mod_{i}.py"
        pkg.parent.mkdir(parents=True, exist_ok=True)
        body = "\n".join(f"def function_{j}(value, other=None):\n    return value + {j} * other" for j in range(20))
        pkg.write_text(f'"""Module {i}: does things."""\nimport os\n\n{body}\n')
    (root / "site-packages").mkdir(exist_ok=True)
    (root / "site-packages" / "thirdparty.py").write_text("x = 1\n")
    (root / "test").mkdir(exist_ok=True)
    (root / "test" / "test_x.py").write_text("y = 2\n")


@pytest.fixture(scope="module")
def stdlib_task():
    return build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=10, max_chars=40_000)


def test_split_is_by_path_hash_and_stable() -> None:
    assert corpus_mod.split_of("json/decoder.py") == corpus_mod.split_of("json/decoder.py")
    names = [f"m{i}.py" for i in range(2000)]
    counts = {s: sum(corpus_mod.split_of(n) == s for n in names) for s in corpus_mod.SPLITS}
    assert 0.75 < counts["train"] / 2000 < 0.85
    assert 0.07 < counts["test"] / 2000 < 0.13


def test_list_corpus_excludes_site_packages_and_tests(tmp_path: Path) -> None:
    _write_corpus(tmp_path)
    files = corpus_mod.list_corpus(tmp_path)
    rels = [f.relpath for f in files]
    assert len(files) == 60
    assert not any(r.startswith(("site-packages", "test/")) for r in rels)
    assert rels == sorted(rels)


def test_real_stdlib_corpus_is_found() -> None:
    files = corpus_mod.list_corpus()
    assert len(files) > 100
    assert any(f.relpath == "json/decoder.py" for f in files)
    assert not any("site-packages" in f.relpath for f in files)


def test_select_files_cap_keeps_every_split(tmp_path: Path) -> None:
    _write_corpus(tmp_path)
    groups = corpus_mod.select_files(corpus_mod.list_corpus(tmp_path), 5)
    assert sum(len(g) for g in groups.values()) <= 5
    assert all(groups[s] for s in corpus_mod.SPLITS)
    with pytest.raises(ValueError, match="at least 3"):
        corpus_mod.select_files(corpus_mod.list_corpus(tmp_path), 2)


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    _write_corpus(tmp_path)
    before = corpus_mod.corpus_fingerprint(corpus_mod.select_files(corpus_mod.list_corpus(tmp_path), None))
    assert before["file_count"] == 60 and before["python_version"]
    (tmp_path / "mod_0.py").write_text("changed = True\n")
    after = corpus_mod.corpus_fingerprint(corpus_mod.select_files(corpus_mod.list_corpus(tmp_path), None))
    assert after["content_sha256"] != before["content_sha256"]


def test_mlm_task_rows_and_special_tokens(stdlib_task) -> None:
    tok = stdlib_task.tokenizer
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.get_vocab_size() <= VOCAB
    for split in ("train", "val", "test"):
        data = stdlib_task.split(split)
        assert data.input_ids.shape[1] == SEQ and len(data) > 0
        assert bool((data.input_ids[:, 0] == CLS_ID).all())
        assert int(data.input_ids.max()) < VOCAB
        assert bool((data.input_ids[data.attention_mask == 0] == PAD_ID).all())
        assert bool((data.input_ids == SEP_ID).any(dim=1).all())
    fp = stdlib_task.fingerprint()
    assert fp["corpus"]["source"] == "python-stdlib" and fp["seq_len"] == SEQ
    assert stdlib_task.model_overrides() == {"vocab_size": VOCAB, "head": "mlm"}
    with pytest.raises(ValueError, match="choose from: train, val, test"):
        stdlib_task.split("dev")


def test_mlm_cache_hit_skips_training_and_bad_cache_rebuilds(tmp_path: Path, monkeypatch) -> None:
    first = build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=6, max_chars=20_000, cache_dir=tmp_path)
    folders = list((tmp_path / "tasks").iterdir())
    assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()

    def boom(*args, **kwargs):
        raise AssertionError("tokenizer retrained despite a valid cache")

    monkeypatch.setattr(mlm_mod, "train_tokenizer", boom)
    second = build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=6, max_chars=20_000, cache_dir=tmp_path)
    assert torch.equal(first.split("train").input_ids, second.split("train").input_ids)
    assert first.fingerprint() == second.fingerprint()
    # A tampered meta (another corpus hash) must not be trusted: the task is rebuilt.
    meta = folders[0] / "meta.json"
    doc = json.loads(meta.read_text())
    doc["corpus"]["content_sha256"] = "0" * 64
    meta.write_text(json.dumps(doc))
    with pytest.raises(AssertionError, match="retrained"):
        build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=6, max_chars=20_000, cache_dir=tmp_path)


def test_mask_tokens_proportions_and_determinism() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 128), generator=g)
    ids[:, 0] = CLS_ID
    mask = torch.ones_like(ids)
    mask[:, 100:] = 0
    ids[:, 100:] = PAD_ID
    batch = mask_tokens(ids, mask, 1000, torch.Generator().manual_seed(1))
    selected = batch["labels"] != IGNORE_INDEX
    rate = selected.sum().item() / (200 * 99)
    assert 0.13 < rate < 0.17
    assert not selected[:, 0].any() and not selected[:, 100:].any()  # never specials nor padding
    assert torch.equal(batch["labels"][selected], ids[selected])
    replaced_mask = (batch["input_ids"] == MASK_ID)[selected].float().mean().item()
    kept = (batch["input_ids"] == ids)[selected].float().mean().item()
    assert 0.75 < replaced_mask < 0.85 and 0.07 < kept < 0.14
    assert torch.equal(batch["input_ids"][~selected], ids[~selected])
    again = mask_tokens(ids, mask, 1000, torch.Generator().manual_seed(1))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    evaluation = mask_tokens(ids, mask, 1000, torch.Generator().manual_seed(1), all_mask=True)
    sel = evaluation["labels"] != IGNORE_INDEX
    assert bool((evaluation["input_ids"][sel] == MASK_ID).all())


def test_mask_tokens_selects_at_least_one_per_row() -> None:
    ids = torch.tensor([[CLS_ID, 7, 8, SEP_ID], [CLS_ID, 9, SEP_ID, PAD_ID]])
    mask = (ids != PAD_ID).long()
    batch = mask_tokens(ids, mask, 50, torch.Generator().manual_seed(0), mask_prob=0.0)
    assert ((batch["labels"] != IGNORE_INDEX).sum(dim=1) == 1).all()


def test_mask_tokens_with_another_tokenizers_specials_and_mask_id() -> None:
    """How the HF runs mask: their tokenizer says which tokens may be selected and what the mask token is."""
    ids = torch.tensor([[101, 7, 8, 9, 102, 0], [101, 11, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    maskable = ~torch.isin(ids, torch.tensor([0, 101, 102]))
    batch = mask_tokens(ids, mask, 200, torch.Generator().manual_seed(3), all_mask=True, mask_id=103,
                        maskable=maskable)
    selected = batch["labels"] != IGNORE_INDEX
    assert (selected.sum(dim=1) >= 1).all() and not (selected & ~maskable).any()
    assert bool((batch["input_ids"][selected] == 103).all()) and torch.equal(batch["labels"][selected], ids[selected])
    with pytest.raises(ValueError, match="all_mask"):
        mask_tokens(ids, mask, 200, torch.Generator().manual_seed(3), maskable=maskable)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("500", BudgetKind.STEPS, 500), (20, BudgetKind.STEPS, 20), ("90s", BudgetKind.SECONDS, 90.0),
     ("2m", BudgetKind.SECONDS, 120.0), ("1.5min", BudgetKind.SECONDS, 90.0)],
)
def test_budget_parse(text, kind, value) -> None:
    budget = Budget.parse(text)
    assert budget.kind is kind and budget.value == value
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize("bad", ["", "ten", "0", "-5", "1.5", "90 parsecs"])
def test_budget_rejects_bad_input(bad) -> None:
    with pytest.raises(ValueError, match="budget"):
        Budget.parse(bad)


def test_budget_fraction() -> None:
    assert Budget.parse("10").fraction(5, 999.0) == 0.5
    assert Budget.parse("10s").fraction(999, 5.0) == 0.5
    assert Budget.parse("10").fraction(20, 0.0) == 1.0


def test_unknown_task_spec_lists_choices() -> None:
    with pytest.raises(ValueError, match="choose from: mlm, tweets, csv:PATH, jsonl:PATH, text:PATH"):
        build_task("glue", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="does not apply to a prunebench encoder preset"):
        build_task("text:notes.txt", vocab_size=VOCAB)  # a registered task our encoder cannot train on


def test_tokenizer_rejects_unknown_pre_tokenizer_and_tiny_vocab() -> None:
    from prunebench.tasks.tokenizer import train_tokenizer

    with pytest.raises(ValueError, match="choose from: bert, whitespace"):
        train_tokenizer(["x = 1"], 100, pre_tokenizer="spaces")
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_tokenizer(["x = 1"], 10)
