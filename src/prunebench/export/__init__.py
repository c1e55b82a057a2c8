"""``prunebench export``: a pruned model as the files a user's runtime loads, each checked after it was written.

:func:`export_model` refuses bad input before any folder exists (an unknown or uninstalled format, a folder that
is not a model, an ``--out`` that is not empty, a model the format cannot take: one line each), writes the format's
files with the model's tokenizer and sentence-transformers files beside them, loads what it wrote as the runtime
does and compares it with prunebench's own forward on padded probe batches of two shapes
(:mod:`prunebench.export.check`). The result is stored beside the artifact as ``export.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench._version import __version__
from prunebench.errors import CheckpointError, PrunebenchError
from prunebench.export.check import check_artifact
from prunebench.export.formats import ExportFormat, HfFormat, OnnxFormat, OpenVinoFormat, versions
from prunebench.models.io import is_hf_model, load_model
from prunebench.models.side_files import SIDE_FILES, ST_MODULE_FOLDERS, side_files
from prunebench.outdir import MODEL_FILES, check_model_out, clear_model_files
from prunebench.registry import Registry
from prunebench.user_files import UnsafeFileError

#: The check's record, beside the artifact.
EXPORT_FILE = "export.json"

FORMATS: Registry[ExportFormat] = Registry("export format")
for _format in (HfFormat(), OnnxFormat(), OpenVinoFormat()):
    FORMATS.add(_format.name, _format)


class ExportError(PrunebenchError):
    """The export cannot be made as asked (one line, before anything is written)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote: the folder and the record stored in it as ``export.json``."""

    out: Path
    record: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Whether the artifact loaded and matched prunebench's model within the format's tolerance."""
        return bool(self.record["check"]["ok"])


def _replaced_names() -> tuple[str, ...]:
    """Everything an export may write (``--force`` removes exactly these from ``--out``)."""
    names = {EXPORT_FILE, *MODEL_FILES, *SIDE_FILES, *ST_MODULE_FOLDERS}
    for _, fmt in FORMATS:
        names.update(fmt.files)
    return tuple(sorted(names))


def export_model(source: str | Path, format_name: str, out: str | Path, *, force: bool = False) -> ExportResult:
    """Export the model saved in ``source`` as ``format_name`` into ``out``, then check it.

    Args:
        source: a model folder (prunebench's own, a prunebench-saved HF folder or a plain transformers folder).
        format_name: a key of :data:`FORMATS`.
        out: the folder to write (new or empty; with ``force``, the files an export writes are replaced).
        force: write into a non-empty ``out``.

    Returns:
        The folder and its record; ``result.ok`` is False when the artifact did not load or did not match
        (its files and ``export.json`` are kept to inspect).

    Raises:
        ValueError: an unknown format (names the valid ones).
        ExportError, CheckpointError, OutDirError: bad input, one line, before any folder is created.
    """
    fmt = FORMATS.get(format_name)
    reason = fmt.availability()
    if reason is not None:
        raise ExportError(f"--format {fmt.name} is not available: {reason}")
    target = check_model_out(out, force=force)
    src = Path(source)
    if not src.is_dir():
        raise ExportError(f"no model folder at {str(source)!r}: export reads a saved model folder")
    if target.absolute().resolve() == src.absolute().resolve():
        raise ExportError(f"--out {target} is the model folder itself; choose another folder")
    model = load_model(src)
    why = fmt.refusal(model)
    if why is not None:
        raise ExportError(f"{src} cannot be exported as {fmt.name}: {why}")
    try:
        side_files(src)  # a bad tokenizer or pooling file is refused now, not after the folder exists
    except UnsafeFileError as exc:
        raise CheckpointError(str(exc)) from None
    if force and target.is_dir():
        clear_model_files(target, _replaced_names())
    target.mkdir(parents=True, exist_ok=True)
    info = fmt.write(model, target, src)
    try:
        check = check_artifact(model, fmt.load(target, model), fmt.tolerance, fmt.name)
    except Exception as exc:  # whatever the runtime raised: the artifact does not load, which the record says
        check = {"ok": False, "tolerance": fmt.tolerance.to_dict(), "error": f"{type(exc).__name__}: {exc}"}
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    record = {"format": fmt.name, "prunebench_version": __version__, "source": str(src.absolute()),
              "architecture": type(model).__name__, "files": files, **info, "check": check,
              "versions": versions("torch", *(("transformers",) if is_hf_model(model) else ()), *fmt.packages)}
    (target / EXPORT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return ExportResult(target, record)


__all__ = ["EXPORT_FILE", "FORMATS", "ExportError", "ExportResult", "export_model"]
