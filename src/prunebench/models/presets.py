"""Named model sizes and the public ``create_model`` entry point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunebench.models.config import EncoderConfig
from prunebench.models.encoder import TransformerEncoder, build_encoder
from prunebench.registry import Registry
from prunebench.serde import reject_unknown


@dataclass(frozen=True)
class Preset:
    """A uniform encoder size."""

    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    dropout: float = 0.1
    max_positions: int = 512
    description: str = ""


PRESETS: Registry[Preset] = Registry("model")
PRESETS.add("small", Preset(10000, 128, 4, 2, 512, description="quick experiments, trains in ~1 minute"))
PRESETS.add("medium", Preset(30000, 512, 8, 4, 1024, description="the default model of `prunebench run`"))
PRESETS.add("large", Preset(30522, 768, 12, 12, 3072, description="BERT-base shape"))

#: Model names accepted by ``create_model``: the presets plus "custom" (every size given explicitly).
CUSTOM = "custom"

#: Keyword overrides ``create_model`` accepts.
OVERRIDES = (
    "vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "dropout", "max_positions",
    "head", "num_labels", "pad_token_id",
)
_SIZE_KEYS = ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff")


def model_names() -> list[str]:
    """Every name ``create_model`` accepts."""
    return [*PRESETS.names(), CUSTOM]


def preset_config(name: str, **overrides: Any) -> EncoderConfig:
    """The :class:`EncoderConfig` of preset ``name`` (or ``"custom"``) with ``overrides`` applied.

    Raises:
        ValueError: unknown name, unknown override, a custom model missing a size, or an invalid size.
    """
    reject_unknown(overrides, OVERRIDES, "model option(s)", list_valid=True)
    if name == CUSTOM:
        missing = [k for k in _SIZE_KEYS if overrides.get(k) is None]
        if missing:
            raise ValueError(f"a custom model needs every size; missing: {', '.join(missing)}")
        base: dict[str, Any] = {"dropout": 0.1, "max_positions": 512}
    else:
        if name not in PRESETS:
            raise ValueError(f"unknown model {name!r}; choose from: {', '.join(model_names())}")
        p = PRESETS.get(name)
        base = {
            "vocab_size": p.vocab_size, "d_model": p.d_model, "n_heads": p.n_heads, "n_layers": p.n_layers,
            "d_ff": p.d_ff, "dropout": p.dropout, "max_positions": p.max_positions,
        }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return EncoderConfig.uniform(**base)


def create_model(name: str, *, seed: int = 0, **overrides: Any) -> TransformerEncoder:
    """Build a freshly initialized encoder.

    Args:
        name: a preset (``small``, ``medium``, ``large``) or ``custom``.
        seed: initialization seed; the same seed gives bit-identical weights.
        **overrides: any of :data:`OVERRIDES`, e.g. ``d_model=256`` or ``head="cls", num_labels=3``.

    Example:
        >>> model = create_model("custom", vocab_size=100, d_model=32, n_heads=2, n_layers=1, d_ff=64)
    """
    return build_encoder(preset_config(name, **overrides), seed=seed)
