"""Save and rebuild (pruned) Hugging Face encoders: safetensors + HF ``config.json`` + our shape manifest.

A saved folder holds
    ``model.safetensors``   the weights (tied copies written once, as transformers does); never pickle
    ``config.json``         the HF config, with the current layer count (and FFN width where uniform)
    ``prunebench_hf.json``  the shape manifest: per-layer heads and neurons, skipped and kept layers, metadata
    tokenizer files         and the sentence-transformers files (pooling), copied from the source folder
:func:`load_saved_hf` rebuilds the exact shape from the manifest. Where the shape is one plain
``transformers`` can express (every layer with the config's head count, one FFN width; removed layers are
fine), ``AutoModel.from_pretrained(folder)`` loads the same model without prunebench.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig

from prunebench._version import __version__
from prunebench.errors import CheckpointError
from prunebench.models.hf.families import HF_ADAPTERS, class_for_architecture, hf_adapter_class

MANIFEST_FILE = "prunebench_hf.json"
FORMAT = "prunebench-hf-model"
SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
#: Files copied from the source folder: tokenizers of every supported family and sentence-transformers config.
SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "modules.json",
    "sentence_bert_config.json", "config_sentence_transformers.json",
)
SIDE_DIRS = ("1_Pooling", "2_Normalize")


def _unique_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied tensors written once (the first name of each storage, as transformers keeps)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() > 0 and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().contiguous().cpu()
    return out


def save_hf_model(
    model: nn.Module, directory: str | Path, *, source: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (any pruned shape) to ``directory``.

    Args:
        model: a supported HF encoder.
        directory: target folder (created).
        source: folder whose tokenizer and sentence-transformers files are copied; default the folder the
            model was loaded from (``model.name_or_path``), when that is a folder.
        metadata: JSON-ready extras stored in the manifest (provenance, prune report, ...).

    Returns:
        The folder.
    """
    adapter = hf_adapter_class(model)(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(_unique_tensors(model), str(tmp), metadata={"format": "pt"})  # "pt": what transformers expects
    model.config.architectures = [type(model).__name__]
    model.config.to_json_file(str(out / "config.json"))
    doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "prunebench_version": __version__,
           "manifest": adapter.shape_manifest(), "plain_transformers": adapter.plain_loadable(),
           "metadata": metadata or {}}
    (out / MANIFEST_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / WEIGHTS_FILE)
    src = Path(source) if source is not None else loaded_from(model)
    if src is not None:
        _copy_side_files(src, out)
    return out


def loaded_from(model: nn.Module) -> Path | None:
    """The local folder ``model`` was loaded from, if it was loaded from one."""
    name = str(getattr(model, "name_or_path", "") or "")
    return Path(name) if name and Path(name).is_dir() else None


def _copy_side_files(src: Path, out: Path) -> None:
    if src.resolve() == out.resolve():
        return
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    for name in SIDE_DIRS:
        if (src / name).is_dir():
            shutil.copytree(src / name, out / name, dirs_exist_ok=True)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest document of a folder saved by :func:`save_hf_model` (one-line CheckpointError if bad)."""
    path = folder / MANIFEST_FILE
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a prunebench HF manifest (format is not {FORMAT!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CheckpointError(f"{path} has schema_version {version!r}; this prunebench reads up to {SCHEMA_VERSION}")
    return doc


def load_saved_hf(folder: Path, attn_implementation: str | None = None) -> nn.Module:
    """Rebuild the exact model saved in ``folder`` from config + manifest, then load its weights (eval mode).

    Raises:
        CheckpointError: a bad manifest, missing weights, or a tensor that does not fit the manifest's shapes.
    """
    manifest = read_manifest(folder)["manifest"]
    config = AutoConfig.from_pretrained(str(folder))
    model_cls = class_for_architecture(manifest["architecture"])
    adapter_cls = next(a for a in HF_ADAPTERS if model_cls in a.model_classes)
    try:
        model = adapter_cls.build_shaped(model_cls, config, manifest, attn_implementation)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / MANIFEST_FILE} does not fit config.json: {exc}") from None
    _load_weights(model, folder)
    model.config._name_or_path = str(folder)
    return model.eval()


def _load_weights(model: nn.Module, folder: Path) -> None:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupted or truncated ({exc})") from None
    expected = model.state_dict()
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path} has unexpected tensor {unexpected[0]!r} not in its manifest")
    stored = {(expected[k].data_ptr(), tuple(expected[k].shape)) for k in tensors}
    missing = [k for k in expected if k not in tensors
               and (expected[k].data_ptr(), tuple(expected[k].shape)) not in stored]  # tied copies are fine
    if missing:
        raise CheckpointError(f"{path} lacks tensor {missing[0]!r} ({len(missing)} missing in all)")
    for name, found in tensors.items():
        if tuple(found.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(found.shape)}, "
                                  f"the manifest expects {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=False)
