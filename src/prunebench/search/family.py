"""One search run: latency table -> importance -> per target: search, build, verify (retry tighter), rescale,
compare against uniform pruning at the same measured speed -> a family of models, one per target.

Two guards keep a busy machine from producing a confident wrong model. The latency model's held-out check
must be within :attr:`SearchOptions.max_model_error` (median error) or the search stops before any pruning,
with one line naming the error, the load seen and what to do (:func:`untrusted_model`); and a target is
judged only on a quiet verifying measurement (:func:`prunebench.search.verify.measure_speedup`): a busy one
ends the target's tries (unmet and marked ``machine_busy`` unless an earlier quiet try met it), instead of
aiming higher on a distorted figure.

Each target is bracketed: a try that misses aims higher by the measured shortfall, one that overshoots by more
than :data:`OVERSHOOT` aims lower, and once both are known the next aim lies between them; the result is the
least-pruned try that met the target (the last try when none did).
``allow_busy`` lets both through, marked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from prunebench.analysis.accuracy import wilson
from prunebench.analysis.bootstrap import paired_delta_ci
from prunebench.backends import Runnable
from prunebench.bench.load import Contention, CpuMeter
from prunebench.errors import UntrustedTiming
from prunebench.models.batch import Batch, LossFn
from prunebench.models.io import save_model
from prunebench.pruning import PLAN_FILE
from prunebench.results.correctness import unpack_correct
from prunebench.search._arch import adapter_of, full_widths
from prunebench.search.allocate import Allocation, check_targets, reachable_speedup, search_widths
from prunebench.search.backend import (
    BASELINE,
    MIN_EAGER_AIM,
    BackendTimer,
    check_backend_model,
    measure_correction,
    refuse_model,
    unsearchable,
)
from prunebench.search.importance import check_search_calib, group_importance
from prunebench.search.latency import LatencyTable
from prunebench.search.measure import check_latency_model, measure_latency_table
from prunebench.search.options import SearchOptions
from prunebench.search.reconstruct import reconstruction_orders
from prunebench.search.rescale import rescale_
from prunebench.search.select import choose_allocation
from prunebench.search.verify import build, measure_speedup, uniform_at_measured

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
#: A verified model whose CI's low end is more than this fraction above its target was pruned more than the
#: target needs: the search aims lower (between aims that missed and overshot) while tries remain, and keeps the
#: least-pruned model that met it. *Learned*: all-MiniLM-L6-v2 on openvino-bf16 aimed at 4x measured 7.68x
#: [7.48-8.16] (1 head and 165 neurons per layer, probe -7.5 pp) on its only try: the backend correction fitted
#: on dense and a few configurations under-predicted the smallest models' speed.
OVERSHOOT = 0.10
#: Tries stop when the next aim would move the eager aim by less than this fraction (the same widths again).
AIM_RESOLUTION = 0.01
#: Evaluates ``model`` against ``reference``: a mapping with ``accuracy``, ``n_predictions`` and fidelity keys.
Evaluate = Callable[[nn.Module, nn.Module], Mapping[str, Any]]
#: Recovers a shrunk model in place after its refit (the model source's fine-tuning or distillation from dense);
#: returns what it did, or None when it did nothing.
Recover = Callable[[nn.Module], Mapping[str, Any] | None]
#: Evaluates ``model`` with its hidden states computed by a backend's ``runnable`` against ``reference`` (eager
#: dense): the mapping :data:`Evaluate` returns, or the one-line reason it cannot (``ModelSource.evaluate_backend``).
EvaluateBackend = Callable[[nn.Module, Runnable, nn.Module], Mapping[str, Any] | str]


class _Try(NamedTuple):
    """One verified try of a target: what the result of the target is made from."""

    alloc: Allocation
    chosen: str
    model: nn.Module
    plan: Any
    fidelity: Any
    got: Any
    busy: bool


def split_calibration(batches: Sequence[Batch]) -> tuple[Sequence[Batch], Sequence[Batch]]:
    """(fit, held-out): the first three quarters fit (OBS orders, refit), the rest judge; one batch does both."""
    split = max(1, len(batches) * 3 // 4) if len(batches) > 1 else 1
    return batches[:split], batches[split:] or batches[:1]


def _accuracy(evaluate: Evaluate | None, model: nn.Module, dense: nn.Module) -> dict[str, Any] | None:
    if evaluate is None:
        return None
    return _with_ci(evaluate(model, dense))


def _with_ci(result: Mapping[str, Any]) -> dict[str, Any]:
    """An evaluation with Wilson intervals of its accuracy (and agreement) over its predictions."""
    res = dict(result)
    n = int(res["n_predictions"])
    res["accuracy_ci"] = list(wilson(float(res["accuracy"]), n))
    if res.get("agreement") is not None:
        res["agreement_ci"] = list(wilson(float(res["agreement"]), n))
    return res


def paired_vs(candidate: Mapping[str, Any] | None, reference: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Paired-bootstrap CI of ``candidate`` accuracy minus ``reference`` accuracy over the same predictions.

    Both are :func:`_accuracy` results carrying per-prediction ``correct`` bits (packed) and, where one
    sequence holds several predictions, ``cluster_sizes`` (resampled whole); None when either lacks the bits
    or they scored a different number of predictions. Point accuracies of two models a few examples apart
    say nothing; this CI says whether one is *measurably* worse.
    """
    if not candidate or not reference or not candidate.get("correct") or not reference.get("correct"):
        return None
    n = int(candidate["n_predictions"])
    if n != int(reference["n_predictions"]):
        return None
    new, ref = unpack_correct(candidate["correct"], n), unpack_correct(reference["correct"], n)
    ci = paired_delta_ci(ref, new, candidate.get("cluster_sizes") or reference.get("cluster_sizes"))
    return {**ci.to_dict(), "describe": ci.describe()}


def save_member(folder: Path, model: nn.Module, plan: Any, manifest: dict[str, Any]) -> None:
    """Save one searched model: weights + config, ``plan.json`` and ``manifest.json`` (per-layer widths)."""
    save_model(model, folder, metadata={"search": {k: manifest[k] for k in ("target", "widths", "met")}})
    (folder / PLAN_FILE).write_text(json.dumps(plan.to_dict()) + "\n")
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass
class FamilyResult:
    """What :func:`search_family` returns.

    Attributes:
        report: JSON-ready report (what ``search.json`` holds).
        models: the searched model per target (shrunk, eval mode).
        plans: the plan (kept heads and neurons per layer of the dense model) per target.
    """

    report: dict[str, Any]
    models: dict[float, nn.Module]
    plans: dict[float, Any]


def untrusted_model(check: Mapping[str, Any], seen: Contention, limit: float) -> str | None:
    """The one line that stops a search whose latency model missed its held-out check by more than ``limit``
    (median relative error), saying how busy the machine was and what to do; None when the model is trusted.
    A check of the backend-corrected model (``check["backend"]``) names the backend."""
    error = float(check["median_abs_error"])
    if error <= limit:
        return None
    on = f" on {check['backend']}" if check.get("backend") else ""
    what = (f"latency model{on} not trusted: held-out median error {error:.0%} (max {check['max_abs_error']:.0%}) over "
            f"{len(check['configs'])} configurations, above {limit:.0%}; while it was measured {seen.describe()}")
    if seen.other_cores is not None and seen.other_cores > seen.level / 2:
        return f"{what}: rerun on a quiet machine (or pass --allow-busy to search on this model anyway)"
    return (f"{what}: the machine looked quiet, so the model does not fit this network at this shape; rerun "
            "(a passing burst), or pass --allow-busy to search on it anyway")


def _widths_rows(alloc: Allocation) -> list[dict[str, int]]:
    return [{"layer": i, "heads": h, "neurons": f} for i, (h, f) in enumerate(alloc.widths)]


def _rescaled_accuracy(model: nn.Module, dense: nn.Module, evaluate: Evaluate | None, *, rescale: bool,
                       fit: Sequence[Batch], held: Sequence[Batch], loss_fn: LossFn | None,
                       recover: Recover | None = None) -> dict[str, Any]:
    """Accuracy of ``model``, and with ``rescale`` its refit (in place) and the accuracy before it; then
    ``recover(model)`` (in place; None or a None record: no recovery) and the accuracy before that.

    The searched and the uniform model get the same treatment, so their comparison is of the widths alone.
    """
    out: dict[str, Any] = {"accuracy": _accuracy(evaluate, model, dense)}
    if rescale:
        out["accuracy_before_rescale"] = out["accuracy"]
        out["rescale"] = rescale_(model, dense, fit, held, loss_fn=loss_fn)
        if out["rescale"]["applied"]:
            out["accuracy"] = _accuracy(evaluate, model, dense)
    recovery = recover(model) if recover is not None else None
    if recovery is not None:
        model.eval()
        out["recovery"], out["accuracy_before_recovery"] = recovery, out["accuracy"]
        out["accuracy"] = _accuracy(evaluate, model, dense)
    return out


def search_family(
    dense: nn.Module,
    calib: Sequence[Batch] | None,
    options: SearchOptions,
    *,
    evaluate: Evaluate | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    table: LatencyTable | None = None,
    loss_fn: LossFn | None = None,
    recover: Recover | None = None,
    evaluate_backend: EvaluateBackend | None = None,
    backend_calibration: Sequence[Batch] = (),
    backend_check_text: Batch | None = None,
) -> FamilyResult:
    """Search, verify and save one model per target.

    Args:
        dense: the trained dense model (not modified).
        calib: labelled calibration batches (importance; the last quarter is held out to check rescaling).
        options: the run's settings.
        evaluate: accuracy and fidelity of a model against ``dense``; None skips accuracy.
        out_dir: where ``search-<target>x/`` folders, ``latency_table.json`` and ``search.json`` go.
        progress: called with one line per stage.
        table: a latency table measured earlier for this model and shape (None: measure it now).
        loss_fn: the task loss of a model without one (an HF base encoder's frozen probe); None: the adapter's.
        recover: recovery of each verified model (searched and uniform alike) after its refit, before it is
            evaluated and saved (``ModelSource.recover``: fine-tuning, or distillation from dense); None: none.
        evaluate_backend: accuracy with the hidden states computed on ``options.backend`` (where it changes the
            numerics), of dense and of each final model (``backend_accuracy``, with ``vs_dense``: the paired CI
            against dense eager); None: eager accuracy only.
        backend_calibration: task text for a backend that calibrates (``openvino-int8``'s static scales).
        backend_check_text: held-out task text the backend's outputs must also match eager on (None: the timed
            batch only).

    Returns:
        The models and the report written to ``search.json``: table, latency-model check, and per target the
        tries, the final model's widths, measured speedup and accuracy, and the uniform comparison.

    Raises:
        ValueError: no calibration data, or a target outside the reachable range (one line).
        UntrustedTiming: the latency model's held-out check missed by more than ``options.max_model_error``
            (unless ``options.allow_busy``); ``search.json`` holds the table and the check.
    """
    say = progress or (lambda line: log.info("%s", line))
    batches = check_search_calib(calib)  # before any timing: fail fast
    dense.eval()
    refuse_model(options.backend, dense)
    start = time.perf_counter()
    timer = None
    if options.backend != "eager":  # dense checked on the backend before minutes of tables: fail fast
        timer = BackendTimer(options.backend, dense, options.batch_size, options.seq_len, seed=options.seed,
                             threads=options.config_timing.threads, calibration=backend_calibration,
                             check_text=backend_check_text)
        try:
            timer.prepare(dense)
        except RuntimeError as exc:  # e.g. dynamic int8 of all-MiniLM-L6-v2: hidden cosine 0.92 to eager
            raise unsearchable(options.backend, "for the dense model", str(exc)) from None
    meter = CpuMeter()
    measuring = meter.read()
    if table is None:
        say(f"latency table at B={options.batch_size}, S={options.seq_len}")
        table = measure_latency_table(dense, options.batch_size, options.seq_len, neuron_step=options.neuron_step,
                                      calibration_configs=options.calibration_configs, timing=options.table_timing,
                                      config_timing=options.config_timing, backend="eager",
                                      seed=options.seed)
    elif (table.batch_size, table.seq_len, table.full) != (options.batch_size, options.seq_len,
                                                           full_widths(adapter_of(dense))):
        raise ValueError("the latency table was measured for another shape or model; measure it again")
    top = reachable_speedup(table)
    report: dict[str, Any] = {"options": {k: v for k, v in options.__dict__.items() if "timing" not in k},
                              "latency_table": table.to_dict(), "reachable": [1.0, top]}
    say(f"latency table: {table.measure_seconds:.0f}s, fixed {table.fixed:.2f} units, in-model factors "
        f"{table.scale:.2f} (heads) / {table.neuron_scale:.2f} (FFN) + linear {table.head_width_cost:.2f} / "
        f"{table.neuron_width_cost:.2f} units per layer, reachable up to {top:.2f}x")
    stages = {"latency_table": time.perf_counter() - start}
    out = None if out_dir is None else Path(out_dir)
    if options.check_configs:
        check = report["latency_check"] = check_latency_model(dense, table, n_configs=options.check_configs,
                                                              seed=options.seed, timing=options.config_timing)
        seen = meter.judge(measuring, threads=options.config_timing.threads or torch.get_num_threads(),
                           busy_share=options.config_timing.busy_share)
        say(f"latency model: median |error| {check['median_abs_error']:.1%} over "
            f"{options.check_configs} random configurations; {seen.describe()}")
        stages["latency_check"] = time.perf_counter() - start - stages["latency_table"]
        _gate(check, seen, options, report, out, say)
    top_eager, correction = top, None
    if timer is not None:
        t0 = time.perf_counter()
        say(f"whole-model timings on {options.backend} against {BASELINE}")
        correction = measure_correction(timer, dense, table, options.config_timing,
                                        random_configs=options.backend_configs, seed=options.seed)
        top = correction.speedup(top_eager)
        report["backend"] = {"name": options.backend, "baseline": BASELINE, "correction": correction.to_dict(),
                             "dense_speedup": correction.calibration[0]["measured"]}
        report["reachable"] = [1.0, top]
        say(f"{options.backend}: dense {correction.calibration[0]['measured']:.2f}x against {BASELINE}; latency "
            f"= {correction.scale:.2f} x eager model + {correction.offset:.2f}; reachable up to {top:.2f}x")
        if options.backend_check_configs:
            measuring = meter.read()
            bcheck = report["backend_check"] = check_backend_model(
                timer, dense, table, correction, options.config_timing, n_configs=options.backend_check_configs,
                seed=options.seed)
            seen = meter.judge(measuring, threads=options.config_timing.threads or torch.get_num_threads(),
                               busy_share=options.config_timing.busy_share)
            say(f"latency model on {options.backend}: median |error| {bcheck['median_abs_error']:.1%} over "
                f"{options.backend_check_configs} random configurations; {seen.describe()}")
            _gate(bcheck, seen, options, report, out, say)
        stages["backend"] = time.perf_counter() - t0
    # After the check: a table a busy machine distorted is refused as such, not as a target out of its reach.
    check_targets(options.targets, table, top=top)
    fit, held = split_calibration(batches)
    t0 = time.perf_counter()
    importance = group_importance(dense, batches, options.criterion, loss_fn)
    if options.keep == "obs":  # the fit batches only: the held-out ones judge candidates and the refit
        importance = replace(importance, orders=reconstruction_orders(dense, fit))
    stages["importance"] = time.perf_counter() - t0
    report["search_seconds"] = time.perf_counter() - start  # table + check + importance: the search's cost
    report["stage_seconds"] = stages
    say(f"importance ({options.criterion}) from {importance.n_batches} batches, kept groups by {options.keep}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "latency_table.json").write_text(json.dumps(table.to_dict(), indent=2) + "\n")
    dense_acc = _accuracy(evaluate, dense, dense)
    report["dense"] = {"accuracy": dense_acc}
    on_backend = timer is not None and timer.backend.changes_numerics and evaluate_backend is not None
    if on_backend:
        assert timer is not None and evaluate_backend is not None
        report["dense"].update(_backend_accuracy(timer, dense, dense, evaluate_backend, dense_acc))

    def to_eager(aim: float) -> float:
        """The eager latency model's speedup whose widths reach ``aim`` on the target backend."""
        if correction is None:
            return max(aim, MIN_EAGER_AIM)
        return min(max(correction.eager_aim(aim), MIN_EAGER_AIM), top_eager * 0.999)

    def measure(model: nn.Module) -> Any:
        if timer is not None:
            return timer.measure(model, options.verify_timing, meter=meter)
        return measure_speedup(dense, model, table, options.verify_timing, options.seed, meter=meter)

    def predicted(alloc: Allocation) -> float:
        return alloc.predicted_speedup if correction is None else correction.speedup(alloc.predicted_speedup)
    results, models, plans = [], {}, {}
    for target in options.targets:
        tries: list[dict[str, Any]] = []
        aim, missed, overshot = target, None, None  # aims known to miss / to overshoot the target
        best: _Try | None = None  # the least-pruned quiet try that met the target
        last: _Try | None = None  # the latest try
        for attempt in range(1, options.max_tries + 1):
            t0 = time.perf_counter()
            if options.select:
                choice = choose_allocation(importance, table, to_eager(aim),
                                           lambda a: build(dense, a, options.seq_len, options.seed), dense,
                                           fit=fit, held=held, rescale=options.rescale, loss_fn=loss_fn)
                alloc, chosen, candidates = choice.allocation, choice.name, choice.record
                model, plan, fidelity = choice.built
            else:
                alloc, chosen, candidates = search_widths(importance, table, to_eager(aim)), "importance", []
                model, plan, fidelity = build(dense, alloc, options.seq_len, options.seed)
            got = measure(model)
            busy = got.busy and not options.allow_busy  # no verdict on a measurement the machine distorted
            met = got.ci_low >= target and not busy
            tries.append({"attempt": attempt, "aimed_at": aim, "eager_aim": to_eager(aim),
                          "predicted": predicted(alloc),
                          "widths": _widths_rows(alloc), "retained_importance": alloc.retained,
                          "chosen": chosen, "candidates": candidates,
                          "measured": got.to_dict(), "met": met, "machine_busy": busy,
                          "seconds": time.perf_counter() - t0})
            last = _Try(alloc, chosen, model, plan, fidelity, got, busy)
            if met and (best is None or got.speedup < best.got.speedup):
                best = last
            overshoots = met and got.ci_low > target * (1.0 + OVERSHOOT)
            verdict = ("machine busy, not judged" if busy else
                       f"met, {got.ci_low / target:.2f}x the target: backing off" if overshoots and
                       attempt < options.max_tries else "met" if met else "not met")
            say(f"{target:g}x try {attempt}: {chosen} allocation, predicted {predicted(alloc):.2f}x, "
                f"measured {got.speedup:.2f}x [{got.ci_low:.2f}-{got.ci_high:.2f}] -> {verdict}")
            if busy or (met and not overshoots):
                break
            if met:  # pruned more than the target needs: aim lower, above any aim known to miss
                overshot = aim
                nxt = ((overshot * missed) ** 0.5 if missed is not None else
                       max(MIN_EAGER_AIM, aim * target / got.ci_low))
            else:
                if aim >= top * 0.999:
                    break
                missed = aim
                nxt = ((overshot * missed) ** 0.5 if overshot is not None else
                       min(top * 0.999, aim * target / max(got.ci_low, 1e-6) * 1.01))  # tighten by the miss
            if abs(to_eager(nxt) - to_eager(aim)) <= AIM_RESOLUTION * to_eager(aim):
                break  # the next try would build (nearly) the same widths
            aim = nxt
        assert last is not None
        alloc, chosen, model, plan, fidelity, got, busy = best if best is not None else last
        met = best is not None
        entry: dict[str, Any] = {"target": target, "met": met, "machine_busy": busy, "tries": tries,
                                 "widths": _widths_rows(alloc), "chosen": chosen,
                                 "measured": got.to_dict(), "fidelity": fidelity}
        finish = {"rescale": options.rescale, "fit": fit, "held": held, "loss_fn": loss_fn, "recover": recover}
        entry.update(_rescaled_accuracy(model, dense, evaluate, **finish))
        if on_backend:  # after the refit and recovery: the model that is saved, on the runtime it was searched for
            assert timer is not None and evaluate_backend is not None
            entry.update(_backend_accuracy(timer, model, dense, evaluate_backend, dense_acc))
        if options.compare_uniform:
            u_model, u_widths, fraction, u_got, attempts = uniform_at_measured(
                dense, importance, table, got.speedup, options.verify_timing, seed=options.seed,
                measure=measure, eager_aim=to_eager)
            entry["uniform"] = {"fraction": fraction, "widths": [list(w) for w in u_widths],
                                "measured": u_got.to_dict(), "attempts": attempts,
                                **_rescaled_accuracy(u_model, dense, evaluate, **finish)}
            if on_backend:
                assert timer is not None and evaluate_backend is not None
                entry["uniform"].update(_backend_accuracy(timer, u_model, dense, evaluate_backend, dense_acc))
            entry["vs_uniform"] = paired_vs(entry.get("accuracy"), entry["uniform"].get("accuracy"))
        if out is not None:
            folder = out / f"search-{target:g}x"
            entry["path"] = str(folder)
            save_member(folder, model, plan, {**entry, "criterion": options.criterion, "keep": options.keep,
                                              "backend": options.backend, "batch_size": options.batch_size,
                                              "seq_len": options.seq_len})
        results.append(entry)
        models[target], plans[target] = model, plan
    report["targets"] = results
    report["total_seconds"] = time.perf_counter() - start
    _write_report(out, report)
    return FamilyResult(report, models, plans)


def _gate(check: dict[str, Any], seen: Contention, options: SearchOptions, report: dict[str, Any],
          out: Path | None, say: Callable[[str], None]) -> None:
    """Record how busy the machine was during ``check`` (``check["contention"]``), then stop
    (:class:`UntrustedTiming`, ``search.json`` written) when ``check`` misses the limit; with ``allow_busy`` go on,
    marked."""
    check["contention"] = seen.to_dict()
    stop = untrusted_model(check, seen, options.max_model_error)
    if stop is None:
        return
    report["stopped"] = stop
    if not options.allow_busy:
        _write_report(out, report)
        raise UntrustedTiming(stop)
    report["latency_model_untrusted"] = True
    say(f"WARNING (--allow-busy): {stop}")


def _backend_accuracy(timer: BackendTimer, model: nn.Module, dense: nn.Module, evaluate: EvaluateBackend,
                      dense_eager: Mapping[str, Any] | None) -> dict[str, Any]:
    """``model`` prepared on the timer's backend (checked against eager first) and evaluated there; with
    ``vs_dense``, the paired CI of its accuracy against dense eager's (what switching model and runtime costs)."""
    runnable, fidelity = timer.prepare(model)
    result = evaluate(model, runnable, dense)
    if isinstance(result, str):  # the source cannot evaluate on a backend: say so, never borrow eager's
        return {"backend_accuracy_note": result, "backend_fidelity": fidelity}
    accuracy = _with_ci(result)
    return {"backend_accuracy": accuracy, "backend_fidelity": fidelity, "vs_dense": paired_vs(accuracy, dense_eager)}


def _write_report(out: Path | None, report: dict[str, Any]) -> None:
    """``search.json`` in ``out`` (nothing without one)."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "search.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
