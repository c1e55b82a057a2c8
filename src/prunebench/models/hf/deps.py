"""The optional ``transformers`` dependency: detected, never assumed (importable without it)."""

from __future__ import annotations

import importlib.util

from prunebench.errors import PrunebenchError, install_hint

#: What the user runs to get Hugging Face support.
INSTALL_HINT = install_hint("hf")


class HFModelError(PrunebenchError):
    """A Hugging Face model folder or architecture that prunebench cannot use (one-line message)."""


def transformers_available() -> bool:
    """Whether ``transformers`` can be imported (without importing it)."""
    return importlib.util.find_spec("transformers") is not None


def require_transformers() -> None:
    """Raise a one-line :class:`HFModelError` naming the extra to install unless transformers is present."""
    if not transformers_available():
        raise HFModelError(f"Hugging Face models need the transformers package: {INSTALL_HINT}")
