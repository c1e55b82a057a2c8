"""Load a Hugging Face encoder (and its tokenizer) from a local folder, offline; never a folder's own code.

Every failure a user can cause is one line (:class:`~prunebench.models.hf.deps.HFModelError` or
:class:`~prunebench.errors.CheckpointError`): a folder without ``config.json`` or without safetensors
weights (pickled ``pytorch_model.bin`` is refused), an unsupported architecture, a hidden size not
divisible by the head count, a missing tokenizer, a name that is not a folder.

A model folder is untrusted input. One whose ``config.json`` or ``tokenizer_config.json`` names Python code of
its own (``auto_map``) is refused before transformers reads it, and every transformers call passes
``trust_remote_code=False``: without that, transformers asks "[y/N]" on stdin and a ``yes |`` pipe ran the
folder's code. prunebench's own saved folders are rebuilt from their shape manifest with the config class of
the manifest's architecture, so an ``auto_map`` that a prunebench export writes for *users* is never followed
here. Hub ids are not resolved: nothing is downloaded, and a name with a "/" that is not a folder is one line
(naming the snapshot folder when the local Hugging Face cache holds that model, so the user can opt in to it).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from prunebench.errors import CheckpointError
from prunebench.models.hf.deps import HFModelError
from prunebench.models.hf.families import HF_ADAPTERS, class_for_architecture, supported_architectures
from prunebench.models.hf.io import MANIFEST_FILE, WEIGHTS_FILE, load_saved_hf, refuse_remote_code, saved_config
from prunebench.models.io import check_finite
from prunebench.models.side_files import TOKENIZER_FILES, side_files
from prunebench.user_files import UnsafeFileError, read_json, safetensors_header

log = logging.getLogger(__name__)

#: Attention implementations prunebench checks its pruning against.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def _check_config(config: PretrainedConfig, where: str) -> type:
    """The model class the config names, after the checks that give one-line errors."""
    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:
        raise HFModelError(f"{where}: config.json names no architecture; supported: "
                           f"{', '.join(supported_architectures())}")
    try:
        cls = class_for_architecture(architectures[0])
    except ValueError as exc:
        raise HFModelError(f"{where}: {exc}") from None
    layout = next(a.layout for a in HF_ADAPTERS if cls in a.model_classes)
    hidden = int(getattr(config, layout.config_hidden))
    heads = int(getattr(config, layout.config_heads))
    if heads <= 0 or hidden % heads != 0:
        raise HFModelError(f"{where}: hidden size {hidden} is not divisible by the head count {heads}")
    return cls


def _check_weights(folder: Path) -> None:
    if any(folder.glob("*.safetensors")):
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise HFModelError(f"{folder} holds only pickled weights (pytorch_model.bin); prunebench loads safetensors "
                           "only: convert them (model.save_pretrained writes model.safetensors)")
    raise HFModelError(f"{folder} has a config.json but no weights (model.safetensors)")


def _folder_class(folder: Path) -> type:
    """The model class of a local folder, after every check that needs no weights loaded."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a model folder: config.json is missing")
    _check_weights(folder)
    try:
        refuse_remote_code(folder)  # before transformers reads anything of the folder
    except UnsafeFileError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        header = safetensors_header(folder / WEIGHTS_FILE) if (folder / WEIGHTS_FILE).is_file() else None
        _check_size_fields(folder / "config.json")
    except UnsafeFileError as exc:
        raise CheckpointError(str(exc)) from None
    if (folder / MANIFEST_FILE).is_file():
        _, config, _ = saved_config(folder)  # prunebench's own folder: its manifest names the class
        return _check_config(config, str(folder))
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RecursionError, StrictDataclassError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{folder}/config.json is not a usable transformers config ({reason})") from None
    cls = _check_config(config, str(folder))
    if header is not None:
        _check_against_weights(folder, config, cls, header)
    return cls


#: Size fields of the supported families' configs: each must be a positive integer when present (transformers
#: checks some types only when it builds the config, and none of the signs: -16 reached torch.empty).
SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
               "max_position_embeddings", "dim", "n_layers", "n_heads", "hidden_dim", "type_vocab_size")


def _check_size_fields(path: Path) -> None:
    """One line naming the file and field for a size that is not a positive integer (bounded read)."""
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise UnsafeFileError(f"{path} is not a JSON object")
    for field in SIZE_FIELDS:
        value = doc.get(field)
        if field in doc and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise UnsafeFileError(f"{path}: field {field!r} must be a positive integer, got {shown}")


def _check_against_weights(folder: Path, config: PretrainedConfig, cls: type,
                           header: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Refuse a config whose sizes disagree with the tensors of ``model.safetensors`` (read from its header).

    transformers would raise on such a folder with a hint to pass ``ignore_mismatched_sizes=True``, which
    re-initialises the mismatched tensors at random; a layer count larger than the weights' (10^6) would be
    built, then filled at random. Checked on the header only, before any tensor is allocated.
    """
    layout = next(a.layout for a in HF_ADAPTERS if cls in a.model_classes)
    where = f"{folder}/config.json"
    hidden = int(getattr(config, layout.config_hidden))
    checks = {"embeddings.word_embeddings.weight": ("vocab_size", int(config.vocab_size)),
              "embeddings.position_embeddings.weight": ("max_position_embeddings",
                                                        int(config.max_position_embeddings))}
    for suffix, (field, value) in checks.items():
        shape = next((s for name, (_, s) in header.items() if name.endswith(suffix)), None)
        if shape is None or len(shape) != 2:
            continue
        if shape[0] != value:
            raise CheckpointError(f"{where}: {field} is {value}, the weights have {shape[0]} "
                                  f"({WEIGHTS_FILE}: {suffix} is {list(shape)})")
        if shape[1] != hidden:
            raise CheckpointError(f"{where}: {layout.config_hidden} is {hidden}, the weights have {shape[1]} "
                                  f"({WEIGHTS_FILE}: {suffix} is {list(shape)})")
    pattern = re.compile(rf"(?:^|\.){re.escape(layout.layers)}\.(\d+)\.")
    indices = {int(m.group(1)) for name in header if (m := pattern.search(name))}
    layers = int(getattr(config, layout.config_layers))
    if indices and layers != max(indices) + 1:
        raise CheckpointError(f"{where}: {layout.config_layers} is {layers}, the weights have {max(indices) + 1} "
                              "layers")
    ffn = next((s for name, (_, s) in header.items() if name.endswith(f"{layout.layers}.0.{layout.ffn_in}.weight")),
               None)
    if ffn is not None and len(ffn) == 2 and ffn != (int(getattr(config, layout.config_ffn)), hidden):
        raise CheckpointError(f"{where}: {layout.config_ffn} {getattr(config, layout.config_ffn)} and "
                              f"{layout.config_hidden} {hidden} disagree with the weights ({layout.ffn_in} of layer 0 "
                              f"is {list(ffn)})")



def check_hf_folder(path: str | Path) -> str:
    """Raise what :func:`load_hf_model` and :func:`load_hf_tokenizer` would, without loading any weights
    (``prunebench run`` checks its model before the run folder exists); return the model's head kind
    (``base``, ``mlm``, ``cls``: which tasks can score it is the task registry's question).

    Raises:
        HFModelError, CheckpointError: one-line reasons (see the module docstring).
    """
    folder = Path(path)
    cls = _folder_class(folder)
    _check_tokenizer(folder)
    try:
        side_files(folder)  # what a save will copy: checked now, not after minutes of pruning
    except UnsafeFileError as exc:
        raise HFModelError(str(exc)) from None
    return next(kind for a in HF_ADAPTERS for c, kind in a.model_classes.items() if c is cls)


def hf_skeleton(path: str | Path) -> nn.Module:
    """The model of a checked folder (:func:`check_hf_folder`) built on the meta device: every module at its
    saved widths (a prunebench-saved folder cut to its manifest), no weights read and no memory allocated, so a
    run can size its batches against the model before its folder exists."""
    folder = Path(path)
    with torch.device("meta"):
        if (folder / MANIFEST_FILE).is_file():
            model_cls, config, manifest = saved_config(folder)
            adapter_cls = next(a for a in HF_ADAPTERS if model_cls in a.model_classes)
            return adapter_cls.build_shaped(model_cls, config, manifest)
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
        return _folder_class(folder)._from_config(config)


def load_hf_model(
    path: str | Path, *, attn_implementation: str | None = None, device: str | torch.device = "cpu",
) -> nn.Module:
    """A supported HF encoder, in eval mode, from a local folder (offline; never its own code).

    Args:
        path: a folder with ``config.json`` and safetensors weights (a prunebench-saved folder is rebuilt
            from its shape manifest). Anything else is refused (see :func:`not_a_folder`).
        attn_implementation: ``sdpa`` or ``eager``; None keeps transformers' default (sdpa).
        device: where the model is put.

    Raises:
        HFModelError, CheckpointError: one-line reasons (see the module docstring).
    """
    if attn_implementation is not None and attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {attn_implementation!r}; "
                         f"choose from: {', '.join(ATTN_IMPLEMENTATIONS)}")
    folder = Path(path)
    if folder.is_dir():
        cls = _folder_class(folder)
        if (folder / MANIFEST_FILE).is_file():
            model = load_saved_hf(folder, attn_implementation)
        else:
            model, info = cls.from_pretrained(str(folder), use_safetensors=True, trust_remote_code=False,
                                              local_files_only=True, output_loading_info=True,
                                              **_attn_kwargs(attn_implementation))
            missing = missing_modules(info.get("missing_keys") or ())
            if missing:
                log.warning("%s: its weights have nothing for %s; transformers initialised %s at random and "
                            "prunebench counts %s in params", folder, ", ".join(missing),
                            "it" if len(missing) == 1 else "them", "it" if len(missing) == 1 else "them")
    else:
        raise not_a_folder(str(path))
    check_finite(model, folder / WEIGHTS_FILE)
    return model.eval().to(device)


def missing_modules(keys: Any) -> list[str]:
    """The modules whose tensors ``keys`` (transformers' ``missing_keys``) name, sorted: ``pooler.dense`` for
    ``pooler.dense.weight`` and ``pooler.dense.bias``. A converted folder often lacks the pooler, which
    transformers then builds with random weights and says so in a table that is easy to miss."""
    return sorted({str(key).rsplit(".", 1)[0] for key in keys})


def _attn_kwargs(attn_implementation: str | None) -> dict[str, Any]:
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def not_a_folder(name: str) -> HFModelError:
    """The one-line error for a model argument that is no folder (prunebench never goes to the hub).

    When the local Hugging Face cache already holds ``name`` (an ``org/model`` id), the message names its
    snapshot folder: passing that folder is the explicit opt-in to the cache, and it is read offline.
    """
    hint = ""
    snapshot = cached_snapshot(name)
    if snapshot is not None:
        hint = f"; the Hugging Face cache holds it: pass --model {snapshot}"
    return HFModelError(f"no model folder at {name!r}: prunebench reads local model folders only (config.json "
                        f"and model.safetensors), it downloads nothing{hint}")


def cached_snapshot(name: str) -> Path | None:
    """The snapshot folder of ``name`` in the local Hugging Face cache, if it is there (never the network)."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")  # a path, a "cached as missing" marker, or None
    except Exception:  # an invalid repo id, a cache that cannot be read: no hint, the same error
        log.debug("hub cache lookup of %s failed", name, exc_info=True)
        return None
    return Path(found).parent if isinstance(found, str) else None


def load_hf_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in a model folder (transformers' ``AutoTokenizer``, offline).

    Raises:
        HFModelError: the folder has no tokenizer files.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise not_a_folder(str(path))
    try:
        refuse_remote_code(folder)
        side_files(folder)  # what transformers reads next, checked first: a bad file is one line naming it
    except UnsafeFileError as exc:
        raise HFModelError(str(exc)) from None
    _check_tokenizer(folder)
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)


def _check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HFModelError(f"{folder} has no tokenizer ({' / '.join(TOKENIZER_FILES)}): copy the model's "
                           "tokenizer files into the folder")
