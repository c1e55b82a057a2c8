"""``--model PATH`` on the CLI for Hugging Face folders: prune then bench, and the one-line errors."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed: pip install -e \".[hf]\"")

from prunebench.cli.main import main  # noqa: E402
from prunebench.models.hf import MANIFEST_FILE, load_hf_model  # noqa: E402
from tests.hf_tiny import tiny_model, write_tokenizer  # noqa: E402


@pytest.fixture
def hf_dir(tmp_path):
    folder = tmp_path / "dense"
    tiny_model("bert", "BertForMaskedLM").save_pretrained(str(folder))
    write_tokenizer(folder)
    return folder


@pytest.mark.parametrize("method", [["--method", "structured", "--granularity", "both"],
                                    ["--method", "wanda"], ["--method", "structured", "--criterion", "taylor"]])
def test_prune_then_bench_an_hf_folder(hf_dir, tmp_path, capsys, method):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(hf_dir), *method, "--sparsity", "0.5", "--calib-sequences", "8",
                 "--out", str(out)]) == 0
    assert (out / MANIFEST_FILE).is_file() and (out / "plan.json").is_file() and (out / "vocab.txt").is_file()
    report = json.loads((out / "prune_report.json").read_text())
    assert report["measured_sparsity"] > 0.3
    assert type(load_hf_model(out)).__name__ == "BertForMaskedLM"
    capsys.readouterr()
    result = tmp_path / "bench.json"
    assert main(["bench", str(out), "--baseline", str(hf_dir), "--batch-sizes", "1", "--seq-len", "16",
                 "--budget", "quick", "--min-time", "0.05", "--max-time", "0.3", "--no-memory", "--allow-busy",
                 "--json", str(result)]) == 0
    doc = json.loads(result.read_text())
    assert "pruned" in json.dumps(doc) and "dense" in json.dumps(doc)


def test_transformers_missing_is_one_line_exit_2(hf_dir, capsys, monkeypatch):
    from prunebench.models.hf import deps

    real = deps.importlib.util.find_spec
    monkeypatch.setattr(deps.importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    capsys.readouterr()
    assert main(["bench", str(hf_dir), "--batch-sizes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install -e \".[hf]\"" in err


def test_prune_prints_fidelity_on_held_out_text_and_warns_when_it_is_low(hf_dir, tmp_path, capsys, monkeypatch):
    from prunebench.sources import HFSource

    out = tmp_path / "layers"
    assert main(["prune", "--model", str(hf_dir), "--method", "structured", "--granularity", "layers",
                 "--sparsity", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "fidelity to dense (held out)" in printed.out and "corpus test text" in printed.out  # an MLM: the corpus
    real = HFSource.fidelity

    def low(source, model, dense):
        return {**real(source, model, dense), "cosine": 0.3}

    monkeypatch.setattr(HFSource, "fidelity", low)
    assert main(["prune", "--model", str(hf_dir), "--method", "structured", "--granularity", "layers",
                 "--sparsity", "0.5", "--out", str(tmp_path / "low")]) == 0
    err = capsys.readouterr().err
    assert "warning: the pruned model's outputs have cosine 0.30 to dense on held-out text (below 0.8)" in err
