"""Save and rebuild (pruned) Hugging Face encoders: safetensors + HF ``config.json`` + our shape manifest.

A saved folder holds
    ``model.safetensors``   the weights (tied copies written once, as transformers does); never pickle
    ``config.json``         the HF config, with the current layer count (and FFN width where uniform); where
                            the shape is one no built-in config expresses, prunebench's own model type with
                            per-layer shapes and an ``auto_map`` (:mod:`prunebench.models.hf.portable`)
    ``modeling_prunebench.py``  only then: the modelling file users load it with (``trust_remote_code=True``)
    ``prunebench_hf.json``  the shape manifest: per-layer heads and neurons, skipped and kept layers, metadata
    tokenizer files         and the sentence-transformers files (pooling), copied by name from the source
                            folder (:func:`side_files`: checked, bounded, never a whole folder)
:func:`load_saved_hf` rebuilds the exact shape from the manifest. Where the shape is one plain
``transformers`` can express (every layer with the config's head count, one FFN width; removed layers are
fine), ``AutoModel.from_pretrained(folder)`` loads the same model without prunebench; any other shape loads with
``trust_remote_code=True`` and is refused without it, never half-initialised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers import PretrainedConfig

from prunebench._version import __version__
from prunebench.errors import CheckpointError
from prunebench.models.hf.deps import HFModelError
from prunebench.models.hf.families import HF_ADAPTERS, class_for_architecture, hf_adapter_class
from prunebench.models.hf.portable import (
    LAYERS_KEY,
    MODELLING_FILE,
    PORTABLE_KEYS,
    modelling_source,
    name_tokenizer_class,
    portable_config,
)
from prunebench.models.io import HF_MANIFEST_FILE as MANIFEST_FILE  # named once, in models.io
from prunebench.models.io import write_safetensors
from prunebench.models.side_files import copy_side_files, side_files
from prunebench.user_files import UnsafeFileError, read_json

FORMAT = "prunebench-hf-model"
SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
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
    src = Path(source) if source is not None else loaded_from(model)
    copy = None
    if src is not None and (not out.exists() or src.resolve() != out.resolve()):
        try:
            copy = side_files(src)  # a bad side file refuses the save before anything is written
        except UnsafeFileError as exc:
            raise CheckpointError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (WEIGHTS_FILE + ".tmp")
    write_safetensors(_unique_tensors(model), tmp, {"format": "pt"})  # "pt": what transformers expects
    plain = adapter.plain_loadable()
    model.config.architectures = [type(model).__name__]
    (out / MODELLING_FILE).unlink(missing_ok=True)  # a stale one from an earlier save of another shape
    if plain:
        model.config.to_json_file(str(out / "config.json"))
    else:  # a built-in config would describe shapes the folder does not hold: prunebench's model type
        (out / "config.json").write_text(json.dumps(portable_config(adapter), indent=2, sort_keys=True) + "\n")
        (out / MODELLING_FILE).write_bytes(modelling_source())
    doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "prunebench_version": __version__,
           "manifest": adapter.shape_manifest(), "plain_transformers": plain, "metadata": metadata or {}}
    (out / MANIFEST_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / WEIGHTS_FILE)
    if copy is not None:
        copy_side_files(*copy, out)
    if not plain:
        name_tokenizer_class(out, str(model.config.model_type))
    return out


def loaded_from(model: nn.Module) -> Path | None:
    """The local folder ``model`` was loaded from, if it was loaded from one."""
    name = str(getattr(model, "name_or_path", "") or "")
    return Path(name) if name and Path(name).is_dir() else None


#: The metadata files through which transformers would import a folder's own Python code (``auto_map``).
CODE_NAMING_FILES = ("config.json", "tokenizer_config.json")


def refuse_remote_code(folder: Path) -> None:
    """Refuse a folder whose metadata names Python code of its own, before transformers reads any of it.

    transformers imports a folder's ``auto_map`` modules when allowed to, and asks on stdin when not told, so a
    ``yes |`` pipe once ran a folder's code. prunebench loads only transformers' built-in classes. The
    ``auto_map`` of a prunebench-saved folder's ``config.json`` is for users (who load it with
    ``trust_remote_code=True``); prunebench itself rebuilds such a folder from its manifest
    (:func:`saved_config`), which never reads ``auto_map``.

    Raises:
        HFModelError: one line naming the file and the code it names.
        UnsafeFileError: a metadata file that is not a bounded regular JSON file.
    """
    ours = (folder / MANIFEST_FILE).is_file()
    for name in CODE_NAMING_FILES:
        path = folder / name
        if not path.is_file() and not path.is_symlink():
            continue
        doc = read_json(path)
        auto_map = doc.get("auto_map") if isinstance(doc, dict) else None
        if not auto_map or (ours and name == "config.json"):
            continue
        values = list(auto_map.values()) if isinstance(auto_map, dict) else [auto_map]
        # a tokenizer's entry is a [slow, fast] pair, either of which may be null
        named = sorted({str(v) for value in values for v in (value if isinstance(value, list) else [value]) if v})
        shown = ", ".join(named)[:120]
        raise HFModelError(f"{folder} needs Python code of its own ({name} auto_map: {shown}); prunebench never "
                           "runs a model folder's code: use a folder of a built-in transformers architecture")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest document of a folder saved by :func:`save_hf_model` (one-line CheckpointError if bad)."""
    path = folder / MANIFEST_FILE
    try:
        doc = read_json(path)
    except UnsafeFileError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a prunebench HF manifest (format is not {FORMAT!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CheckpointError(f"{path} has schema_version {version!r}; this prunebench reads up to {SCHEMA_VERSION}")
    return doc


def saved_config(folder: Path) -> tuple[type, PretrainedConfig, dict[str, Any]]:
    """The model class, HF config and shape manifest of a prunebench-saved folder, without transformers' Auto*.

    The config is built by the config class of the manifest's architecture from ``config.json``'s values
    (``auto_map``, ``model_type`` and the per-layer shapes of a prunebench model type dropped, the latter checked
    against the manifest first): whatever a saved folder tells other tools, prunebench reads it as
    the built-in family it was pruned from and never imports code named in it.

    Raises:
        CheckpointError: a bad manifest or config.
    """
    manifest = read_manifest(folder).get("manifest")
    path = folder / "config.json"
    try:
        doc = read_json(path)
        model_cls = class_for_architecture(str(manifest["architecture"]))  # type: ignore[index]
    except UnsafeFileError as exc:
        raise CheckpointError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / MANIFEST_FILE} names no supported architecture ({exc})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    layers = doc.get(LAYERS_KEY)
    if layers is not None and layers != manifest.get("layers"):  # type: ignore[union-attr]
        raise CheckpointError(f"{path} and {MANIFEST_FILE} disagree on the layer shapes")
    values = {k: v for k, v in doc.items() if k not in (*PORTABLE_KEYS, "transformers_version")}
    values["architectures"] = [model_cls.__name__]  # a prunebench model type names its modelling file's class
    try:
        config = model_cls.config_class.from_dict(values)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a usable {model_cls.__name__} config ({exc})") from None
    return model_cls, config, manifest


def load_saved_hf(folder: Path, attn_implementation: str | None = None) -> nn.Module:
    """Rebuild the exact model saved in ``folder`` from config + manifest, then load its weights (eval mode).

    Raises:
        CheckpointError: a bad manifest, missing weights, or a tensor that does not fit the manifest's shapes.
    """
    model_cls, config, manifest = saved_config(folder)
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
