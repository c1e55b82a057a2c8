"""prunebench: prune a transformer, then measure how much faster, smaller and less accurate it really is.

The public API is re-exported here; see the README for a tour.
"""

from prunebench._version import __version__
from prunebench.errors import CheckpointError, PrunebenchError
from prunebench.models import (
    EncoderConfig,
    LayerConfig,
    TransformerEncoder,
    count_parameters,
    create_model,
    load_model,
    save_model,
)

__all__ = [
    "CheckpointError",
    "EncoderConfig",
    "LayerConfig",
    "PrunebenchError",
    "TransformerEncoder",
    "__version__",
    "count_parameters",
    "create_model",
    "load_model",
    "save_model",
]
