"""The files a model folder carries besides its weights: tokenizer and sentence-transformers configuration.

They are copied by name from a source folder into a saved or exported one (:func:`side_files`, then
:func:`copy_side_files`): each checked (bounded, a regular file, JSON that parses), never a folder as a whole. A
model folder is untrusted, and a linked ``1_Pooling/`` once carried a stranger's files into a pruned model. Nothing
here needs ``transformers``: prunebench's own encoder folders carry a ``tokenizer.json`` the same way.
"""

from __future__ import annotations

from pathlib import Path

from prunebench.user_files import (
    METADATA_MAX_BYTES,
    TOKENIZER_MAX_BYTES,
    UnsafeFileError,
    contained,
    read_bounded,
    read_json,
    regular_file_size,
)

#: Side files copied by name from the source folder (every supported family's tokenizer and the
#: sentence-transformers configuration), each with the size it may have.
SIDE_FILES: dict[str, int] = {
    **{name: METADATA_MAX_BYTES for name in (
        "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "modules.json",
        "sentence_bert_config.json", "config_sentence_transformers.json")},
    **{name: TOKENIZER_MAX_BYTES for name in (
        "tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "sentencepiece.bpe.model", "spiece.model")},
}
#: sentence-transformers modules whose folder (named in ``modules.json``) holds only a ``config.json`` we copy;
#: Normalize's folder may be empty, and is recreated so that ``modules.json`` names a folder that exists.
ST_MODULES = ("Pooling", "Normalize")
#: Their usual folder names.
ST_MODULE_FOLDERS = ("1_Pooling", "2_Normalize")


def side_files(src: Path) -> tuple[dict[str, Path], list[str]]:
    """The side files of ``src`` to copy into a saved folder (relative name -> checked source file) and the
    sentence-transformers module folders to create, every file checked before anything is written.

    A file may be a link (the Hugging Face cache links each file to a blob) but must resolve to a regular file
    within its size limit; JSON files must parse; module folders named by ``modules.json`` must lie inside
    ``src``. Nothing else of ``src`` is ever read.

    Raises:
        UnsafeFileError: one line naming the offending file.
    """
    files: dict[str, Path] = {}
    for name, limit in SIDE_FILES.items():
        path = src / name
        if not (path.exists() or path.is_symlink()):
            continue
        if name.endswith(".json"):
            read_json(path, limit)
        else:
            regular_file_size(path, limit)
        files[name] = path
    named: list[str] = []
    if "modules.json" in files:
        modules = read_json(files["modules.json"])
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise UnsafeFileError(f"{files['modules.json']} is not a list of sentence-transformers modules")
        named = [str(m.get("path", "")) for m in modules
                 if str(m.get("type", "")).rsplit(".", 1)[-1] in ST_MODULES]
    # The usual folder names count even without modules.json (older sentence-transformers folders).
    named += [name for name in ST_MODULE_FOLDERS if name not in named and (src / name).is_dir()]
    folders: list[str] = []
    for relative in named:
        folder = contained(src, relative)
        config = folder / "config.json"
        if config.exists() or config.is_symlink():
            read_json(config)
            files[f"{folder.relative_to(src).as_posix()}/config.json"] = config
        folders.append(folder.relative_to(src).as_posix())
    return files, folders


#: Files of which at least one means "this folder has a tokenizer".
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def copy_side_files(files: dict[str, Path], folders: list[str], out: Path) -> None:
    """Write :func:`side_files` into ``out`` by name: bytes read bounded, written as new regular files."""
    for relative in folders:
        (out / relative).mkdir(parents=True, exist_ok=True)
    for relative, path in files.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        data = read_bounded(path, SIDE_FILES.get(relative, METADATA_MAX_BYTES))
        target.unlink(missing_ok=True)  # never write through a link that may already stand there
        target.write_bytes(data)
