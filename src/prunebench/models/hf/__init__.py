"""Hugging Face encoders as prunebench models (the optional ``prunebench[hf]`` extra).

Importing this package needs ``transformers``; without it the import fails with one line naming the extra.
It provides one :class:`~prunebench.models.arch.ArchAdapter` per family (BERT, RoBERTa, XLM-RoBERTa,
CamemBERT, DistilBERT), offline loading from a local folder, and save/rebuild of pruned shapes.
"""

from prunebench.models.hf.deps import HFModelError, require_transformers

require_transformers()

from prunebench.models.hf.adapter import HFEncoderAdapter, LossFn  # noqa: E402
from prunebench.models.hf.families import (  # noqa: E402
    HF_ADAPTERS,
    BertAdapter,
    CamembertAdapter,
    DistilBertAdapter,
    RobertaAdapter,
    XLMRobertaAdapter,
    class_for_architecture,
    hf_adapter_class,
    supported_architectures,
)
from prunebench.models.hf.io import MANIFEST_FILE, load_saved_hf, save_hf_model  # noqa: E402
from prunebench.models.hf.layout import SkippedLayer  # noqa: E402
from prunebench.models.hf.loading import load_hf_model, load_hf_tokenizer  # noqa: E402


def hf_adapter_for(model: object, loss_fn: LossFn | None = None) -> HFEncoderAdapter:
    """The adapter of ``model`` (one-line ValueError listing the supported architectures otherwise)."""
    return hf_adapter_class(model)(model, loss_fn=loss_fn)  # type: ignore[arg-type]


__all__ = [
    "HF_ADAPTERS",
    "MANIFEST_FILE",
    "BertAdapter",
    "CamembertAdapter",
    "DistilBertAdapter",
    "HFEncoderAdapter",
    "HFModelError",
    "LossFn",
    "RobertaAdapter",
    "SkippedLayer",
    "XLMRobertaAdapter",
    "class_for_architecture",
    "hf_adapter_class",
    "hf_adapter_for",
    "load_hf_model",
    "load_hf_tokenizer",
    "load_saved_hf",
    "save_hf_model",
    "supported_architectures",
]
