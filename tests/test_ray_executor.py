"""The Ray executor on a real two-class Ray cluster on this machine (loopback only), with real kills.

One cluster (Ray's own ``Cluster`` test helper: a head of class ``alpha`` and a node of class ``beta``, one
CPU each, no dashboard) serves every test here and is shut down afterwards. The runs are real
``prunebench run`` subprocesses on the cheapest settings; a local run of the same config is the reference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Ray resolves 127.0.0.1 to the machine's network address unless told that this is not a real cluster;
# read when ray is first imported, so it is set before (tests must not listen beyond loopback).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")
safetensors_torch = pytest.importorskip("safetensors.torch")

from prunebench.runner.executors.ray_executor import node_resources  # noqa: E402
from tests.store_probe import kill_when, rows  # noqa: E402

pytestmark = pytest.mark.slow

CONFIG = ["--model", "small", "--quick", "--methods", "magnitude,structured", "--batch-sizes", "1",
          "--seq-len", "32", "--threads", "1", "--train-budget", "20", "--set", "min_time=0.1", "--allow-busy",
          # recovery in seconds depends on the machine's speed, as a seconds training budget does: none here,
          # where the claim is that the executor changes no weight
          "--recovery-seconds", "0"]
BATCHES = (1,)
VARIANTS = ("dense", "magnitude@0.5", "structured@0.5")


@pytest.fixture(scope="module")
def cluster():
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "resources": node_resources("alpha"),
        "include_dashboard": False})
    try:
        c.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources=node_resources("beta"))
        yield c.address
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def cache(quick_cache) -> Path:
    return quick_cache


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PRUNEBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "prunebench", "run", *args]


def _run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), capture_output=True, text=True, env=_env(cache), check=False, timeout=600)


def _worker_pid(title: str) -> int | None:
    """The pid of the Ray worker executing the task named ``title`` (Ray sets its process title)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.strip() == f"ray::{title}":
            return int(pid)
    return None


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("runs") / "local"
    proc = _run([*CONFIG, "--out", str(out)], cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory, cache, cluster, local_run) -> tuple[Path, bool]:
    """A Ray run of the same config whose structured prepare worker is SIGKILLed mid-task."""
    out = tmp_path_factory.mktemp("runs") / "ray"
    child = subprocess.Popen(_cmd(*CONFIG, "--out", str(out), "--executor", "ray", "--ray-address", cluster),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(cache))
    killed = False
    deadline = time.monotonic() + 240
    while not killed and child.poll() is None and time.monotonic() < deadline:
        pid = _worker_pid("prepare:structured@0.5")
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.2)  # the task runs for seconds; polling ps faster only costs the loaded machine CPU
    output, _ = child.communicate(timeout=600)
    assert child.returncode == 0, output[-4000:]
    return out, killed


def test_a_killed_worker_is_retried_and_the_run_completes(ray_run):
    out, killed = ray_run
    assert killed, "the structured prepare task was never seen running"
    store = out / "results.sqlite"
    assert {r[0] for r in rows(store, "SELECT name FROM variants WHERE status='ok'")} == set(VARIANTS)
    assert rows(store, "SELECT status FROM runs")[0][0] == "finished"


def test_ray_and_local_give_identical_models_and_accuracy_and_agreeing_timings(local_run, ray_run):
    out, _ = ray_run
    for name in VARIANTS:
        folder = name.replace("@", "_").replace(":", "_")
        a = safetensors_torch.load_file(local_run / "models" / folder / "model.safetensors")
        b = safetensors_torch.load_file(out / "models" / folder / "model.safetensors")
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), f"{name}: weights differ"
        if name != "dense":
            plans = [json.loads((r / "models" / folder / "plan.json").read_text()) for r in (local_run, out)]
            assert plans[0] == plans[1], f"{name}: masks differ"
    acc = "SELECT variant, accuracy, loss FROM evaluations ORDER BY variant"
    assert rows(local_run / "results.sqlite", acc) == rows(out / "results.sqlite", acc)
    cells = "SELECT variant, batch_size, node_class, speedup, speedup_ci_low, speedup_ci_high, extra FROM cells"
    local = {(v, b): (x, lo, hi) for v, b, _, x, lo, hi, _ in rows(local_run / "results.sqlite", cells)}
    remote = rows(out / "results.sqlite", cells)
    # every node class timed every cell, each stamped with its node's environment fingerprint
    assert sorted((v, b, c) for v, b, c, *_ in remote) == sorted(
        (v, b, c) for v in VARIANTS for b in BATCHES for c in ("alpha", "beta"))
    ray_cells = {(v, b): (x, lo, hi) for v, b, c, x, lo, hi, _ in remote if c == "alpha"}
    for *_, extra in remote:
        fields = json.loads(extra)
        assert fields["fingerprint_hash"] and fields["environment"]["threads"] == 1
    for b in BATCHES:
        # The CIs agree up to the machine's measured noise floor: how far either run's dense twin (identical
        # models) strayed from 1. On this shared 2-core machine plain CI overlap failed once for the twin
        # itself (local 1.08 [1.05-1.12] vs Ray 0.98 [0.93-1.04]); the twin is what measures that drift.
        noise = max(abs(local[("dense", b)][0] - 1), abs(ray_cells[("dense", b)][0] - 1))
        for v in ("dense", "structured@0.5"):
            (_, lo, hi), (_, low, high) = ray_cells[(v, b)], local[(v, b)]
            assert lo - noise <= high and low <= hi + noise, (
                f"{v} B={b}: Ray CI [{lo:.3f}, {hi:.3f}] vs local [{low:.3f}, {high:.3f}], noise floor {noise:.3f}")


def test_the_report_shows_one_table_per_node_class(ray_run):
    out, _ = ray_run
    html = (out / "report.html").read_text()
    assert "Node class alpha" in html and "Node class beta" in html and "Speedup per hardware class" in html
    summary = (out / "summary.md").read_text()
    assert summary.count("### Node class ") == 2


def test_a_killed_driver_resumes_skipping_everything_committed(tmp_path, cache, cluster, local_run):
    out = tmp_path / "killed"
    child = subprocess.Popen(_cmd(*CONFIG, "--out", str(out), "--executor", "ray", "--ray-address", cluster),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(cache))
    store = out / "results.sqlite"
    # dense (committed by the driver) and the first variant a worker sent back
    kill_when(child, store, "SELECT COUNT(*) FROM variants", 2, timeout=240)
    variants = "SELECT name, prune_seconds, disk_bytes, details FROM variants ORDER BY name"
    evaluations = "SELECT variant, accuracy, details FROM evaluations ORDER BY variant"
    before_variants, before_evals = rows(store, variants), rows(store, evaluations)
    before_cells = {r[:3]: r[3] for r in rows(store, "SELECT variant, batch_size, node_class, timing FROM cells")}
    assert len(before_variants) >= 2 and rows(store, "SELECT status FROM runs")[0][0] == "running"

    proc = _run(["--resume", str(out), "--executor", "ray", "--ray-address", cluster], cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after_variants, after_evals = rows(store, variants), rows(store, evaluations)
    assert {r[0] for r in after_variants} == set(VARIANTS) and len(after_evals) == len(VARIANTS)
    # what was committed before the kill is kept, not redone
    assert [r for r in after_variants if r in before_variants] == before_variants
    assert [r for r in after_evals if r in before_evals] == before_evals
    after_cells = {r[:3]: r[3] for r in rows(store, "SELECT variant, batch_size, node_class, timing FROM cells")}
    assert len(after_cells) == len(VARIANTS) * len(BATCHES) * 2
    assert all(after_cells[k] == raw for k, raw in before_cells.items())
    assert rows(store, "SELECT status FROM runs")[0][0] == "finished"
