"""Hugging Face encoders as prunebench models (the optional ``prunebench[hf]`` extra).

Importing this package needs ``transformers``; without it the import fails with one line naming the extra.
On import it registers its adapters in :data:`prunebench.models.adapters.ADAPTERS`, so ``adapter_for`` (which
imports it on first sight of a transformers model) and the whole pruning engine handle HF models.
It provides one :class:`~prunebench.models.arch.ArchAdapter` per family (BERT, RoBERTa, XLM-RoBERTa,
CamemBERT, DistilBERT), offline loading from a local folder, and save/rebuild of pruned shapes.
"""

from prunebench.models.hf.deps import HFModelError, require_transformers

require_transformers()

from prunebench.logs import IMPORT_NOISE, quiet_loggers  # noqa: E402

# transformers imports torchao (when installed) as its modules load, and torchao talks: quiet, once.
with quiet_loggers(*IMPORT_NOISE):
    import transformers  # noqa: F401

    from prunebench.models.adapters import ADAPTERS
    from prunebench.models.batch import LossFn
    from prunebench.models.hf.adapter import HFEncoderAdapter
    from prunebench.models.hf.families import (
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
    from prunebench.models.hf.io import MANIFEST_FILE, load_saved_hf, save_hf_model
    from prunebench.models.hf.layout import SkippedLayer
    from prunebench.models.hf.loading import check_hf_folder, load_hf_model, load_hf_tokenizer

# Registered once per process, on first import; prunebench.models.adapters imports this package lazily.
for _adapter in HF_ADAPTERS:
    if _adapter.name not in ADAPTERS:
        ADAPTERS.add(_adapter.name, _adapter)


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
    "check_hf_folder",
    "class_for_architecture",
    "hf_adapter_class",
    "hf_adapter_for",
    "load_hf_model",
    "load_hf_tokenizer",
    "load_saved_hf",
    "save_hf_model",
    "supported_architectures",
]
