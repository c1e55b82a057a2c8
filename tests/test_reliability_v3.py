"""Reliability v3 (bad, careless or hostile input): every case is one line on stderr, the documented exit code, no
traceback, and the file tree under the test's folder is the same before and after (nothing created, nothing
modified), unless the case says what may appear.

The CLI runs in-process (``main(argv)``); only the FIFO case, where a hang is what is tested, runs a subprocess
with a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunebench.cli.main import main
from prunebench.errors import CheckpointError
from prunebench.models import save_model
from prunebench.models.io import check_batch_fits_memory
from prunebench.models.presets import preset_config
from prunebench.results.store import ResultStore
from prunebench.user_files import UnsafeFileError, safetensors_header
from tests.test_results_synthetic import fill_store

ROOT = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time (folders: -1, -1): the tree to compare.

    A folder's own mtime is left out: ``--out`` checks probe writability by creating and removing a temporary
    folder, which touches the parent's mtime and nothing else."""
    out = {}
    for p in sorted(root.rglob("*")):
        info = p.lstat()
        out[p.relative_to(root).as_posix()] = (info.st_size, info.st_mtime_ns) if p.is_file() else (-1, -1)
    return out


def _one_line(capsys, argv: list[str], message: str, code: int = 2) -> str:
    """Run the CLI in-process; assert ``code``, a single stderr line holding ``message`` and no traceback."""
    try:
        got = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit from inside parse_args
        got = exit_.code
    err = capsys.readouterr().err
    assert got == code, err
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    assert message in err, err
    return err


def _unchanged(capsys, root: Path, argv: list[str], message: str, code: int = 2) -> str:
    """:func:`_one_line`, and the tree under ``root`` is exactly as before."""
    before = _tree(root)
    err = _one_line(capsys, argv, message, code)
    assert _tree(root) == before, err
    return err


# -- damaged results stores: one line naming the file and what is wrong ------------------------------------------


@pytest.mark.parametrize("table", ["cells", "variants", "runs", "evaluations"])
def test_store_missing_a_table(capsys, tmp_path: Path, table: str) -> None:
    run = fill_store(tmp_path / "run")
    other = fill_store(tmp_path / "other")
    with sqlite3.connect(run / "results.sqlite") as con:
        con.execute(f"DROP TABLE {table}")
    con.close()
    message = f"{run / 'results.sqlite'} is a damaged results store: table {table!r} is missing"
    _unchanged(capsys, tmp_path, ["report", str(run)], message)
    _unchanged(capsys, tmp_path, ["report", str(run), "--out", str(tmp_path / "rep")], message)
    _unchanged(capsys, tmp_path, ["compare", str(run), str(other), "--out", str(tmp_path / "cmp")], message)
    _unchanged(capsys, tmp_path, ["run", "--resume", str(run)], message)


def test_store_missing_a_column(capsys, tmp_path: Path) -> None:
    run = fill_store(tmp_path / "run")
    with sqlite3.connect(run / "results.sqlite") as con:
        con.execute("ALTER TABLE cells DROP COLUMN latency_ms")
    con.close()
    _unchanged(capsys, tmp_path, ["report", str(run)], "table 'cells' lacks column(s) latency_ms")


@pytest.mark.parametrize("sql, where", [
    ("UPDATE cells SET latency_ms='abc'", "cells row 1, field latency_ms: expected a number, found text"),
    ("UPDATE evaluations SET accuracy='high'", "evaluations row 1, field accuracy: expected a number, found text"),
    ("UPDATE variants SET params='many'", "variants row 1, field params: expected an integer, found text"),
    ("UPDATE variants SET details='{not json'", "variants row 1, field details: not valid JSON"),
    ("UPDATE cells SET extra='[1]'", "cells row 1, field extra: not a JSON object"),
    ("UPDATE meta SET value='two' WHERE key='schema_version'", "its schema version is 'two', not a number"),
])
def test_store_with_a_value_of_the_wrong_kind(capsys, tmp_path: Path, sql: str, where: str) -> None:
    run = fill_store(tmp_path / "run")
    with sqlite3.connect(run / "results.sqlite") as con:
        con.execute(sql)
    con.close()
    err = _unchanged(capsys, tmp_path, ["report", str(run)], where)
    assert str(run / "results.sqlite") in err


def test_resume_refusals_leave_no_lock_or_log(capsys, tmp_path: Path) -> None:
    """A corrupt, foreign or newer store, and --out beside --resume: refused before run.lock / run.log exist."""
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "results.sqlite").write_bytes(b"garbage" * 100)
    (tmp_path / "foreign").mkdir()
    with sqlite3.connect(tmp_path / "foreign" / "results.sqlite") as con:
        con.execute("CREATE TABLE x (a)")
    con.close()
    newer = fill_store(tmp_path / "newer")
    with sqlite3.connect(newer / "results.sqlite") as con:
        con.execute("UPDATE meta SET value='9' WHERE key='schema_version'")
    con.close()
    ok = fill_store(tmp_path / "ok")
    _unchanged(capsys, tmp_path, ["run", "--resume", str(tmp_path / "corrupt")], "file is not a database")
    _unchanged(capsys, tmp_path, ["run", "--resume", str(tmp_path / "foreign")], "not a prunebench results store")
    _unchanged(capsys, tmp_path, ["run", "--resume", str(newer)], "schema version 9")
    _unchanged(capsys, tmp_path, ["run", "--resume", str(ok), "--out", str(tmp_path / "other")],
               "cannot be given with --resume")
    assert not list(tmp_path.rglob("run.lock")) and not list(tmp_path.rglob("run.log"))


def test_report_on_a_non_store_creates_nothing(capsys, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.sqlite").write_text("not sqlite at all, just text " * 20)
    _unchanged(capsys, tmp_path, ["report", str(tmp_path / "plain")], "is not a run folder")
    _unchanged(capsys, tmp_path, ["report", str(tmp_path / "junk")], "is not a readable prunebench results store")


def test_store_class_refuses_a_damaged_store_on_open(tmp_path: Path) -> None:
    """The same check at the library level: ResultStore itself, not only the CLI."""
    run = fill_store(tmp_path)
    with sqlite3.connect(run / "results.sqlite") as con:
        con.execute("DROP TABLE evaluations")
    con.close()
    with pytest.raises(Exception, match="table 'evaluations' is missing"):
        ResultStore(run / "results.sqlite", readonly=True)


# -- compare --out -----------------------------------------------------------------------------------------------


def test_compare_out_inside_a_run_folder_or_unwritable(capsys, tmp_path: Path) -> None:
    a, b = fill_store(tmp_path / "a"), fill_store(tmp_path / "b")
    _unchanged(capsys, tmp_path, ["compare", str(a), str(b), "--out", str(a)], "is inside the run folder")
    _unchanged(capsys, tmp_path, ["compare", str(a), str(b), "--out", str(a / "sub")], "is inside the run folder")
    _unchanged(capsys, tmp_path, ["compare", str(a), str(b), "--out", "/proc/prunebench-x"], "--out /proc/prunebench-x")


# -- Hugging Face folders: config.json vs the weights, and the weights file itself -------------------------------


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory) -> Path:
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from tests.hf_text_fixtures import base_model_folder

    return base_model_folder(tmp_path_factory.mktemp("hf"), "base")


def _config_edit(**fields: object):
    def edit(folder: Path) -> None:
        doc = json.loads((folder / "config.json").read_text())
        doc.update(fields)
        (folder / "config.json").write_text(json.dumps(doc))
    return edit


def _weights(data: bytes | None = None, keep: int | None = None):
    def edit(folder: Path) -> None:
        path = folder / "model.safetensors"
        path.write_bytes(data if data is not None else path.read_bytes()[:keep])
    return edit


HF_CASES = {
    "hidden size a string": (_config_edit(hidden_size="32"),
                             "field 'hidden_size' must be a positive integer, got '32'"),
    "hidden size negative": (_config_edit(hidden_size=-32), "field 'hidden_size' must be a positive integer, got -32"),
    "heads a bool": (_config_edit(num_attention_heads=True), "field 'num_attention_heads' must be a positive integer"),
    "hidden size disagrees": (_config_edit(hidden_size=64), "hidden_size is 64, the weights have 32"),
    "fewer positions than the weights": (_config_edit(max_position_embeddings=40),
                                         "max_position_embeddings is 40, the weights have 64"),
    "vocab disagrees": (_config_edit(vocab_size=500), "vocab_size is 500, the weights have"),
    "a million layers": (_config_edit(num_hidden_layers=10**6), "num_hidden_layers is 1000000, the weights have 2"),
    "ffn disagrees": (_config_edit(intermediate_size=96), "intermediate_size 96 and hidden_size 32 disagree"),
    "truncated weights": (_weights(keep=3000), "is corrupted or truncated"),
    "tiny weights": (_weights(keep=5), "is corrupted or truncated"),
    "garbage weights": (_weights(data=bytes(range(256)) * 40), "is corrupted or truncated"),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_folder_config_or_weights_bad(capsys, tmp_path: Path, hf_base: Path, case: str) -> None:
    edit, message = HF_CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(hf_base, folder)
    edit(folder)
    for argv in (["prune", "--model", str(folder), "--method", "magnitude", "--sparsity", "0.5",
                  "--out", str(tmp_path / "pruned")],
                 ["bench", str(folder), "--batch-sizes", "1", "--seq-len", "8"],
                 ["run", "--model", str(folder), "--quick", "--seq-len", "8", "--out", str(tmp_path / "run"),
                  "--cache-dir", str(tmp_path / "cache")]):
        err = _unchanged(capsys, tmp_path, argv, message)
        assert str(folder) in err  # names the file


def test_hf_folder_with_nan_weights_refused(capsys, tmp_path: Path, hf_base: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(hf_base, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(k for k in tensors if k.endswith("intermediate.dense.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for argv in (["prune", "--model", str(folder), "--method", "magnitude", "--sparsity", "0.5",
                  "--out", str(tmp_path / "pruned")],
                 ["bench", str(folder), "--batch-sizes", "1", "--seq-len", "8"],
                 ["eval", str(folder)]):
        _unchanged(capsys, tmp_path, argv, "has NaN/Inf weights")


def test_safetensors_header_reader_bounds(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4)}, str(path))
    assert safetensors_header(path) == {"a": ("F32", (3, 4))}
    path.write_bytes(path.read_bytes()[:-8])  # the last tensor's bytes cut short
    with pytest.raises(UnsafeFileError, match="ends at byte 48 of 40 data bytes"):
        safetensors_header(path)
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        safetensors_header(Path("/dev/zero"))


# -- prunebench's own model folders: NaN/Inf weights, metadata not an object ------------------------------------


def test_own_model_with_nan_weights_or_bad_metadata(capsys, tmp_path: Path, tiny_model) -> None:
    with torch.no_grad():
        tiny_model.layers[0].ffn.fc_in.weight[0, 0] = float("inf")
    nan = save_model(tiny_model, tmp_path / "nan")
    for argv in (["prune", "--model", str(nan), "--sparsity", "0.5", "--out", str(tmp_path / "p")],
                 ["bench", str(nan), "--batch-sizes", "1", "--seq-len", "8"]):
        _unchanged(capsys, tmp_path, argv, "has NaN/Inf weights (tensor 'layers.0.ffn.fc_in.weight')")
    with torch.no_grad():
        tiny_model.layers[0].ffn.fc_in.weight[0, 0] = 0.0
    meta = save_model(tiny_model, tmp_path / "meta")
    doc = json.loads((meta / "config.json").read_text())
    doc["metadata"] = ["not", "an", "object"]
    (meta / "config.json").write_text(json.dumps(doc))
    _unchanged(capsys, tmp_path, ["prune", "--model", str(meta), "--sparsity", "0.5", "--out", str(tmp_path / "p")],
               "field 'metadata' must be a JSON object")


# -- --config that is a device or a FIFO, --set nested deeply ---------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_config_from_a_device(capsys, tmp_path: Path, device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    _unchanged(capsys, tmp_path, ["run", "--config", device, "--out", str(tmp_path / "r")],
               f"{device} is not a regular file")


def test_config_too_large(capsys, tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)
    _unchanged(capsys, tmp_path, ["run", "--config", str(big), "--out", str(tmp_path / "r")], "more than the 1 MiB")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_config_from_a_fifo_does_not_hang(tmp_path: Path) -> None:
    """A subprocess, since a hang is what is tested: the FIFO has no writer, so an open() would block for ever."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    before = _tree(tmp_path)
    done = subprocess.run([sys.executable, "-m", "prunebench", "run", "--config", str(fifo), "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "is not a regular file" in err[0] and "Traceback" not in done.stderr, done.stderr
    assert _tree(tmp_path) == before


def test_deeply_nested_set(capsys, tmp_path: Path) -> None:
    _unchanged(capsys, tmp_path, ["run", "--set", "seq_len=" + "[" * 50_000, "--out", str(tmp_path / "r")],
               "the value of 'seq_len' is nested too deeply")


# -- train --batch-size that cannot fit, refused before anything is allocated or created -----------------------


def test_train_batch_that_cannot_fit(capsys, tmp_path: Path) -> None:
    _unchanged(capsys, tmp_path, ["train", "--batch-size", "100000", "--out", str(tmp_path / "t"),
                                  "--cache-dir", str(tmp_path / "cache")], "--batch-size 100000: a batch of 100,000")


def test_batches_that_cannot_fit_bench_or_an_hf_run(capsys, tmp_path: Path, hf_base: Path) -> None:
    """``bench`` (any model) and an HF ``run`` size their batches with the same estimate as a preset run."""
    message = "--batch-sizes 100000000: a batch of 100,000,000 sequences of 8 tokens needs at least"
    for argv in (["bench", "small", "--batch-sizes", "1,100000000", "--seq-len", "8"],
                 ["bench", str(hf_base), "--batch-sizes", "100000000", "--seq-len", "8"],
                 ["run", "--model", str(hf_base), "--quick", "--batch-sizes", "100000000", "--seq-len", "8",
                  "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]):
        _unchanged(capsys, tmp_path, argv, message)


def test_hf_skeleton_has_the_saved_widths(capsys, tmp_path: Path, hf_base: Path) -> None:
    """A run sizes an HF folder from its model built on the meta device: a pruned, prunebench-saved folder
    describes itself at its pruned widths, exactly as the loaded model does."""
    from prunebench.models.hf.loading import hf_skeleton, load_hf_model
    from prunebench.models.io import shape_config

    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(hf_base), "--method", "structured", "--sparsity", "0.5",
                 "--out", str(pruned)]) == 0
    capsys.readouterr()
    shapes = shape_config(hf_skeleton(pruned))
    assert shapes == shape_config(load_hf_model(pruned))
    assert shapes != shape_config(hf_skeleton(hf_base)) == shape_config(load_hf_model(hf_base))


def test_batch_memory_estimate_is_a_lower_bound() -> None:
    config = preset_config("small")
    check_batch_fits_memory(config, 32, 64, "x", available=2**30)  # the default batch fits in a GiB
    with pytest.raises(CheckpointError, match="use a smaller batch size"):
        check_batch_fits_memory(config, 100_000, 64, "x", available=64 * 2**30)


# -- disk full while saving a model ----------------------------------------------------------------------------


def test_disk_full_while_saving_a_model(capsys, tmp_path: Path, monkeypatch) -> None:
    """safetensors reports a full disk as its own SafetensorError with the OS error in the text (the message is
    the one the issue saw); the save writes part of the file, then fails: one line, exit 1, "disk full", and the
    half-written file removed. (safetensors writes to /dev/full without an error, so the kernel's ENOSPC cannot
    be provoked without a full file system.)"""
    from safetensors import SafetensorError

    import prunebench.models.io as io

    def full(tensors, path, metadata=None):
        Path(path).write_bytes(b"\0" * 100)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(io, "save_file", full)
    _one_line(capsys, ["prune", "--model", "small", "--sparsity", "0.5", "--out", str(tmp_path / "p")],
              "disk full: no space left to write", code=1)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("model.safetensors"))


def test_other_write_failures_while_saving_are_one_line(tmp_path: Path, monkeypatch, tiny_model) -> None:
    from safetensors import SafetensorError

    import prunebench.models.io as io

    def too_large(tensors, path, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: File too large (os error 27)")

    monkeypatch.setattr(io, "save_file", too_large)
    with pytest.raises(CheckpointError, match="cannot write .*model.safetensors.tmp: Error while serializing"):
        save_model(tiny_model, tmp_path / "m")


# -- the one list rule: duplicates and empty items refused in every comma list ---------------------------------

LIST_CASES = [
    (["run", "--sparsity", "0.5,0.5"], "0.5 is listed twice"),
    (["run", "--sparsity", "0.5,.5"], "0.5 is listed twice"),
    (["run", "--batch-sizes", "1,1"], "1 is listed twice"),
    (["run", "--batch-sizes", "1,,2"], "empty item"),
    (["run", "--targets", "1.5,1.5"], "1.5 is listed twice"),
    (["run", "--methods", "magnitude,,wanda"], "empty item"),
    (["run", "--methods", "wanda,wanda"], "'wanda' is listed twice"),
    (["run", "--backends", "eager,,int8"], "empty item"),
    (["run", "--backends", "int8,int8"], "'int8' is listed twice"),
    (["bench", "small", "--batch-sizes", "4,4"], "4 is listed twice"),
    (["search", "--model", "small", "--targets", "2,2"], "2.0 is listed twice"),
    (["run", "--out", ""], "the folder is empty"),
]


@pytest.mark.parametrize("argv, message", LIST_CASES, ids=[" ".join(a) for a, _ in LIST_CASES])
def test_comma_lists_one_rule(capsys, tmp_path: Path, monkeypatch, argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)  # `run --out ''` would run into the current folder
    if "--out" not in argv and argv[0] in ("run", "search"):
        argv = [*argv, "--out", str(tmp_path / "out")]
    _unchanged(capsys, tmp_path, argv, message)


def test_toml_lists_follow_the_same_rule(capsys, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("batch_sizes = [2, 2]\n")
    _unchanged(capsys, tmp_path, ["run", "--config", str(config), "--out", str(tmp_path / "r")], "listed twice")


# -- values that cannot work: refused before any folder exists ------------------------------------------------

CANNOT_WORK = [
    (["run", "--model", "small", "--quick", "--batch-sizes", "100000000"], "--batch-sizes 100000000: a batch of"),
    (["run", "--model", "small", "--quick", "--targets", "1e9"], "at most 100"),
    (["run", "--model", "small", "--quick", "--train-budget", "100000000000000000000s"], "7 days"),
    (["train", "--budget", "100000000000000000000s"], "7 days"),
    (["prune", "--model", "small", "--method", "nm", "--n", "4", "--m", "4"], "removes nothing"),
    (["prune", "--model", "small", "--method", "nm", "--n", "1", "--m", "100000"], "wider than every prunable"),
    (["prune", "--model", "small", "--steps", "100000"], "steps must be an integer in [1, 100], got 100000"),
    (["prune", "--model", "small", "--method", "wanda", "--calib-sequences", "100000"],
     "calib_sequences must be an integer in [1, 4096], got 100000"),
    (["prune", "--model", "small", "--calib-batches", "100000"], "unrecognized arguments: --calib-batches"),
    (["run", "--model", "small", "--quick", "--set", "iterative_steps=100000"],
     "iterative_steps must be an integer in [1, 100]"),
    (["run", "--model", "small", "--quick", "--calib-sequences", "100000"], "calib_sequences must be an integer in"),
    (["search", "--model", "small", "--targets", "1.5", "--calib-sequences", "100000"],
     "calib_sequences must be an integer in [1, 4096]"),
    (["search", "--model", "small", "--targets", "1e9"], "at most 100"),
    (["search", "--model", "small", "--targets", "1.5", "--check-configs", "-1"], "check_configs must be"),
    (["search", "--model", "small", "--targets", "1.5", "--seed", "-1"], "seed must be an integer in [0, 2^63 - 1]"),
    (["search", "--model", "small", "--targets", "1.5", "--seed", "18446744073709551616"],
     "seed must be an integer in [0, 2^63 - 1]"),
    (["search", "--model", "small", "--targets", "1.5", "--calib-sequences", "-5"], "must be a positive integer"),
    (["search", "--model", "small", "--targets", "1.5", "--seq-len", "100000"], "max_positions"),
    (["search", "--model", "small", "--targets", "1.5", "--neuron-step", "100000"], "wider than the model's widest"),
]


@pytest.mark.parametrize("argv, message", CANNOT_WORK, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CANNOT_WORK])
def test_values_that_cannot_work(capsys, tmp_path: Path, argv: list[str], message: str) -> None:
    _unchanged(capsys, tmp_path, [*argv, "--out", str(tmp_path / "out")] + (
        ["--cache-dir", str(tmp_path / "cache")] if argv[0] in ("run", "train") else []), message)


# -- a task file without a text column: the columns found, cut short, never a whole line ------------------------


def test_csv_without_text_column_names_columns_truncated(capsys, tmp_path: Path) -> None:
    secret = "root:$6$" + "x" * 90 + ":19000:0:99999:7:::"
    data = tmp_path / "shadow.csv"
    data.write_text(secret + "\n" + "\n".join(f"line{i}" for i in range(30)) + "\n")
    err = _unchanged(capsys, tmp_path, ["run", "--model", "small", "--quick", "--task", f"csv:{data}",
                                        "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")],
                     "has no column 'text'; its columns are: 'root:$6$xxxxxxxxxxxxx...'")
    assert secret not in err and "x" * 30 not in err
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(20)) + "\n" + ",".join("v" * 20) + "\n")
    _unchanged(capsys, tmp_path, ["run", "--model", "small", "--quick", "--task", f"csv:{wide}",
                                  "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")],
               "'c7' and 12 more")


def test_search_out_checked_before_measuring(capsys, tmp_path: Path) -> None:
    """``--out`` that cannot be written is refused at once (it came after minutes of latency table)."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in ((a_file / "sub", "which is a file"), (Path("/proc/prunebench-x/s"), "is not writable")):
        _unchanged(capsys, tmp_path, ["search", "--model", "small", "--targets", "1.5", "--out", str(out)], message)


def test_hf_folder_without_tokenizer_refused(capsys, tmp_path: Path, hf_base: Path) -> None:
    """No tokenizer files: refused (prune once calibrated such a model on random tokens)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_base / name, folder / name)
    for method in ("magnitude", "wanda"):
        _unchanged(capsys, tmp_path, ["prune", "--model", str(folder), "--method", method, "--sparsity", "0.5",
                                      "--out", str(tmp_path / "p")], "has no tokenizer")
