"""``prunebench bench MODEL [--baseline MODEL]``: paired latency/throughput sweep with memory and FLOPs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from prunebench.analysis import mostly_busy
from prunebench.backends import BACKENDS, DEFAULT_BACKEND
from prunebench.backends.cells import backend_sweep
from prunebench.bench.env import environment, fingerprint_hash
from prunebench.bench.inputs import parse_device
from prunebench.bench.memory import parameter_report
from prunebench.bench.records import BenchReport
from prunebench.bench.settings import BENCH_PRESETS, bench_settings
from prunebench.bench.sweep import sweep
from prunebench.cli.common import (
    EXIT_UNTRUSTED,
    add_busy_args,
    console,
    int_list,
    load_hf_arg,
    positive_int,
    print_json,
    seconds,
    seed_value,
    warn_threads,
)
from prunebench.errors import PrunebenchError
from prunebench.models.adapters import find_adapter
from prunebench.models.io import check_batch_fits_memory, load_model, nonfinite_tensor, shape_config
from prunebench.models.presets import PRESETS, create_model
from prunebench.outdir import check_writable_dir
from prunebench.results.cell import CellRecord

#: ``--json`` without a file: the records go to stdout.
STDOUT = Path("-")


def _fraction(value: str) -> float:
    """argparse type: a fraction in [0, 1)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value!r}")
    return number


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser("bench", help="time a model (against a baseline) across batch sizes",
                       description="Paired, interleaved timing of MODEL against --baseline on identical inputs, "
                       "with throughput, speedup CI, peak memory, FLOPs and the CPU other processes used; the "
                       "baseline is also timed against an identical twin (its CI is the noise floor). Cells are "
                       "timed in blocks, round-robin; a block during which other processes held the cores is "
                       "discarded and timed again, and a cell without enough quiet blocks is 'unmeasured'. "
                       "MODEL is a saved model folder or a preset name (randomly initialized).")
    p.add_argument("model", metavar="MODEL_DIR|PRESET", help="saved model folder, preset (small, medium, large), "
                   "or a Hugging Face model folder")
    p.add_argument("--baseline", metavar="MODEL_DIR|PRESET",
                   help="reference model; omitted: MODEL against an identical twin (the noise floor)")
    p.add_argument("--batch-sizes", type=int_list, default=(1, 2, 4, 8, 16), help="e.g. 1,2,4,8,16")
    p.add_argument("--seq-len", type=positive_int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads while timing (default: as is)")
    p.add_argument("--budget", default="default", choices=BENCH_PRESETS.names(),
                   help="time budget per cell (quick: a few seconds a cell)")
    p.add_argument("--min-time", type=seconds, default=None, help="seconds of timing at least, per cell")
    p.add_argument("--max-time", type=seconds, default=None, help="seconds of timing at most, per cell")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--pad-fraction", type=_fraction, default=0.0, help="expected fraction of padding tokens")
    p.add_argument("--include-head", action="store_true", help="time the task head too (default: encoder only)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the inputs, the bootstrap and preset weights")
    p.add_argument("--json", metavar="OUT", type=Path, nargs="?", const=STDOUT,
                   help="all records as JSON: --json alone prints them on stdout (the tables then go to stderr), "
                   "--json OUT writes the file OUT")
    p.add_argument("--backend", default=DEFAULT_BACKEND, metavar="B",
                   help=f"run MODEL on this backend ({', '.join(BACKENDS.names())}); timed against the baseline "
                   "(default: MODEL itself) on eager, after its outputs matched eager")
    add_busy_args(p)
    p.set_defaults(handler=run)


def _load(spec: str, device: Any, seed: int) -> tuple[str, nn.Module, Path | None]:
    """(label, model in eval mode on device, folder or None) for a folder path or a preset name."""
    path = Path(spec)
    hf = load_hf_arg(spec, device)
    if hf is not None:
        return (path.resolve().name if path.is_dir() else spec), hf, path if path.is_dir() else None
    if path.is_dir():
        return (path.resolve().name or spec), load_model(path, device).eval(), path
    if spec in PRESETS:
        return spec, create_model(spec, seed=seed).eval().to(device), None
    raise PrunebenchError(f"{spec!r} is neither a model folder nor a preset; presets: {', '.join(PRESETS.names())}")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def _table(cells: list[CellRecord], baseline: str) -> Table:
    table = Table(title=f"Latency and throughput (speedup = {baseline} time / model time: median of pairs, 95% CI; "
                  f"the {baseline} row is timed against an identical twin: the noise floor)")
    for col in ("model", "batch", "seq", "median ms", "p90 ms", "cv", "samples/s", "tokens/s", "speedup [95% CI]",
                "pairs", "FLOP-ideal", "GMACs", "peak MB", "other CPU", "status"):
        table.add_column(col, justify="left" if col in ("model", "status") else "right")
    for c in cells:
        speed = "-"
        if c.speedup is not None:
            speed = f"{c.speedup:.3f} [{c.speedup_ci_low:.3f}, {c.speedup_ci_high:.3f}]"
            if c.variant == baseline:
                speed += " (twin)"
        load = "-" if c.other_cores_max is None else f"{c.other_cores or 0.0:.2f} (max {c.other_cores_max:.2f})"
        load += f", {c.discarded_blocks} discarded" if c.discarded_blocks else ""
        load += " CONTENDED" if c.ok and c.contended else ""
        table.add_row(
            c.variant, str(c.batch_size), str(c.seq_len),
            f"{c.latency_ms:.2f}" if c.latency_ms is not None else "-",
            f"{c.latency_p90_ms:.2f}" if c.latency_p90_ms is not None else "-",
            f"{c.latency_cv:.2f}" if c.latency_cv is not None else "-",
            f"{c.throughput_samples_s:.1f}" if c.throughput_samples_s else "-",
            f"{c.throughput_tokens_s:.0f}" if c.throughput_tokens_s else "-",
            speed, str(c.n_pairs) if c.n_pairs else "-",
            f"{c.flop_ideal_speedup:.2f}x" if c.flop_ideal_speedup is not None else "-",
            f"{c.macs / 1e9:.2f}" if c.macs is not None else "-", _mb(c.peak_memory_bytes), load,
            c.status if c.ok else f"{c.status}: {c.error}",  # a skip shows its reason the same way
        )
    return table


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise PrunebenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Load the models, run the sweep with a progress bar, print the table, write JSON."""
    device = parse_device(args.device)
    chosen = BACKENDS.get(args.backend)  # an unknown backend names the valid ones before any model is loaded
    if getattr(chosen, "needs_calibration", False):
        raise PrunebenchError(f"backend {args.backend} calibrates on task text, which `bench` has none of: use "
                              f"`prunebench run --backends {args.backend}` (it calibrates on the run's task)")
    settings = bench_settings(
        args.budget, min_time=args.min_time, max_time=args.max_time, threads=args.threads, device=device.type,
        include_head=args.include_head, pad_fraction=args.pad_fraction, measure_memory=not args.no_memory,
        seed=args.seed, allow_busy=args.allow_busy,
    )
    if settings.max_time < settings.min_time:
        raise ValueError(f"--max-time ({settings.max_time}) must be >= --min-time ({settings.min_time})")
    if args.json is not None and args.json != STDOUT:
        if args.json.is_dir():
            raise PrunebenchError(f"--json {args.json} is a folder; give a file name")
        check_writable_dir(args.json.parent, "--json")
    warn_threads(args.threads)
    name, model, folder = _load(args.model, device, args.seed)
    models = {name: (model, folder)}
    baseline = name
    if args.backend != DEFAULT_BACKEND:
        name = f"{name} [{args.backend}]"
        models = {baseline: (model, folder), name: (model, folder)}
    if args.baseline is not None:
        base_name, base_model, base_folder = _load(args.baseline, device, args.seed)
        if base_name == name:
            base_name = f"{base_name} (baseline)"
        models = {base_name: (base_model, base_folder), name: (model, folder)}
        baseline = base_name
    if args.backend != DEFAULT_BACKEND:
        backend = BACKENDS.get(args.backend)
        reason = backend.availability() or backend.skip_reason(model)
        if reason:
            raise PrunebenchError(f"backend {args.backend}: {reason}")
    for label, (m, _) in models.items():
        bad = nonfinite_tensor(m)
        if bad is not None:
            raise PrunebenchError(f"{label} has NaN/Inf weights (tensor {bad!r}); its outputs cannot be checked, "
                                  "so nothing is timed")
        adapter = find_adapter(m)
        limit = None if adapter is None else adapter.max_seq_len
        if limit is not None and args.seq_len > limit:
            raise ValueError(f"--seq-len {args.seq_len} exceeds {label}'s max_positions {limit}")
        if adapter is not None:  # a batch that cannot fit is refused before any input is allocated
            largest = max(args.batch_sizes)
            check_batch_fits_memory(shape_config(m), largest, args.seq_len, f"--batch-sizes {largest}",
                                    training=False)
    to_stdout = args.json == STDOUT
    out = console(stderr=to_stdout)  # stdout carries only the JSON then, for a pipe
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(stderr=True), transient=True) as bar:
        per_shape = len(models) if args.backend == DEFAULT_BACKEND else 1  # a backend sweep has no baseline cell
        task = bar.add_task("benchmarking", total=len(args.batch_sizes) * per_shape)

        def tick(done: int, total: int, cell: CellRecord) -> None:
            bar.update(task, completed=done, description=f"{cell.variant} b={cell.batch_size}")

        if args.backend == DEFAULT_BACKEND:
            cells = sweep({k: m for k, (m, _) in models.items()}, batch_sizes=args.batch_sizes,
                          seq_lens=(args.seq_len,), baseline=baseline, settings=settings, progress=tick)
        else:
            cells = backend_sweep(models[baseline][0], model, args.backend, args.batch_sizes, args.seq_len, settings,
                                  names=(baseline, name), progress=tick)
    env = environment(device, threads=cells[0].threads if cells else settings.threads)
    memory = {k: parameter_report(m, f).to_dict() for k, (m, f) in models.items()}
    mem_table = Table(title="Model size")
    for col in ("model", "params", "non-zero", "param MB", "disk MB"):
        mem_table.add_column(col, justify="left" if col == "model" else "right")
    for k, rep in memory.items():
        mem_table.add_row(k, f"{rep['param_count']:,}", f"{rep['nonzero_count']:,}", _mb(rep["param_bytes"]),
                          _mb(rep["disk_bytes"]))
    out.print(mem_table)
    out.print(_table(cells, baseline))
    out.print(f"threads {cells[0].threads if cells else '-'}, device {device.type}, "
              f"environment {fingerprint_hash(env)}, timed: {'encoder + head' if args.include_head else 'encoder'}")
    if args.json is not None:
        report = BenchReport(
            environment=env, fingerprint=fingerprint_hash(env), settings=settings.to_dict(), baseline=baseline,
            models={k: {"source": str(f) if f else k, "memory": memory[k]} for k, (_, f) in models.items()},
            cells=cells,
        )
        if to_stdout:
            print_json(report.to_dict())
        else:
            _write_json(args.json, report.to_dict())
            out.print(f"wrote {args.json}")
    if any(c.failed for c in cells):  # a skip (the backend cannot express it) is no failure, nor an unmeasured cell
        return 1
    if args.strict and mostly_busy(cells):
        out.print(f"--strict: most timed cells were contended or unmeasured (exit {EXIT_UNTRUSTED})")
        return EXIT_UNTRUSTED
    return 0
