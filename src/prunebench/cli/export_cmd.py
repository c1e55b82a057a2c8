"""``prunebench export``: write a (pruned) model as a transformers folder, ONNX or OpenVINO, checked after export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from prunebench.cli.common import console, folder_path


def _format_names() -> list[str]:
    from prunebench.export import FORMATS

    return FORMATS.names()


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    from prunebench.export import EXPORT_FILE, FORMATS

    lines = "; ".join(f"{name}: {fmt.description}" for name, fmt in FORMATS)
    p = sub.add_parser(
        "export", help="write a model where users load it (transformers, ONNX, OpenVINO), checked after export",
        description=f"Export the model saved in MODEL_DIR to --out as --format ({lines}). The tokenizer and "
        "sentence-transformers files travel with it. The artifact is then loaded as its runtime loads it and "
        f"compared with prunebench's own forward (max |diff|, cosine), printed and stored in {EXPORT_FILE}.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model folder (prunebench's or a transformers one)")
    p.add_argument("--format", required=True, dest="format_name", type=_format_arg, metavar="|".join(_format_names()),
                   help=f"one of: {', '.join(_format_names())}")
    p.add_argument("--out", required=True, type=folder_path, metavar="DIR",
                   help="output folder (new or empty; never inside a run folder)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out, replacing an earlier export")
    p.set_defaults(handler=run)


def _format_arg(value: str) -> str:
    if value not in _format_names():
        raise argparse.ArgumentTypeError(f"unknown format {value!r}; choose from: {', '.join(_format_names())}")
    return value


def _table(record: dict, out: Path) -> Table:
    check = record["check"]
    t = Table(title=f"prunebench export --format {record['format']} -> {out}")
    t.add_column("quantity")
    t.add_column("value")
    t.add_row("model", f"{record['architecture']} from {record['source']}")
    t.add_row("files", ", ".join(record["files"]))
    for name, row in check.get("outputs", {}).items():
        t.add_row(f"{name}: max |diff| / cosine", f"{row['max_abs']:.3g} / {row['cosine']:.8f}")
    tolerance = check["tolerance"]
    limits = [f"max |diff| <= {tolerance['max_abs']:g}" if tolerance.get("max_abs") is not None else "",
              f"cosine >= {tolerance['min_cosine']:g}" if tolerance.get("min_cosine") is not None else ""]
    t.add_row("tolerance", ", ".join(x for x in limits if x))
    shapes = ", ".join("x".join(map(str, s)) for s in check.get("probes", []))
    t.add_row("check", ("ok" if check["ok"] else "FAILED") + (f" (padded probes {shapes})" if shapes else ""))
    for line in record.get("loads_with", []):
        t.add_row("load it with", line)
    if not record.get("tokenizer", True):
        t.add_row("tokenizer", "none in MODEL_DIR: nothing copied")
    return t


def run(args: argparse.Namespace) -> int:
    """Export, print the check; exit 1 when the artifact does not load or does not match."""
    from prunebench.export import EXPORT_FILE, export_model

    result = export_model(args.model_dir, args.format_name, args.out, force=args.force)
    console().print(_table(result.record, result.out))
    if not result.ok:
        check = result.record["check"]
        reason = check.get("error") or next((r["message"] for r in check.get("outputs", {}).values()
                                             if r["message"]), "outputs differ")
        reason = " ".join(reason.split())
        sys.stderr.write(f"prunebench export: error: the exported artifact failed its check ({reason}); "
                         f"see {result.out / EXPORT_FILE}\n")
        return 1
    return 0
