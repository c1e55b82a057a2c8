"""Reading files that come from a user's path or a downloaded model folder: bounded, regular, contained.

A model folder is untrusted input: its metadata names other files (``modules.json`` names a pooling folder,
a tokenizer config names vocabularies), any file may be a symlink, a FIFO, a device or gigabytes of garbage.
Everything prunebench reads from such a place goes through here, so that

- a read never blocks on a FIFO or a device and never pulls an unbounded file into memory (the size is
  checked on the *resolved* file before a byte is read);
- a path taken from a folder's own metadata stays inside that folder (checked lexically: symlinked files are
  normal, the Hugging Face cache links every file of a snapshot to a blob outside the snapshot folder, so
  containment is about the *name* the metadata gives, and the link target is only required to be a regular
  file);
- every refusal is one line naming the file (:class:`UnsafeFileError`).
"""

from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from prunebench.errors import PrunebenchError

#: Size limit of a small metadata file (config, tokenizer config, pooling config, modules.json).
METADATA_MAX_BYTES = 16 * 2**20
#: Size limit of a tokenizer's data files (tokenizer.json of the largest multilingual vocabularies is ~17 MB).
TOKENIZER_MAX_BYTES = 256 * 2**20
#: Size limit of a safetensors header (the JSON index of the tensors; a BERT-large header is ~40 KB).
SAFETENSORS_HEADER_MAX_BYTES = 64 * 2**20


class UnsafeFileError(PrunebenchError):
    """A file of a user's folder that prunebench will not read (one-line message naming it)."""


def regular_file_size(path: Path, limit: int) -> int:
    """The size of ``path`` after following links, if it is a regular file of at most ``limit`` bytes.

    Raises:
        UnsafeFileError: missing, a directory, FIFO, socket or device, or larger than ``limit``.
    """
    try:
        info = path.stat()  # follows links: a link to a blob is fine, a link to /dev/zero is not
    except OSError as exc:
        raise UnsafeFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise UnsafeFileError(f"{path} is {kind}")
    if info.st_size > limit:
        raise UnsafeFileError(f"{path} is {info.st_size / 2**20:.1f} MiB, more than the {limit / 2**20:.0f} MiB "
                              "a file of this kind can be")
    return info.st_size


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see :func:`regular_file_size`).

    The read itself is capped too, so a file that grows between the check and the read cannot exceed it.
    """
    regular_file_size(path, limit)
    # O_NONBLOCK: if the file was swapped for a FIFO after the check, open() must not wait for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFileError(f"{path} is more than the {limit / 2**20:.0f} MiB a file of this kind can be")
    return data


def read_bounded_gzip(path: Path, limit: int, unpacked_limit: int) -> bytes:
    """The decompressed bytes of a gzip file of at most ``limit`` bytes that unpacks to at most ``unpacked_limit``.

    The output is capped while it is produced, so a small file that unpacks to gigabytes (a gzip bomb) is
    refused after ``unpacked_limit + 1`` bytes, never held whole in memory.

    Raises:
        UnsafeFileError: what :func:`read_bounded` refuses, a file that is not gzip data (or is cut short), or
            one that unpacks to more than ``unpacked_limit`` bytes.
    """
    packed = read_bounded(path, limit)
    inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer (CRC-32, length) checked
    try:
        data = inflater.decompress(packed, unpacked_limit + 1)
    except zlib.error as exc:
        raise UnsafeFileError(f"{path} is not gzip data ({exc})") from None
    if len(data) > unpacked_limit:
        raise UnsafeFileError(f"{path} unpacks to more than the {unpacked_limit / 2**20:.0f} MiB a file of this "
                              "kind can be")
    if not inflater.eof:
        raise UnsafeFileError(f"{path} is cut short: its gzip data ends before the end of its stream")
    return data


def read_json(path: Path, limit: int = METADATA_MAX_BYTES) -> Any:
    """A bounded JSON document (one-line :class:`UnsafeFileError` when unreadable, too large or not JSON)."""
    data = read_bounded(path, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise UnsafeFileError(f"{path} is nested too deeply to be read") from None
    except (UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsafeFileError(f"{path} is not valid JSON ({reason})") from None


def contained(root: Path, relative: str) -> Path:
    """``root / relative`` for a relative path named by a folder's own metadata, refused if it leaves ``root``.

    The check is on the name (no ``..`` component, not absolute), not on where links point: see the module
    docstring.

    Raises:
        UnsafeFileError: an absolute path or one that climbs out of ``root``.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise UnsafeFileError(f"{root}: its metadata names an empty or non-text path ({relative!r})")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        shown = relative if len(relative) <= 80 else relative[:77] + "..."
        raise UnsafeFileError(f"{root}: its metadata names {shown!r}, a path outside the folder")
    return root.joinpath(*pure.parts)


def safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (dtype, shape)}`` of a safetensors file, from its header alone (no tensor is read).

    A model folder's weights are checked with this before anything is built from them: a truncated download
    or a file of garbage is one line naming the file, and a config whose sizes disagree with the weights can
    be refused before transformers builds the model (it would raise, or with ``ignore_mismatched_sizes``
    re-initialise the tensors at random).

    Raises:
        UnsafeFileError: not a regular file, or not a complete safetensors file (header length beyond the
            file, header not a JSON object, a tensor whose bytes lie beyond the end of the file).
    """
    size = regular_file_size(path, 2**62)
    if size < 8:
        raise UnsafeFileError(f"{path} is corrupted or truncated ({size} bytes, no safetensors header)")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > min(SAFETENSORS_HEADER_MAX_BYTES, size - 8):
            raise UnsafeFileError(f"{path} is corrupted or truncated (its header claims "
                                  f"{length:,} bytes of a {size:,}-byte file)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UnsafeFileError(f"{path} is corrupted or truncated (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise UnsafeFileError(f"{path} is corrupted or truncated (its header is not a JSON object)")
    data_bytes = size - 8 - length
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (isinstance(dtype, str) and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise UnsafeFileError(f"{path} is corrupted or truncated (a bad entry for tensor {str(name)[:60]!r})")
        if end > data_bytes:
            raise UnsafeFileError(f"{path} is corrupted or truncated: tensor {str(name)[:60]!r} ends at byte "
                                  f"{end:,} of {data_bytes:,} data bytes")
        tensors[str(name)] = (dtype, tuple(shape))
    return tensors
