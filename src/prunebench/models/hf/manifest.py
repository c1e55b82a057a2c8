"""The shape manifest of an HF adapter: what a saved pruned model is rebuilt from (mixed into the adapter).

A manifest holds the per-layer widths (heads, head width, neurons, skipped), the original indices of the kept
layers, the model class and its HF config; :meth:`HFManifestMixin.build_shaped` is its inverse.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn


class HFManifestMixin:
    """Manifest and rebuild; expects the lookups and edits of :class:`HFEncoderAdapter`."""

    @classmethod
    def from_manifest(cls, config: dict[str, Any], manifest: dict[str, Any]) -> nn.Module:
        """A model with fresh weights and exactly the saved widths (``manifest["hf_config"]`` is its HF config).

        Raises:
            ValueError / KeyError: an architecture this adapter does not handle, or a malformed manifest.
        """
        model_cls = next((c for c in cls.model_classes if c.__name__ == manifest["architecture"]), None)
        if model_cls is None:
            raise ValueError(f"the {cls.name} adapter has no architecture {manifest['architecture']!r}")
        return cls.build_shaped(model_cls, model_cls.config_class.from_dict(manifest["hf_config"]), manifest)

    @classmethod
    def build_shaped(cls, model_cls: type, hf_config: Any, manifest: dict[str, Any],
                     attn_implementation: str | None = None) -> nn.Module:
        """``model_cls`` built from ``hf_config`` (fresh weights), then cut to the manifest's widths.

        Raises:
            ValueError: the manifest does not fit the config (layer count, head width).
        """
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = model_cls._from_config(hf_config, **kwargs)
        adapter = cls(model)
        widths = manifest["layers"]
        if len(widths) != adapter.n_layers:
            raise ValueError(f"the manifest has {len(widths)} layers, the config {adapter.n_layers}")
        for i, w in enumerate(widths):
            if int(w["head_dim"]) != adapter.head_dim(i):
                raise ValueError(f"layer {i} head width {w['head_dim']} is not the config's {adapter.head_dim(i)}")
            for kind in ("heads", "neurons"):
                if int(w[kind]) != adapter.group_count(kind, i):
                    adapter.keep_groups_(kind, i, range(int(w[kind])))  # shapes only; weights are loaded later
            if w.get("skipped"):
                adapter.zero_layer_(i)
        kept = list(manifest.get("kept_layers", range(adapter.n_layers)))
        if kept != list(range(adapter.n_layers)):  # recorded only once layers were removed, as keep_layers_ does
            model.config.prunebench_kept_layers = kept
        return model.eval()

    def shape_manifest(self) -> dict[str, Any]:
        """Per-layer widths (heads, neurons, skipped) and the original indices of the kept layers."""
        return {"adapter": self.name, "architecture": type(self.model).__name__,
                "kept_layers": self.kept_layers(), "layers": self.layer_widths(),
                "hf_config": self.hf_config_dict()}

    def hf_config_dict(self) -> dict[str, Any]:
        """The HF config as JSON, without transformers' private keys (where it was loaded from, ...)."""
        doc = json.loads(self.model.config.to_json_string(use_diff=False))
        return {k: v for k, v in doc.items() if not k.startswith("_")}

    def plain_loadable(self) -> bool:
        """Whether plain ``transformers`` rebuilds this shape from ``config.json`` alone.

        True when every layer keeps the config's head count, no layer is skipped and the FFN width is uniform.
        """
        heads = int(getattr(self.model.config, self.layout.config_heads))
        widths = self.layer_widths()
        return (all(w["heads"] == heads and not w["skipped"] for w in widths)
                and len({w["neurons"] for w in widths}) == 1)
