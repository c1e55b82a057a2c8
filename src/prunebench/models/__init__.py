"""The prunable encoder, its presets, its checkpoint format and the architecture-adapter seam."""

from prunebench.models.adapter import EncoderAdapter
from prunebench.models.adapters import ADAPTERS, adapter_for, find_adapter
from prunebench.models.arch import GROUP_KINDS, ArchAdapter
from prunebench.models.batch import IGNORE_INDEX, Batch, task_loss
from prunebench.models.config import EncoderConfig, LayerConfig, TaskHead, count_parameters
from prunebench.models.encoder import (
    EncoderLayer,
    FeedForward,
    SelfAttention,
    TransformerEncoder,
    build_encoder,
)
from prunebench.models.io import load_model, read_config, save_model
from prunebench.models.presets import PRESETS, create_model, model_names, preset_config

__all__ = [
    "ADAPTERS",
    "GROUP_KINDS",
    "IGNORE_INDEX",
    "PRESETS",
    "ArchAdapter",
    "Batch",
    "EncoderAdapter",
    "EncoderConfig",
    "EncoderLayer",
    "FeedForward",
    "LayerConfig",
    "SelfAttention",
    "TaskHead",
    "TransformerEncoder",
    "adapter_for",
    "build_encoder",
    "count_parameters",
    "create_model",
    "find_adapter",
    "load_model",
    "model_names",
    "preset_config",
    "read_config",
    "save_model",
    "task_loss",
]
