"""The prunable encoder, its presets and its checkpoint format."""

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
    "IGNORE_INDEX",
    "PRESETS",
    "Batch",
    "EncoderConfig",
    "EncoderLayer",
    "FeedForward",
    "LayerConfig",
    "SelfAttention",
    "TaskHead",
    "TransformerEncoder",
    "build_encoder",
    "count_parameters",
    "create_model",
    "load_model",
    "model_names",
    "preset_config",
    "read_config",
    "save_model",
    "task_loss",
]
