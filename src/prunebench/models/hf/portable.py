"""What a saved folder tells plain ``transformers``: a built-in config where the shape allows, else a model type
of prunebench's own with an ``auto_map`` and the modelling file that builds the per-layer shapes.

A pruned encoder whose layers keep the config's head count, one FFN width and no skipped layer is a plain
transformers model (:meth:`~prunebench.models.hf.manifest.HFManifestMixin.plain_loadable`): its ``config.json``
is the family's own. Any other shape cannot be written as a built-in config without lying about it (a BERT config
saying 12 heads for a model that holds 5 loads, with ``ignore_mismatched_sizes=True``, as re-initialised
attention). Such a folder's ``config.json`` names ``prunebench-<family>`` and its per-layer shapes
(``prunebench_layers``), and its ``auto_map`` names the classes of :mod:`prunebench.models.hf.modeling_prunebench`,
copied unchanged beside it: users load it with ``trust_remote_code=True``; without it transformers refuses.
prunebench itself never imports the copy: it rebuilds the folder from its shape manifest
(:func:`prunebench.models.hf.io.saved_config`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prunebench.models.hf import modeling_prunebench
from prunebench.models.hf.adapter import HFEncoderAdapter
from prunebench.models.side_files import TOKENIZER_FILES
from prunebench.user_files import METADATA_MAX_BYTES, read_json

#: The modelling file's name in a saved folder (``auto_map`` entries are ``<module>.<class>``).
MODELLING_FILE = "modeling_prunebench.py"
#: The config key holding one shape per layer (the manifest's ``layers`` entries).
LAYERS_KEY = "prunebench_layers"
#: Keys that only a prunebench model type has in ``config.json`` (dropped when prunebench reads it back).
PORTABLE_KEYS = ("auto_map", "model_type", LAYERS_KEY)
#: transformers' Auto class for each kind of model prunebench handles.
#: The transformers Auto class of each head kind (the vocabulary of ``ArchAdapter.head_kind``).
AUTO_CLASSES = {"base": "AutoModel", "mlm": "AutoModelForMaskedLM", "cls": "AutoModelForSequenceClassification"}
#: Tokenizer class of each family's built-in model type: a folder whose model type is prunebench's must name it in
#: ``tokenizer_config.json``, else ``AutoTokenizer`` would look the model type up and need the folder's code.
TOKENIZER_CLASSES = {"bert": "BertTokenizer", "roberta": "RobertaTokenizer", "xlm-roberta": "XLMRobertaTokenizer",
                     "camembert": "CamembertTokenizer", "distilbert": "BertTokenizer"}


def modelling_source() -> bytes:
    """The modelling file's bytes, as copied into every folder that needs it."""
    return Path(modeling_prunebench.__file__).read_bytes()


def template_class(architecture: str) -> type:
    """The class of :mod:`~prunebench.models.hf.modeling_prunebench` that loads ``architecture`` per layer."""
    return getattr(modeling_prunebench, f"Prunebench{architecture}")  # type: ignore[no-any-return]


def portable_config(adapter: HFEncoderAdapter) -> dict[str, Any]:
    """``config.json`` of a shape plain transformers cannot express: prunebench's model type, per-layer shapes,
    ``auto_map``.

    ``architectures`` names the class that loads it; the family's sizes (``num_attention_heads``, the FFN width)
    stay those the template is built from before it is cut to ``prunebench_layers``.
    """
    architecture = type(adapter.model).__name__
    cls = template_class(architecture)
    base = next(c for c, kind in adapter.model_classes.items() if kind == "base").__name__
    module = MODELLING_FILE.removesuffix(".py")
    auto_map = {"AutoConfig": f"{module}.{cls.config_class.__name__}",
                "AutoModel": f"{module}.{template_class(base).__name__}"}
    auto_map[AUTO_CLASSES[adapter.head_kind]] = f"{module}.{cls.__name__}"
    doc = adapter.hf_config_dict()
    doc.update(model_type=cls.config_class.model_type, architectures=[cls.__name__], auto_map=auto_map)
    doc[LAYERS_KEY] = adapter.layer_widths()
    return doc


def name_tokenizer_class(folder: Path, model_type: str) -> None:
    """Make ``folder/tokenizer_config.json`` name the family's tokenizer class where it names none.

    ``AutoTokenizer`` falls back to ``config.json``'s model type, which for a prunebench model type is unknown to
    it; with the class named, the tokenizer loads with ``trust_remote_code=False``. A folder without tokenizer
    files is left alone.
    """
    if not any((folder / name).is_file() for name in TOKENIZER_FILES) or model_type not in TOKENIZER_CLASSES:
        return
    path = folder / "tokenizer_config.json"
    doc = read_json(path, METADATA_MAX_BYTES) if path.is_file() else {}
    if isinstance(doc, dict) and not doc.get("tokenizer_class"):
        doc["tokenizer_class"] = TOKENIZER_CLASSES[model_type]
        path.unlink(missing_ok=True)  # never write through a link
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
