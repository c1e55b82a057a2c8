"""Save and load models as ``model.safetensors`` + ``config.json``; never pickle.

``config.json`` names the model's architecture adapter (``adapter``) and holds its ``config_dict()`` and
``shape_manifest()`` (every per-layer width), so a physically pruned model reloads as the same smaller
model: loading asks the named adapter class to rebuild an empty model from them (``from_manifest``) and
checks the file against it tensor by tensor, reporting the first problem in one line. Files written before
the adapter seam (no ``adapter`` key) are prunebench encoders whose config holds the widths.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from prunebench._version import __version__
from prunebench.errors import CheckpointError
from prunebench.models.adapter import EncoderAdapter
from prunebench.models.adapters import adapter_class, adapter_for
from prunebench.models.config import EncoderConfig, LayerConfig, count_parameters
from prunebench.user_files import UnsafeFileError, read_json

FORMAT = "prunebench-model"
SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: The manifest prunebench writes next to a Hugging Face model it saved (see ``models.hf.io``).
HF_MANIFEST_FILE = "prunebench_hf.json"
MEMINFO = Path("/proc/meminfo")
#: Bytes per parameter of a loaded model (float32).
PARAM_BYTES = 4


def available_memory_bytes(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes, or None where the kernel does not report it."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits_memory(config: EncoderConfig, where: str, available: int | None = None) -> None:
    """Refuse an architecture whose float32 weights alone exceed the available memory, before allocating it.

    Args:
        config: the architecture to build.
        where: names the source in the message (a path).
        available: bytes available (None: read :func:`available_memory_bytes`; unknown = no check).

    Raises:
        CheckpointError: the parameter bytes exceed ``available``.
    """
    available = available_memory_bytes() if available is None else available
    need = count_parameters(config)["total"] * PARAM_BYTES
    if available is not None and need > available:
        raise CheckpointError(
            f"{where}: the architecture has {need // PARAM_BYTES:,} parameters ({need / 2**30:,.1f} GiB as float32), "
            f"more than the {available / 2**30:,.1f} GiB of memory available; refusing to allocate it"
        )


def check_batch_fits_memory(config: EncoderConfig, batch_size: int, seq_len: int, where: str,
                            available: int | None = None, *, training: bool = True) -> None:
    """Refuse a batch whose activations cannot fit the available memory, before allocating anything.

    The estimate is a lower bound, so it never refuses a batch that fits. Training: the float32 output logits
    over the vocabulary and their gradient (``2 * B * S * V``), plus per layer the residual stream, the FFN
    activation and one attention score matrix per head, each kept once for the backward pass. A forward pass
    (``training=False``, what a timing cell runs): the residual stream in and out, and the largest layer's
    q/k/v, FFN activation and scores, which must exist at once. A ``--batch-size 100000`` then fails here with
    one line instead of an allocator traceback minutes into the work.

    Raises:
        CheckpointError: the estimate exceeds ``available`` (None: read :func:`available_memory_bytes`;
            unknown = no check).
    """
    available = available_memory_bytes() if available is None else available
    tokens = batch_size * seq_len
    if training:
        per_token = 2 * config.vocab_size + sum(
            4 * config.d_model + layer.d_ff + layer.n_heads * seq_len for layer in config.layers)
    else:
        per_token = 2 * config.d_model + max(
            (3 * layer.attn_dim + layer.d_ff + layer.n_heads * seq_len for layer in config.layers), default=0)
    need = tokens * per_token * PARAM_BYTES
    if available is not None and need > available:
        raise CheckpointError(
            f"{where}: a batch of {batch_size:,} sequences of {seq_len} tokens needs at least {need / 2**30:,.1f} GiB "
            f"of activations, more than the {available / 2**30:,.1f} GiB of memory available; use a smaller "
            "batch size")


def shape_config(model: nn.Module) -> EncoderConfig:
    """The widths of any model an adapter understands (ours, a Hugging Face encoder, a pruned one), as the
    :class:`EncoderConfig` :func:`check_batch_fits_memory` reads: per layer its heads, the attention width
    (the input columns of the attention output projection) and FFN neurons, the residual width, the vocabulary.
    Only module attributes are read, so a model built on the meta device (no weights) describes itself too."""
    adapter = adapter_for(model)
    layers, d_model = [], 1
    for i in range(adapter.n_layers):
        heads, out = adapter.group_count("heads", i), adapter.output_linear("heads", i)
        d_model = out.out_features
        layers.append(LayerConfig(heads, out.in_features // heads if heads else 1, adapter.group_count("neurons", i)))
    return EncoderConfig(vocab_size=adapter.vocab_size, d_model=d_model, layers=tuple(layers))


def nonfinite_tensor(model: torch.nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN or Inf, or None if every value is finite."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None




def check_finite(model: torch.nn.Module, where: str | Path) -> None:
    """Refuse a loaded model with a NaN or Inf weight: every command that loads a model checks this, since
    pruning, timing or scoring such a model gives numbers that mean nothing (and prune would save it on).

    Raises:
        CheckpointError: naming the file and the first tensor that is not finite.
    """
    bad = nonfinite_tensor(model)
    if bad is not None:
        raise CheckpointError(f"{where} has NaN/Inf weights (tensor {bad!r}); refusing a model whose outputs "
                              "mean nothing")


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.save_file`` whose failures are one line: a full disk is an ``ENOSPC`` OSError naming the
    file (the CLI says "disk full"), anything else a CheckpointError; the partly written file is removed.

    safetensors raises its own ``SafetensorError`` with the OS error only in its text, which reached users as
    a traceback.
    """
    try:
        save_file(tensors, str(path), metadata=metadata)
    except (SafetensorError, OSError) as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        text = str(exc.args[0]) if exc.args else str(exc)
        if "No space left" in text or "os error 28" in text:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise CheckpointError(f"cannot write {path}: {text.splitlines()[0] if text else type(exc).__name__}") from None


def save_model(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None,
               overwrite: bool = False) -> Path:
    """Write ``model`` to ``directory`` (created if needed).

    A folder that holds other files is refused unless it is a prunebench model folder (saved again in place)
    or ``overwrite`` is given: the model's files would mix with files it knows nothing of.

    A Hugging Face model is saved by :func:`prunebench.models.hf.save_hf_model` (HF config + shape manifest).

    Args:
        model: any model an adapter understands; its current (possibly shrunk) architecture is recorded.
        directory: target folder.
        metadata: optional JSON-ready extras stored under ``"metadata"`` (provenance, pruning report, ...).
        overwrite: write into a non-empty folder that is no prunebench model folder (its other files stay).

    Returns:
        The folder path.

    Raises:
        CheckpointError: ``directory`` is a file, or a non-empty folder that is no prunebench model folder.
    """
    check_save_target(Path(directory), overwrite)
    if is_hf_model(model):
        from prunebench.models.hf import save_hf_model

        return save_hf_model(model, directory, metadata=metadata)
    adapter = adapter_for(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Write to temporary names and rename, so a crash never leaves a half-written checkpoint behind.
    tmp_weights = out / (WEIGHTS_FILE + ".tmp")
    write_safetensors(tensors, tmp_weights, {"format": FORMAT})
    doc = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "prunebench_version": __version__,
        "adapter": adapter.name,
        "config": adapter.config_dict(),
        "shape_manifest": adapter.shape_manifest(),
        "metadata": metadata or {},
    }
    tmp_config = out / (CONFIG_FILE + ".tmp")
    tmp_config.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp_weights.replace(out / WEIGHTS_FILE)
    tmp_config.replace(out / CONFIG_FILE)
    return out


def is_prunebench_folder(directory: Path) -> bool:
    """Whether ``directory`` holds a model prunebench saved (our config, or the manifest of an HF save)."""
    if (directory / HF_MANIFEST_FILE).is_file():
        return True
    try:
        doc = read_json(directory / CONFIG_FILE)
    except (UnsafeFileError, OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def check_save_target(directory: Path, overwrite: bool = False) -> None:
    """Refuse to save into a file, or into a non-empty folder that is no prunebench model folder (unless
    ``overwrite``); see :func:`save_model`."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise CheckpointError(f"cannot save a model to {directory}: it is a file, not a folder")
    if overwrite or not any(directory.iterdir()) or is_prunebench_folder(directory):
        return
    raise CheckpointError(f"cannot save a model to {directory}: the folder holds other files and no prunebench "
                          "model; choose an empty or new folder (or pass overwrite=True)")


def read_document(directory: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a saved model and check its format and schema version.

    Raises:
        CheckpointError: the folder or file is missing, not JSON, or not a prunebench model.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise CheckpointError(f"no model folder at {folder}")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a prunebench model: {CONFIG_FILE} is missing")
    try:
        doc = read_json(path)  # bounded: a FIFO, a device or a huge file named config.json is one line
    except UnsafeFileError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a prunebench model config (format is not {FORMAT!r})")
    if not isinstance(doc.get("metadata", {}), (dict, type(None))):
        # Checked on every load, not only by read_config: prune would otherwise save such a folder's
        # metadata on into its output.
        raise CheckpointError(f"{path}: field 'metadata' must be a JSON object")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} has schema_version {version!r}; this prunebench reads up to {SCHEMA_VERSION}"
        )
    return doc


def read_config(directory: str | Path) -> tuple[EncoderConfig, dict[str, Any]]:
    """Read and validate ``config.json`` of a saved prunebench encoder.

    Returns:
        The architecture (with the saved per-layer widths) and the stored metadata dict.

    Raises:
        CheckpointError: the folder or file is missing, not JSON, not a prunebench model, or not an encoder.
    """
    doc = read_document(directory)
    path = Path(directory) / CONFIG_FILE
    name = doc.get("adapter", EncoderAdapter.name)
    if name != EncoderAdapter.name:
        raise CheckpointError(f"{path} holds a {name!r} model, not a prunebench encoder; use load_model")
    config = _encoder_config(doc, path)
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: metadata must be a JSON object")
    return config, dict(metadata)


def _encoder_config(doc: dict[str, Any], path: Path) -> EncoderConfig:
    """The encoder architecture of a document, parsed without building the model (so nothing is allocated).

    The widths are the config's own, the manifest's ``layers`` only where the config has none, as in
    :meth:`EncoderAdapter.from_manifest`.
    """
    try:
        config, manifest = doc["config"], doc.get("shape_manifest") or {}
        if not config.get("layers") and manifest.get("layers"):
            config = {**config, "layers": manifest["layers"]}
        return EncoderConfig.from_dict(config)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} holds an invalid architecture: {exc}") from None


def _fuse_legacy_qkv(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints written before q/k/v were fused hold three projections per layer; stack them.

    The fused layout is ``[q | k | v]`` row blocks, so stacking reproduces the old model exactly.
    """
    out = dict(tensors)
    for name in [n for n in tensors if n.endswith("attn.q_proj.weight")]:
        prefix = name[: -len("q_proj.weight")]
        parts = [prefix + f"{p}_proj.{kind}" for kind in ("weight", "bias") for p in "qkv"]
        if not all(p in out for p in parts):
            continue  # left as is: the missing/unexpected tensor check names what is wrong
        for kind in ("weight", "bias"):
            out[prefix + f"qkv_proj.{kind}"] = torch.cat([out.pop(prefix + f"{p}_proj.{kind}") for p in "qkv"])
    return out


def is_hf_model(model: object) -> bool:
    """Whether ``model`` is a Hugging Face transformers module (decided by its class's module, no import)."""
    return type(model).__module__.startswith("transformers.")


def is_hf_folder(directory: str | Path) -> bool:
    """Whether ``directory`` holds a transformers ``config.json`` (``model_type``, not our format)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        doc = read_json(path)  # bounded: a 10 GB or endless config.json is no HF folder
    except UnsafeFileError:
        return False  # not an HF folder; read_document then names what is wrong with the file
    return isinstance(doc, dict) and "model_type" in doc and doc.get("format") != FORMAT


def _rebuild(folder: Path, doc: dict[str, Any]) -> nn.Module:
    """An empty model of the saved architecture, built by the adapter class the file names."""
    path = folder / CONFIG_FILE
    try:
        cls = adapter_class(doc.get("adapter", EncoderAdapter.name))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if cls is EncoderAdapter:
        check_fits_memory(_encoder_config(doc, path), str(path))  # before anything is allocated
    try:
        return cls.from_manifest(doc["config"], doc.get("shape_manifest") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} holds an invalid architecture: {exc}") from None


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the exact architecture saved in ``directory`` and load its weights.

    A folder with a transformers ``config.json`` is loaded by :func:`prunebench.models.hf.load_hf_model`
    (needs the ``hf`` extra; a pruned one is rebuilt from its shape manifest).

    Returns:
        The model in eval mode on ``device`` (a ``TransformerEncoder`` for prunebench's own encoder).

    Raises:
        CheckpointError: with a one-line reason (missing file, truncated file, missing or unexpected
            tensor, or a tensor whose shape differs from the config's).
    """
    folder = Path(directory)
    if is_hf_folder(folder):
        from prunebench.models.hf import load_hf_model

        return load_hf_model(folder, device=device)
    doc = read_document(folder)
    model = _rebuild(folder, doc)  # a bad architecture is reported before the weights are read
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is corrupted or truncated ({exc})") from None
    tensors = _fuse_legacy_qkv(tensors)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{weights_path} lacks tensor {missing[0]!r} ({len(missing)} missing in all)")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(f"{weights_path} has unexpected tensor {unexpected[0]!r} not in its config")
    for name, ref in expected.items():
        found = tensors[name]
        if tuple(found.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} has shape {tuple(found.shape)}, config expects {tuple(ref.shape)}"
            )
        if found.dtype != ref.dtype:
            raise CheckpointError(f"{weights_path}: tensor {name!r} has dtype {found.dtype}, expected {ref.dtype}")
    model.load_state_dict(tensors, strict=True)
    check_finite(model, weights_path)
    model.eval()
    return model.to(device)
