"""The export formats: ``hf`` (a transformers folder), ``onnx`` (ONNX Runtime) and ``openvino`` (OpenVINO IR).

Each format says whether it is installed (:meth:`availability`), whether a model can take it (:meth:`refusal`,
one line why not), writes its files (:meth:`write`), and loads what it wrote the way a user's runtime does
(:meth:`load`), so that :func:`prunebench.export.check.check_artifact` compares the artifact itself, not the
model that produced it. ONNX and OpenVINO reuse the execution backends' exporters
(:func:`prunebench.backends.onnx.export_encoder`, :func:`prunebench.backends.openvino.convert_encoder`): one
export path for timing and for deployment.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from prunebench.backends.base import FP32, Tolerance, missing, require
from prunebench.export.check import ArtifactRunner
from prunebench.models.adapters import adapter_for
from prunebench.models.batch import Batch
from prunebench.models.io import is_hf_model
from prunebench.models.side_files import copy_side_files, side_files

#: The runtime formats' inputs (int64 ``[batch, seq]``, both axes dynamic) and output (``[batch, seq, hidden]``).
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "hidden"
#: The hf format: the same model in transformers' own modules, so only summation order may differ (measured 0 on
#: the tiny models and MiniLM: the same kernels run).
HF_TOLERANCE = Tolerance(max_abs=1e-5, note="the same model in transformers: at most summation order differs")


class ExportFormat(Protocol):
    """What ``prunebench export --format NAME`` writes and how it is checked."""

    name: ClassVar[str]
    description: ClassVar[str]
    tolerance: ClassVar[Tolerance]
    #: Files the format writes (besides the model's side files); ``--force`` replaces these.
    files: ClassVar[tuple[str, ...]]
    #: The packages whose versions the record keeps.
    packages: ClassVar[tuple[str, ...]]

    def availability(self) -> str | None:
        """None when its packages are installed, else one line naming the extra to install."""

    def refusal(self, model: nn.Module) -> str | None:
        """None when ``model`` can be written in this format, else one line saying why not."""

    def write(self, model: nn.Module, out: Path, source: Path) -> dict[str, Any]:
        """Write ``model`` (loaded from ``source``) into the existing folder ``out``; what a user needs to load it."""

    def load(self, out: Path, model: nn.Module) -> ArtifactRunner:
        """The artifact in ``out`` as its runtime runs it (never the folder's own code)."""


def _runtime_files(source: Path, out: Path) -> bool:
    """Copy the tokenizer and sentence-transformers files of ``source`` beside a runtime artifact; any copied?"""
    files, folders = side_files(source)  # checked again: the folder may have changed since the up-front check
    copy_side_files(files, folders, out)
    return bool(files)


def _io_info(model: nn.Module) -> dict[str, Any]:
    config = adapter_for(model).config_dict()
    hidden = config.get("hidden_size", config.get("d_model"))  # HF adapters' name, prunebench's encoder's
    return {"inputs": {name: {"dtype": "int64", "shape": ["batch", "seq"]} for name in INPUTS},
            "outputs": {OUTPUT: {"dtype": "float32", "shape": ["batch", "seq", hidden]}}}


def _feeds(batch: Batch) -> dict[str, np.ndarray]:
    ids = batch["input_ids"]
    mask = batch.get("attention_mask", torch.ones_like(ids))
    return {"input_ids": ids.cpu().numpy().astype(np.int64), "attention_mask": mask.cpu().numpy().astype(np.int64)}


class HfFormat:
    """A transformers folder: plain where the shape allows, else prunebench's model type (``trust_remote_code``)."""

    name: ClassVar[str] = "hf"
    description: ClassVar[str] = ("a transformers folder (AutoModel, SentenceTransformer; per-layer shapes need "
                                  "trust_remote_code=True)")
    tolerance: ClassVar[Tolerance] = HF_TOLERANCE
    files: ClassVar[tuple[str, ...]] = ("config.json", "model.safetensors", "prunebench_hf.json",
                                        "modeling_prunebench.py")
    packages: ClassVar[tuple[str, ...]] = ("transformers", "safetensors")

    def availability(self) -> str | None:
        return missing("transformers", "hf")

    def refusal(self, model: nn.Module) -> str | None:
        if is_hf_model(model):
            return None
        return ("it holds prunebench's own encoder, which is no transformers architecture; export it with "
                "--format onnx or --format openvino")

    def write(self, model: nn.Module, out: Path, source: Path) -> dict[str, Any]:
        from prunebench.models.hf import MANIFEST_FILE, save_hf_model
        from prunebench.models.hf.io import read_manifest
        from prunebench.models.hf.portable import AUTO_CLASSES

        metadata: dict[str, Any] = {}
        if (source / MANIFEST_FILE).is_file():  # keep the pruning provenance of a prunebench-saved folder
            metadata = dict(read_manifest(source).get("metadata") or {})
        save_hf_model(model, out, source=source, metadata={**metadata, "exported_from": str(source.absolute())})
        plain = bool(read_manifest(out)["plain_transformers"])
        trust = "" if plain else ", trust_remote_code=True"
        loads = [f"transformers.{AUTO_CLASSES[adapter_for(model).head_kind]}.from_pretrained(DIR{trust})"]
        if (out / "modules.json").is_file():
            loads.append(f"sentence_transformers.SentenceTransformer(DIR{trust})")
        return {"plain_transformers": plain, "loads_with": loads,
                "tokenizer": (out / "tokenizer_config.json").is_file() or (out / "tokenizer.json").is_file()}

    def load(self, out: Path, model: nn.Module) -> ArtifactRunner:
        """The folder through transformers' ``from_pretrained``, with the class its ``auto_map`` names taken from
        prunebench's own copy of the modelling file (checked byte for byte against the folder's): prunebench never
        imports a folder's code, even one it wrote."""
        from prunebench.models.hf.families import class_for_architecture
        from prunebench.models.hf.io import read_manifest
        from prunebench.models.hf.portable import MODELLING_FILE, modelling_source, template_class

        architecture = type(model).__name__
        if read_manifest(out)["plain_transformers"]:
            cls = class_for_architecture(architecture)
        else:
            if (out / MODELLING_FILE).read_bytes() != modelling_source():
                raise ValueError(f"{out / MODELLING_FILE} is not the modelling file prunebench wrote")
            cls = template_class(architecture)
        loaded, info = cls.from_pretrained(str(out), trust_remote_code=False, local_files_only=True,
                                           use_safetensors=True, output_loading_info=True)
        bad = {k: sorted(v) for k, v in info.items() if v}
        if bad:  # a missing or mismatched tensor would load as random weights: never acceptable
            key, names = next(iter(bad.items()))
            raise ValueError(f"transformers loads {out} with {key.replace('_', ' ')}: {', '.join(map(str, names[:3]))}")
        loaded.eval()
        kind = adapter_for(loaded).head_kind

        def run(batch: Batch) -> dict[str, torch.Tensor]:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            with torch.inference_mode():
                result = {OUTPUT: loaded.base_model(**inputs).last_hidden_state}
                if kind != "base":
                    result["outputs"] = loaded(**inputs).logits
            return result

        return run


class OnnxFormat:
    """``model.onnx`` for ONNX Runtime: fp32, dynamic batch and sequence axes, the tokenizer beside it."""

    name: ClassVar[str] = "onnx"
    description: ClassVar[str] = "model.onnx for ONNX Runtime (input_ids, attention_mask -> hidden)"
    tolerance: ClassVar[Tolerance] = FP32
    files: ClassVar[tuple[str, ...]] = ("model.onnx",)
    packages: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")

    def availability(self) -> str | None:
        return missing("onnx", "onnx") or missing("onnxruntime", "onnx")

    def refusal(self, model: nn.Module) -> str | None:
        return None

    def write(self, model: nn.Module, out: Path, source: Path) -> dict[str, Any]:
        from prunebench.backends.onnx import OPSET, export_encoder

        export_encoder(model, out / "model.onnx", with_mask=True)
        return {**_io_info(model), "exporter": "torch.onnx.export(dynamo=False)", "opset": OPSET,
                "loads_with": ["onnxruntime.InferenceSession('DIR/model.onnx')"],
                "tokenizer": _runtime_files(source, out)}

    def load(self, out: Path, model: nn.Module) -> ArtifactRunner:
        ort = require("onnxruntime", "onnx")
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])

        def run(batch: Batch) -> dict[str, torch.Tensor]:
            return {OUTPUT: torch.from_numpy(np.asarray(session.run([OUTPUT], _feeds(batch))[0], np.float32))}

        return run


class OpenVinoFormat:
    """OpenVINO IR (``model.xml`` + ``model.bin``), fp32 weights, dynamic batch and sequence axes."""

    name: ClassVar[str] = "openvino"
    description: ClassVar[str] = "model.xml + model.bin for OpenVINO (input_ids, attention_mask -> hidden)"
    tolerance: ClassVar[Tolerance] = FP32
    files: ClassVar[tuple[str, ...]] = ("model.xml", "model.bin")
    packages: ClassVar[tuple[str, ...]] = ("openvino",)

    def availability(self) -> str | None:
        return missing("openvino", "openvino")

    def refusal(self, model: nn.Module) -> str | None:
        from prunebench.backends.openvino import empty_block_reason

        reason = empty_block_reason(model)
        return None if reason is None else f"{reason}; export it with --format onnx or --format hf"

    def write(self, model: nn.Module, out: Path, source: Path) -> dict[str, Any]:
        from prunebench.backends.openvino import convert_encoder

        ov = require("openvino", "openvino")
        converted = convert_encoder(model, with_mask=True)
        converted.outputs[0].get_tensor().set_names({OUTPUT})  # the same output name as the ONNX export
        # fp16 compression is save_model's default; the artifact keeps the model's fp32 weights.
        ov.save_model(converted, str(out / "model.xml"), compress_to_fp16=False)
        return {**_io_info(model), "converter": "openvino.convert_model(torch module)",
                "loads_with": ["openvino.Core().compile_model('DIR/model.xml', 'CPU', "
                               "{'INFERENCE_PRECISION_HINT': 'f32'})"],
                "tokenizer": _runtime_files(source, out)}

    def load(self, out: Path, model: nn.Module) -> ArtifactRunner:
        ov = require("openvino", "openvino")
        core = ov.Core()
        # f32 pinned: on CPUs with native bf16 the plugin would otherwise run bf16 (see backends/openvino.py).
        compiled = core.compile_model(core.read_model(str(out / "model.xml")), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})

        def run(batch: Batch) -> dict[str, torch.Tensor]:
            result = compiled.create_infer_request().infer(_feeds(batch))
            return {OUTPUT: torch.from_numpy(np.array(result[compiled.output(OUTPUT)], dtype=np.float32))}

        return run


def versions(*modules: str) -> dict[str, str]:
    """Installed versions of ``modules`` (those importable), for the export record."""
    out = {}
    for name in modules:
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):
            continue
    return out
