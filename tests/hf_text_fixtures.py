"""Tiny random HF BERTs with a real WordPiece tokenizer over words, and small labelled / code texts (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'prunebench[hf]'")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a good bad great awful love hate movie film day night happy sad nice terrible fine poor "
    "def return class import self if else for in while print none true false x y"
).split()
GOOD = ["good", "great", "love", "happy", "nice", "fine"]
BAD = ["bad", "awful", "hate", "sad", "terrible", "poor"]


def tokenizer(tmp: Path):
    """A WordPiece tokenizer over :data:`WORDS`, letters and digits (lower-casing), also saved to ``tmp``."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab = SPECIALS + WORDS + letters + [f"##{c}" for c in letters] + list(".,:()=_")
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))})
    tok.save_pretrained(str(tmp))
    return tok


def config(tok, **overrides):
    """A 2-layer, 4-head, width-32 BERT config sized to ``tok``."""
    kw = {"vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 64, "pad_token_id": tok.pad_token_id,
          # Wide init: with the default 0.02 the layers barely change the residual stream of a random model.
          "initializer_range": 0.3}
    kw.update(overrides)
    return transformers.BertConfig(**kw)


def base_model(tok, seed: int = 0):
    """A seeded random ``BertModel`` in eval mode."""
    transformers.set_seed(seed)
    return transformers.BertModel(config(tok)).eval()


def base_model_folder(tmp: Path, name: str = "tiny-bert") -> Path:
    """A saved tiny random ``BertModel`` with its WordPiece tokenizer, in ``tmp / name``."""
    folder = tmp / name
    tok = tokenizer(folder)
    base_model(tok).save_pretrained(str(folder))
    return folder


def st_folder(tmp: Path, name: str = "st") -> Path:
    """A tiny sentence-transformers folder: model, tokenizer, modules.json, mean pooling and normalize."""
    folder = base_model_folder(tmp, name)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 64, "do_lower_case": false}')
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "2_Normalize").mkdir()
    return folder


def mlm_model(tok, seed: int = 0):
    """A seeded random ``BertForMaskedLM`` in eval mode."""
    transformers.set_seed(seed)
    return transformers.BertForMaskedLM(config(tok)).eval()


def cls_model(tok, num_labels: int = 2, seed: int = 0):
    """A seeded random ``BertForSequenceClassification`` in eval mode."""
    transformers.set_seed(seed)
    return transformers.BertForSequenceClassification(config(tok, num_labels=num_labels)).eval()


def sentiment_csv(path: Path, n: int = 120) -> Path:
    """A two-class CSV whose label is decided by its words (``text``, ``label`` columns)."""
    rows = ["text,label"]
    for i in range(n):
        words = GOOD if i % 2 == 0 else BAD
        rows.append(f"the {words[i % 6]} {words[(i // 2) % 6]} movie {i},{'pos' if i % 2 == 0 else 'neg'}")
    path.write_text("\n".join(rows) + "\n")
    return path


def corpus_root(path: Path, files: int = 30) -> Path:
    """A folder of small ``.py`` files standing in for the stdlib corpus."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        body = "\n".join(f"def f{j}(x, y):\n    if x:\n        return self.y\n    return none" for j in range(6))
        (path / f"mod{i}.py").write_text(f"import x\n{body}\nclass c{i}:\n    pass\n")
    return path
