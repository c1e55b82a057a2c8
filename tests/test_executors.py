"""The executor seam without Ray: the local executor, the units, shipped model folders, the scheduling
resources, node-class discovery and the per-class report."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from prunebench.bench import BenchSettings
from prunebench.cli.main import main
from prunebench.config import RunConfig
from prunebench.errors import PrunebenchError
from prunebench.models import create_model
from prunebench.report.hardware import hardware_html, hardware_md, main_snapshot, node_classes
from prunebench.runner.budgets import Budgets
from prunebench.runner.executors import EXECUTOR_CHECKS, EXECUTORS, LocalExecutor, Unit, check_executor, make_executor
from prunebench.runner.executors.ray_executor import (
    NODE_RESOURCE,
    classes_of,
    import_ray,
    node_resources,
    unit_options,
    unit_resources,
)
from prunebench.runner.executors.units import (
    as_model,
    folder_files,
    model_files,
    prepare_unit,
    recovery_progress,
    time_unit,
    write_folder,
)
from prunebench.sources import PresetSource
from prunebench.tasks import build_task

VOCAB, SEQ = 300, 16


@pytest.fixture(scope="module")
def task():
    return build_task("mlm", vocab_size=VOCAB, seq_len=SEQ, max_files=10, max_chars=40_000)


@pytest.fixture(scope="module")
def source(task, tmp_path_factory):
    """The units' model source over ``task`` (what a run builds from its config)."""
    config = RunConfig(model="small", finetune_steps=1, iterative_steps=2, eval_batches=1, train_precision="fp32",
                       calib_sequences=4)
    return PresetSource(config, Budgets.of(config), cache_dir=tmp_path_factory.mktemp("cache"), task=task)


@pytest.fixture
def dense():
    return create_model("custom", vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=2, d_ff=32,
                        max_positions=SEQ).eval()


def _payload(name: str, method: str, sparsity: float, **kw) -> dict:
    return {"name": name, "method": method, "sparsity": sparsity, "seed": 0, "seq_len": SEQ, "threads": 1,
            "iterative_steps": 2, "schedule": "cubic", "calib_sequences": 4, "refit": True, "evaluate": True, **kw}


def _one(fn, payload, **shared):
    """The single item a prepare unit emits."""
    items: list = []
    fn(payload, items.append, **shared)
    assert len(items) == 1
    return items[0]


def test_local_executor_runs_each_unit_in_order_and_delivers_each_item_at_once() -> None:
    log: list[tuple] = []

    def fn(payload, emit, *, box):
        box.append(payload["i"])
        for k in range(2):
            emit(payload["i"] * 10 + k)
            log.append(("emitted", payload["i"], k))

    box: list[int] = []
    units = [Unit(f"u{i}", "prepare", {"i": i}) for i in range(3)]
    with LocalExecutor() as ex:
        assert ex.node_classes() == ["local"] and ex.node_counts() == {"local": 1} and not ex.ships_models
        ex.run(fn, units, {"box": box}, lambda unit, item: log.append((unit.key, item)))
    assert box == [0, 1, 2]  # the very object, not a copy
    # each item reaches the driver before the unit goes on (nothing finished waits in a worker)
    assert log[:4] == [("u0", 0), ("emitted", 0, 0), ("u0", 1), ("emitted", 0, 1)]
    assert [e for e in log if e[0] != "emitted"] == [("u0", 0), ("u0", 1), ("u1", 10), ("u1", 11), ("u2", 20),
                                                      ("u2", 21)]


def test_unknown_executor_names_the_valid_ones_and_an_address_needs_ray() -> None:
    with pytest.raises(ValueError, match="unknown executor 'dask'; choose from: local, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        make_executor("local", "auto")
    assert EXECUTORS.names() == ["local", "ray"]
    assert EXECUTOR_CHECKS.names() == EXECUTORS.names()  # every executor is checked before a run folder exists
    with pytest.raises(ValueError, match="unknown executor 'dask'; choose from: local, ray"):
        check_executor("dask")
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        check_executor("local", "auto")


def test_cli_refuses_a_ray_address_without_the_ray_executor(tmp_path, capsys) -> None:
    code = main(["run", "--model", "small", "--ray-address", "auto", "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2 and "--ray-address needs --executor ray" in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(PrunebenchError, match=r"pip install -e \"\.\[ray\]\""):
        import_ray()


def test_timing_holds_a_whole_node_and_preparing_keeps_timing_off_it() -> None:
    capacity = node_resources("xeon")[NODE_RESOURCE]
    time_a = unit_resources(Unit("t", "time", node_class="xeon"))
    prepare = unit_resources(Unit("p", "prepare"))
    assert time_a[NODE_RESOURCE] + time_a[NODE_RESOURCE] > capacity  # two timings never share a node
    assert time_a[NODE_RESOURCE] + prepare[NODE_RESOURCE] > capacity  # no timing while a prepare runs there
    assert 0 < prepare[NODE_RESOURCE] <= capacity / 2  # prepares may share a node
    assert "prunebench_class_xeon" in time_a and not any(k.startswith("prunebench_class_") for k in prepare)
    assert "prunebench_class_xeon" in node_resources("xeon")
    # a CUDA timing asks Ray for the GPU (Ray hides GPUs from tasks that do not); CPU work and prepares do not
    assert unit_options(Unit("t", "time", {"device": "cuda"}, "a100"))["num_gpus"] == 1
    assert unit_options(Unit("t", "time", {"device": "cpu"}, "xeon"))["num_gpus"] == 0
    assert unit_options(Unit("p", "prepare", {"device": "cuda"}))["num_gpus"] == 0


def test_node_classes_come_from_live_prunebench_nodes() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 4.0, **node_resources("xeon")}},
        {"Alive": True, "Resources": {"CPU": 8.0, **node_resources("epyc")}},
        {"Alive": False, "Resources": node_resources("dead")},
        {"Alive": True, "Resources": {"CPU": 2.0, "prunebench_class_stray": 1.0}},  # no prunebench_node
        {"Alive": True, "Resources": node_resources("xeon")},
    ]
    assert classes_of(nodes) == {"epyc": 1, "xeon": 2} and list(classes_of(nodes)) == ["epyc", "xeon"]


def test_shipped_model_folders_round_trip_bit_exactly(tmp_path, dense) -> None:
    files = model_files(dense)
    assert set(files) == {"config.json", "model.safetensors"}
    back = as_model(files)
    for (ka, a), (kb, b) in zip(dense.state_dict().items(), back.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b)
    folder = write_folder(files, tmp_path / "m")
    write_folder(files, folder)  # replaces an earlier copy in place
    assert folder_files(folder) == files and not (tmp_path / "m.tmp").exists()
    from prunebench.user_files import UnsafeFileError

    for bad in ("../evil", "/etc/evil", "sub/../../evil"):
        with pytest.raises(UnsafeFileError, match="a path outside the folder"):
            write_folder({bad: b"x"}, tmp_path / "n")
    nested = {"config.json": b"{}", "1_Pooling/config.json": b"{}"}  # an HF folder's side folder travels too
    write_folder(nested, tmp_path / "hf")
    assert folder_files(tmp_path / "hf") == nested
    with pytest.raises(ValueError, match="not a saved model folder"):
        folder_files(tmp_path)


@pytest.mark.parametrize(("method", "sparsity"), [("magnitude", 0.5), ("wanda", 0.5), ("iterative", 0.5)])
def test_a_shipped_prepare_gives_the_same_variant_as_an_in_process_one(tmp_path, source, dense, method,
                                                                       sparsity) -> None:
    name = f"{method}@{sparsity}"
    local = _one(prepare_unit, _payload(name, method, sparsity, save_dir=str(tmp_path / "local")),
                 source=source, dense=copy.deepcopy(dense))
    shipped = _one(prepare_unit, _payload(name, method, sparsity, ship=True), source=source,
                   dense=model_files(dense))
    assert not local["failed"] and not shipped["failed"]
    assert local["model"] is not None and shipped["model"] is None and shipped["files"] is not None
    # the same bytes (same masks, same weights), all but the wall-clock seconds of the prune report
    files = folder_files(tmp_path / "local")
    assert files.keys() == shipped["files"].keys()
    assert all(files[k] == shipped["files"][k] for k in files if k != "prune_report.json")

    def timeless(record: dict) -> dict:
        report = {k: v for k, v in record["details"]["prune_report"].items() if not k.endswith("seconds")}
        # disk_bytes counts prune_report.json, whose seconds can print a digit longer
        kept = {k: v for k, v in record.items() if k not in ("prune_seconds", "details", "disk_bytes")}
        return {**kept, "spec": record["details"]["spec"], "report": report}

    assert timeless(local["record"]) == timeless(shipped["record"])
    assert local["evaluation"] == shipped["evaluation"]


def test_recovery_progress_is_emitted_throttled_before_the_units_result() -> None:
    items: list = []
    report = recovery_progress(items.append, "structured@0.5", every=0.25)
    for step, fraction in enumerate([0.1, 0.2, 0.36, 0.5, 0.61, 0.9, 1.0], start=1):
        report(fraction, step, 1.0 / step)
    assert [(i["name"], i["progress"], i["steps"]) for i in items] == [
        ("structured@0.5", 0.1, 1), ("structured@0.5", 0.36, 3), ("structured@0.5", 0.61, 5),
        ("structured@0.5", 0.9, 6)]


@pytest.mark.parametrize("progress", [True, False])
def test_a_one_shot_shrink_reports_its_recovery_only_when_asked(tmp_path, source, dense, progress) -> None:
    config = RunConfig(model="small", recovery_seconds=0.3, eval_batches=1, train_precision="fp32")
    recovering = PresetSource(config, Budgets.of(config), cache_dir=tmp_path, task=source.task)
    items: list = []
    prepare_unit(_payload("structured@0.5", "structured", 0.5, refit=False, evaluate=False, progress=progress),
                 items.append, source=recovering, dense=copy.deepcopy(dense))
    *ticks, result = items
    assert not result["failed"] and result["record"]["details"]["recovery"]["kind"] == "fine-tuning"
    assert bool(ticks) is progress
    assert all(set(t) == {"name", "progress", "steps", "loss"} for t in ticks)
    assert [t["progress"] for t in ticks] == sorted(t["progress"] for t in ticks)


def test_a_failed_prune_comes_back_as_a_record_not_an_exception(source, dense) -> None:
    out = _one(prepare_unit, _payload("magnitude@0.5", "magnitude", 0.5, ship=True, seq_len=SEQ * 8),
               source=source, dense=model_files(dense))
    assert out["failed"] and out["record"] is None and out["error"]


def test_time_unit_stamps_each_cell_with_its_node_class_and_fingerprint(source, dense) -> None:
    settings = BenchSettings(warmup=1, min_time=0.0, min_pairs=2, max_pairs=4, max_time=0.5, n_boot=50,
                             allow_busy=True)
    payload = {"todo": [("dense", 1), ("copy", 1), ("copy", 2)], "batch_sizes": [1, 2], "seq_len": SEQ,
               "device": "cpu", "threads": 1, "node_class": "epyc"}
    records: list = []
    time_unit(payload, records.append, models={"dense": model_files(dense), "copy": dense}, settings=settings,
              source=source)
    # exactly the cells asked for (dense at B=2 was not), each emitted once
    assert sorted((r.variant, r.batch_size) for r in records) == [("copy", 1), ("copy", 2), ("dense", 1)]
    for r in records:
        assert r.node_class == "epyc" and r.ok and len(r.extra["fingerprint_hash"]) == 12
        assert r.extra["environment"]["threads"] == 1 and r.to_row()["node_class"] == "epyc"


def _two_class_snapshot() -> dict:
    from tests.test_results_synthetic import make_snapshot

    snap = make_snapshot()
    env = {"cpu_model": "Other CPU", "threads": 4, "torch": "2.13.0"}
    other = [{**c, "node_class": "zen", "speedup": 3.0, "speedup_ci_low": 2.9, "speedup_ci_high": 3.1,
              "environment": env, "fingerprint_hash": "feedfacecafe"} for c in snap["cells"]]
    return {**snap, "cells": [{**c, "node_class": "local"} for c in snap["cells"]] + other}


def test_the_report_of_a_two_class_run_has_one_table_per_class_and_a_one_class_summary() -> None:
    snap = _two_class_snapshot()
    assert node_classes(snap) == ["local", "zen"]
    main_snap = main_snapshot(snap)
    assert {c["node_class"] for c in main_snap["cells"]} == {"local"}
    assert len(main_snap["cells"]) * 2 == len(snap["cells"])
    md = hardware_md(snap)
    assert md.count("### Node class ") == 2 and "feedfacecafe" in md and "Other CPU" in md
    assert "3.00×" in md.split("### Node class zen")[1]
    html = hardware_html(snap)
    assert html.count("<h3>Node class ") == 2 and "Across classes" in html
    one = {**snap, "cells": main_snap["cells"]}
    assert hardware_md(one) == "" and hardware_html(one) == "" and main_snapshot(one) == one
