"""A sweep of 4 variants with ``--executor ray`` on 2 simulated nodes against 1 node: wall time of the run.

Two Ray clusters live on this machine at once (Ray's ``Cluster`` test helper, loopback only, no dashboard):
one with a single node and one with two nodes, every node one CPU and of the same class ``sim``, so both
do the same work (one class times every cell). The same ``prunebench run`` (a fresh run folder each time,
dense baseline from a warmed cache) is run against each in turn, interleaved A B A B ..., and the ratio of
wall times is taken per pair, so machine drift hits both sides of a pair alike.

What bounds the ratio here: the machine has 2 cores shared with other work, so 2 one-CPU nodes can at best
halve the parallel stages (prepare and timing units); the driver's own stages (loading the task and the
dense model, evaluating dense, the report) and each node's worker start-up do not shrink. Timings measured
on two simulated nodes of one machine also contend for the same cores and memory: this measures sweep
throughput, not the quality of those timings.

    flock /tmp/prunebench-bench.lock python benchmarks/ray_sweep.py --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback (read at import)

from ray.cluster_utils import Cluster

from prunebench.runner.executors.ray_executor import node_resources

#: Default budgets (not --quick): with --quick, worker start-up and the driver's fixed stages outweigh the
#: units themselves (measured: 2 nodes 0.74-0.91x of 1 node), which says nothing about distributing a sweep.
RUN = ["--model", "small", "--methods", "magnitude,structured,wanda,nm", "--batch-sizes", "1,8,32",
       "--seq-len", "128", "--threads", "1"]


def _cluster(n_nodes: int) -> Cluster:
    args = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "resources": node_resources("sim"),
            "include_dashboard": False}
    c = Cluster(initialize_head=True, head_node_args=args)
    for _ in range(n_nodes - 1):
        c.add_node(**{k: v for k, v in args.items() if k != "include_dashboard"})
    return c


def _run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "prunebench", "run", *args], capture_output=True, text=True,
                          env=env, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="interleaved pairs of runs (default: 2)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ray_sweep.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-sweep-"))
    env = {**os.environ, "PRUNEBENCH_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    warm = _run([*RUN, "--out", str(work / "warm")], env)  # tokenizer + dense baseline into the cache
    print(f"cache warmed by a local run in {warm:.1f} s", flush=True)
    clusters = {1: _cluster(1), 2: _cluster(2)}
    try:
        walls: dict[int, list[float]] = {1: [], 2: []}
        for rep in range(args.reps):
            for n in (1, 2) if rep % 2 == 0 else (2, 1):
                out = work / f"rep{rep}-{n}node"
                walls[n].append(_run([*RUN, "--out", str(out), "--executor", "ray",
                                      "--ray-address", clusters[n].address], env))
                print(f"rep {rep}: {n} node(s): {walls[n][-1]:.1f} s", flush=True)
    finally:
        for c in clusters.values():
            c.shutdown()
    ratios = [a / b for a, b in zip(walls[1], walls[2], strict=True)]
    result = {
        "what": "wall seconds of `prunebench run --executor ray` (4 variants) on 1 vs 2 simulated one-CPU nodes",
        "run_args": RUN, "reps": args.reps, "cpu_count": os.cpu_count(),
        "load_average_after": os.getloadavg(), "wall_1_node_s": walls[1], "wall_2_nodes_s": walls[2],
        "ratio_1_over_2_per_pair": ratios, "ratio_median": statistics.median(ratios),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"1 node / 2 nodes wall time: median {result['ratio_median']:.2f}x (pairs: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); saved {args.out}")


if __name__ == "__main__":
    main()
