"""A model folder is untrusted input: it never runs its own code, never reads outside itself, and saving a
pruned model copies only the side files it needs, by name, each checked (no whole side folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install 'prunebench[hf]'")

from prunebench.cli.main import main  # noqa: E402
from prunebench.errors import PrunebenchError  # noqa: E402
from prunebench.models.hf import MANIFEST_FILE, HFModelError, check_hf_folder, hf_adapter_for, load_hf_model  # noqa: E402
from prunebench.models.hf import loading as hf_loading  # noqa: E402
from prunebench.models.io import load_model, save_model  # noqa: E402
from prunebench.tasks.hf_eval import read_pooling  # noqa: E402
from prunebench.user_files import UnsafeFileError, contained, read_bounded, read_json  # noqa: E402
from tests.hf_text_fixtures import base_model_folder, st_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CODE = """
from pathlib import Path
Path({marker!r}).write_text("the folder's code ran")
from transformers import BertConfig, BertModel
class EvilConfig(BertConfig):
    model_type = "evilbert"
class EvilModel(BertModel):
    config_class = EvilConfig
"""


def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size (folders as -1): the file tree before and after a command."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")}


def _code_folder(tmp: Path, marker: Path, where: str = "config.json") -> Path:
    """A tiny BERT folder whose ``where`` has an ``auto_map`` naming a module that writes ``marker`` on import."""
    folder = base_model_folder(tmp, "evil")
    doc = json.loads((folder / where).read_text())
    if where == "config.json":
        doc["model_type"] = "evilbert"
        doc["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModel": "evil_code.EvilModel"}
    else:
        doc["auto_map"] = {"AutoTokenizer": ["evil_code.EvilTokenizer", None]}
    (folder / where).write_text(json.dumps(doc))
    (folder / "evil_code.py").write_text(CODE.format(marker=str(marker)))
    return folder


@pytest.mark.slow
def test_no_command_runs_a_folders_code_even_with_yes_on_stdin(tmp_path):
    marker = tmp_path / "MARKER"
    folder = _code_folder(tmp_path, marker)
    work = tmp_path / "work"
    work.mkdir()
    commands = [
        ["prune", "--model", str(folder), "--method", "magnitude", "--sparsity", "0.5", "--out", str(work / "p")],
        ["run", "--model", str(folder), "--seq-len", "32", "--quick", "--out", str(work / "r")],
        ["bench", str(folder), "--batch-sizes", "1"],
        ["eval", str(folder)],
        ["search", "--model", str(folder), "--targets", "1.5", "--out", str(work / "s")],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    before = _tree(tmp_path)
    # All five at once (each waits on its imports, not on the others): "y" waits on every stdin.
    procs = [(argv, subprocess.Popen([sys.executable, "-m", "prunebench", *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=env))
             for argv in commands]
    for argv, proc in procs:
        _, err = proc.communicate(input="y\n" * 50, timeout=300)
        assert proc.returncode == 2, (argv[0], err[-2000:])
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and "Python code of its own" in errors[0] and "Traceback" not in err, argv
    assert not marker.exists(), "a command ran the folder's code"
    assert _tree(tmp_path) == before, "a refused command changed the file tree"


def test_a_tokenizer_naming_its_own_code_is_refused_in_process(tmp_path):
    marker = tmp_path / "MARKER"
    folder = _code_folder(tmp_path, marker, where="tokenizer_config.json")
    with pytest.raises(HFModelError, match=r"tokenizer_config.json auto_map: evil_code.EvilTokenizer"):
        check_hf_folder(folder)
    with pytest.raises(HFModelError, match="Python code of its own"):
        hf_loading.load_hf_tokenizer(folder)
    assert not marker.exists()


def test_a_prunebench_folder_with_an_auto_map_reloads_through_its_manifest_without_running_it(tmp_path):
    """A saved folder may carry an ``auto_map`` for users (``trust_remote_code=True``); prunebench never follows it."""
    model = load_hf_model(base_model_folder(tmp_path, "src"))
    hf_adapter_for(model).keep_groups_("heads", 0, [0, 2])  # a shape plain transformers cannot express
    out = save_model(model, tmp_path / "saved")
    doc = json.loads((out / "config.json").read_text())
    doc.update(model_type="prunebench_bert", auto_map={"AutoModel": "evil_code.EvilModel"})
    (out / "config.json").write_text(json.dumps(doc))
    marker = tmp_path / "MARKER"
    (out / "evil_code.py").write_text(CODE.format(marker=str(marker)))
    reloaded = load_model(out)
    batch = {"input_ids": torch.tensor([[2, 7, 9, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, reloaded(**batch).last_hidden_state)
    assert type(reloaded).__name__ == "BertModel" and not marker.exists()


def test_a_name_that_is_no_folder_never_goes_to_the_hub(tmp_path, monkeypatch, capsys):
    def no_hub(*args, **kwargs):
        raise AssertionError("transformers' hub resolution must not be reached")

    monkeypatch.setattr(hf_loading.AutoConfig, "from_pretrained", no_hub)
    monkeypatch.chdir(tmp_path)
    for argv in (["bench", "foo/bar"], ["prune", "--model", "foo/bar", "--out", "x"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "no model folder at 'foo/bar'" in err and "downloads nothing" in err
    assert list(tmp_path.iterdir()) == []
    # A model the local cache already holds: the one line names the snapshot folder to pass (the opt-in).
    snapshot = tmp_path / "models--foo--bar" / "snapshots" / "abc"
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: str(snapshot / name) if repo == "foo/bar" else None)
    with pytest.raises(HFModelError, match=f"the Hugging Face cache holds it: pass --model {snapshot}$"):
        load_hf_model("foo/bar")


def test_metadata_paths_stay_inside_the_folder(tmp_path):
    folder = base_model_folder(tmp_path, "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text('{"pooling_mode_cls_token": true}')
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "../outside", "type": "sentence_transformers.models.Pooling"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsafeFileError, match="a path outside the folder"):
        read_pooling(folder)
    with pytest.raises(HFModelError, match="'../outside', a path outside the folder"):
        check_hf_folder(folder)  # `run` checks this before its folder exists
    for bad in ("/etc", "a/../../b", "C:/x"):
        with pytest.raises(UnsafeFileError):
            contained(folder, bad)
    assert contained(folder, "1_Pooling") == folder / "1_Pooling"


def test_bounded_reads_refuse_fifos_devices_and_huge_files(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        read_json(fifo)  # returns at once: never blocks waiting for a writer
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        read_bounded(Path("/dev/zero"), 1024)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(UnsafeFileError, match="more than"):
        read_bounded(big, 1024)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(UnsafeFileError, match=r"bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")


#: What `prune` writes for :func:`st_folder`: the model, its plan, and the side files by name (and, since half the
#: heads are gone, the modelling file that loads that shape in plain transformers).
EXPECTED = {"config.json", MANIFEST_FILE, "model.safetensors", "plan.json", "prune_report.json", "tokenizer.json",
            "tokenizer_config.json", "modeling_prunebench.py",
            "modules.json", "sentence_bert_config.json", "1_Pooling", "1_Pooling/config.json", "2_Normalize"}


def _prune_cli(folder: Path, out: Path) -> int:
    return main(["prune", "--model", str(folder), "--method", "structured", "--sparsity", "0.5", "--out", str(out)])


def test_saving_copies_named_side_files_only_never_a_linked_folder(tmp_path, capsys):
    folder = st_folder(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("not part of any model")
    # 1_Pooling/ is a link to another folder holding its config and an unrelated file
    os.replace(folder / "1_Pooling" / "config.json", elsewhere / "config.json")
    (folder / "1_Pooling").rmdir()
    (folder / "1_Pooling").symlink_to(elsewhere, target_is_directory=True)
    (folder / "notes.txt").write_text("a stray file of the source folder")
    out = tmp_path / "out"
    assert _prune_cli(folder, out) == 0
    got = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    assert got == EXPECTED, got ^ EXPECTED
    assert not any(p.is_symlink() for p in out.rglob("*"))  # written files, not links to the source
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert read_pooling(out).mode == "mean" and read_pooling(out).normalize


def test_a_side_file_linked_to_a_non_json_file_refuses_the_save_before_anything_is_written(tmp_path, capsys):
    folder = st_folder(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (folder / "special_tokens_map.json").symlink_to(secret)
    out = tmp_path / "out"
    capsys.readouterr()
    assert _prune_cli(folder, out) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "special_tokens_map.json is not valid JSON" in err and "root:x" not in err
    assert not out.exists()
    (folder / "special_tokens_map.json").unlink()
    os.mkfifo(folder / "special_tokens_map.json")
    with pytest.raises(PrunebenchError, match="not a regular file"):
        check_hf_folder(folder)


def test_an_hf_cache_style_folder_of_links_to_blobs_prunes_and_its_output_loads(tmp_path, capsys):
    source = st_folder(tmp_path)
    snapshot = tmp_path / "cache" / "snapshots" / "rev"
    blobs = tmp_path / "cache" / "blobs"
    blobs.mkdir(parents=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        blob = blobs / f"blob{len(list(blobs.iterdir()))}"
        os.replace(path, blob)
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / relative).symlink_to(os.path.relpath(blob, (snapshot / relative).parent))
    (snapshot / "2_Normalize").mkdir(exist_ok=True)
    assert all(p.is_symlink() for p in snapshot.rglob("*") if not p.is_dir())
    out = tmp_path / "out"
    assert _prune_cli(snapshot, out) == 0
    got = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    assert got == EXPECTED, got ^ EXPECTED
    model = load_model(out)
    assert hf_adapter_for(model).group_count("heads", 0) == 2
    assert hf_loading.load_hf_tokenizer(out)("good day")["input_ids"][0] == 2
