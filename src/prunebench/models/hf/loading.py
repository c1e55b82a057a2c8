"""Load a Hugging Face encoder (and its tokenizer) from a local folder, offline, or from a hub id.

Every failure a user can cause is one line (:class:`~prunebench.models.hf.deps.HFModelError` or
:class:`~prunebench.errors.CheckpointError`): a folder without ``config.json`` or without safetensors
weights (pickled ``pytorch_model.bin`` is refused), an unsupported architecture, a hidden size not
divisible by the head count, a missing tokenizer, a hub id that needs a network there is none of.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from prunebench.errors import CheckpointError
from prunebench.models.hf.deps import HFModelError
from prunebench.models.hf.families import HF_ADAPTERS, class_for_architecture, supported_architectures
from prunebench.models.hf.io import MANIFEST_FILE, load_saved_hf

log = logging.getLogger(__name__)

#: Files of which at least one means "this folder has a tokenizer".
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")
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
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{folder}/config.json is not a usable transformers config ({reason})") from None
    return _check_config(config, str(folder))


def check_hf_folder(path: str | Path) -> None:
    """Raise what :func:`load_hf_model` and :func:`load_hf_tokenizer` would, without loading any weights
    (``prunebench run`` checks its model before the run folder exists).

    Raises:
        HFModelError, CheckpointError: one-line reasons (see the module docstring).
    """
    folder = Path(path)
    _folder_class(folder)
    _check_tokenizer(folder)


def load_hf_model(
    path: str | Path, *, attn_implementation: str | None = None, device: str | torch.device = "cpu",
) -> nn.Module:
    """A supported HF encoder, in eval mode, from a local folder (offline) or a hub id.

    Args:
        path: a folder with ``config.json`` and safetensors weights (a prunebench-saved folder is rebuilt
            from its shape manifest), or a hub id, which goes to transformers' own resolution (its cache
            first, then the network).
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
            model = cls.from_pretrained(str(folder), use_safetensors=True, **_attn_kwargs(attn_implementation))
    else:
        model = _from_hub(str(path), attn_implementation)
    return model.eval().to(device)


def _attn_kwargs(attn_implementation: str | None) -> dict[str, Any]:
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def _from_hub(hub_id: str, attn_implementation: str | None) -> nn.Module:
    """Resolve ``hub_id`` through transformers: its local cache first, the network only if needed."""
    if hub_id.startswith((".", "/", "~")) or hub_id.count("/") > 1:
        raise CheckpointError(f"no model folder at {hub_id}")
    config = None
    for local_only in (True, False):
        try:
            config = AutoConfig.from_pretrained(hub_id, local_files_only=local_only)
            break
        except OSError:
            log.debug("hub id %s: not resolved with local_files_only=%s", hub_id, local_only)
    if config is None:
        raise HFModelError(f"{hub_id!r} is no folder, and the Hugging Face hub could not resolve it (no network, or "
                           "no such model): pass a local folder with config.json and model.safetensors")
    cls = _check_config(config, hub_id)
    try:
        return cls.from_pretrained(hub_id, use_safetensors=True, **_attn_kwargs(attn_implementation))
    except OSError as exc:
        raise HFModelError(f"could not load the weights of {hub_id!r} ({str(exc).splitlines()[0]}); "
                           "pass a local folder instead") from None


def load_hf_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in a model folder (transformers' ``AutoTokenizer``, offline).

    Raises:
        HFModelError: the folder has no tokenizer files.
    """
    folder = Path(path)
    _check_tokenizer(folder)
    return AutoTokenizer.from_pretrained(str(folder))


def _check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HFModelError(f"{folder} has no tokenizer ({' / '.join(TOKENIZER_FILES)}): copy the model's "
                           "tokenizer files into the folder")
