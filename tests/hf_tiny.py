"""Tiny random Hugging Face models of every supported family, built from configs (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'prunebench[hf]'")

VOCAB = 61
#: (family key, model class name): the tests run over all of them.
MODELS = (
    ("bert", "BertModel"), ("bert", "BertForMaskedLM"), ("bert", "BertForSequenceClassification"),
    ("roberta", "RobertaModel"), ("roberta", "RobertaForMaskedLM"), ("xlm-roberta", "XLMRobertaModel"),
    ("camembert", "CamembertForSequenceClassification"), ("distilbert", "DistilBertModel"),
    ("distilbert", "DistilBertForMaskedLM"), ("distilbert", "DistilBertForSequenceClassification"),
)


def tiny_config(family: str, attn: str = "sdpa", **overrides: object):
    """A 3-layer, 4-head, width-16 config of ``family`` (FFN 24)."""
    if family == "distilbert":
        kw = dict(vocab_size=VOCAB, dim=16, n_layers=3, n_heads=4, hidden_dim=24, max_position_embeddings=40,
                  num_labels=3)
        kw.update(overrides)
        config = transformers.DistilBertConfig(**kw)
    else:
        cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
               "xlm-roberta": transformers.XLMRobertaConfig, "camembert": transformers.CamembertConfig}[family]
        kw = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=24, max_position_embeddings=48, pad_token_id=1, num_labels=3)
        kw.update(overrides)
        config = cls(**kw)
    config._attn_implementation = attn
    return config


def tiny_model(family: str, class_name: str, attn: str = "sdpa", seed: int = 0, **overrides: object):
    """A randomly initialized tiny model in eval mode, with non-trivial biases and LayerNorms."""
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(tiny_config(family, attn, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)  # HF inits biases to 0 and norms to 1: too easy a test
    return model


def padded_batch(batch_size: int = 3, seq_len: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch with right padding of different lengths (ids from 3, so never the pad id)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch_size, seq_len), generator=gen)
    lengths = torch.randint(1, seq_len + 1, (batch_size,), generator=gen)
    lengths[0] = seq_len
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, 1), "attention_mask": mask}


def write_tokenizer(folder: Path) -> None:
    """A tiny WordPiece vocabulary (vocab.txt) that ``AutoTokenizer`` loads as a BERT tokenizer."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
