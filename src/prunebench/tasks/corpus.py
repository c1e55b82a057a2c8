"""The built-in corpus: the Python standard library's own ``.py`` files on this machine.

Every machine with Python has this text and nobody on this project wrote it, so the built-in task works
offline. Files are split into train / validation / test *by file*, from a hash of each file's path relative
to the stdlib root, so the split never depends on listing order and a file never leaks across splits.
Another Python version means another corpus, hence the fingerprint recorded with every result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Folders never read: installed third-party code, bytecode, the stdlib's test suites, and the codec
#: tables of ``encodings`` (generated lookup tables, not prose or code anyone wrote by hand).
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "encodings"})
#: Percent of files (by path hash) in each split; the rest of 100 is train.
VAL_PERCENT = 10
TEST_PERCENT = 10


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relpath: str) -> str:
    """The split a file belongs to, from a stable hash of its relative path (POSIX separators)."""
    bucket = int.from_bytes(hashlib.sha256(relpath.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < TEST_PERCENT:
        return "test"
    if bucket < TEST_PERCENT + VAL_PERCENT:
        return "val"
    return "train"


def _path_key(relpath: str) -> bytes:
    return hashlib.sha256(b"order:" + relpath.encode("utf-8")).digest()


@dataclass(frozen=True)
class CorpusFile:
    """One source file of the corpus."""

    relpath: str
    split: str
    path: Path


def list_corpus(root: str | Path | None = None) -> list[CorpusFile]:
    """Every eligible ``.py`` file under ``root`` (default: the stdlib), sorted by relative path."""
    base = Path(root) if root is not None else stdlib_root()
    if not base.is_dir():
        raise ValueError(f"corpus root {base} is not a folder")
    found: list[CorpusFile] = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                path = Path(folder) / name
                rel = path.relative_to(base).as_posix()
                found.append(CorpusFile(rel, split_of(rel), path))
    found.sort(key=lambda f: f.relpath)
    return found


def select_files(files: list[CorpusFile], max_files: int | None) -> dict[str, list[CorpusFile]]:
    """Group files by split, keeping at most ``max_files`` in all (each split keeps at least one).

    The cap keeps the split proportions (80/10/10) and picks files in a fixed pseudo-random order
    (hash of the path), so a capped corpus is a deterministic sample, not the first folders alphabetically.
    """
    groups: dict[str, list[CorpusFile]] = {s: [f for f in files if f.split == s] for s in SPLITS}
    if max_files is not None:
        if max_files < len(SPLITS):
            raise ValueError(f"max_files must be at least {len(SPLITS)} (one file per split), got {max_files}")
        shares = {"val": VAL_PERCENT / 100, "test": TEST_PERCENT / 100}
        quota = {s: max(1, round(max_files * shares[s])) for s in shares}
        quota["train"] = max(1, max_files - quota["val"] - quota["test"])
        for s in SPLITS:
            ordered = sorted(groups[s], key=lambda f: _path_key(f.relpath))[: quota[s]]
            groups[s] = sorted(ordered, key=lambda f: f.relpath)
    for s in SPLITS:
        if not groups[s]:
            raise ValueError(f"the corpus has no files in the {s!r} split; use a larger corpus")
    return groups


def read_text(path: Path) -> str:
    """A source file as text; undecodable bytes become U+FFFD rather than failing the whole corpus."""
    return path.read_bytes().decode("utf-8", errors="replace")


def read_split(files: list[CorpusFile], max_chars: int | None = None) -> list[str]:
    """Texts of ``files`` in order, stopping once ``max_chars`` characters were collected (last one cut)."""
    texts: list[str] = []
    total = 0
    for f in files:
        text = read_text(f.path)
        if max_chars is not None and total + len(text) > max_chars:
            remaining = max_chars - total
            if remaining > 0:
                texts.append(text[:remaining])
            break
        texts.append(text)
        total += len(text)
    return texts


def corpus_fingerprint(groups: dict[str, list[CorpusFile]]) -> dict[str, Any]:
    """Python version, file counts and a content hash of the selected files (JSON-ready).

    The hash covers every relative path, its split and its bytes, so any edit, addition or removal of a
    file, or a different interpreter, gives a different fingerprint.
    """
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    for s in SPLITS:
        counts[s] = len(groups[s])
        for f in groups[s]:
            digest.update(f"{s}\0{f.relpath}\0".encode())
            digest.update(hashlib.sha256(f.path.read_bytes()).digest())
    return {
        "source": "python-stdlib",
        "python_version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "files": counts,
        "file_count": sum(counts.values()),
        "content_sha256": digest.hexdigest(),
    }
