"""``prunebench run --model <HF folder>``: prune a pretrained Hugging Face encoder, check, evaluate, time, report.

The same stages and store as the run of our own encoder (:mod:`prunebench.runner.pipeline`), with what a
pretrained model needs instead of training:

    data     the model's own tokenizer; the labelled task (``--task``; the built-in tweet-sentiment task
             by default) for base and classifier models, the stdlib corpus for masked-LM models
    dense    loaded offline, saved, scored by :class:`~prunebench.tasks.hf_suite.HFEvaluator` (a frozen
             probe fitted on the dense train embeddings, kept for every variant)
    variants structured: heads + neurons ranked by their activation on task text, removed on the HF modules,
             checked against the masked reference, output projections refitted by least squares, then
             distilled from dense for a few seconds; every other method through the pruning engine, with
             calibration from task text; each saved, reloaded bit-identically, and scored on the same examples
    bench    the HF modules timed paired against dense, as the main run does

Evaluation records are the built-in run's (:class:`~prunebench.tasks.evaluation.EvalResult`): per-example
correctness of the headline metric (base64 bits), so the report's accuracy deltas get their paired bootstrap
CI, plus every HF metric with its own paired CI under ``details.extra``.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch

from prunebench.bench import disk_bytes
from prunebench.config import RunConfig
from prunebench.models import save_model
from prunebench.models.batch import Batch
from prunebench.pruning import apply_plan_, check_fidelity, prune_with_plan_, save_pruned
from prunebench.pruning.criteria import get_criterion
from prunebench.pruning.group_importance import shrink_refit_, shrink_uniform_
from prunebench.pruning.spec import METHODS
from prunebench.results import ResultStore
from prunebench.runner.variants import prune_spec
from prunebench.tasks import calibration_batches
from prunebench.tasks.hf_distill import distill_
from prunebench.tasks.hf_eval import read_pooling
from prunebench.tasks.hf_suite import HFEvaluator, probe_loss
from prunebench.tasks.hf_text import TextTask, TokenizedTexts, corpus_text_task, labelled_text_task

logger = logging.getLogger(__name__)

#: ``--quick`` distils for a token second at most (``config.recovery_seconds`` otherwise; the refit does most
#: of the work, see the README).
QUICK_RECOVERY_SECONDS = 1.0
#: Calibration texts for activation scores, the refit and Wanda / Taylor.
CALIB_TEXTS = 256
#: The criterion (registry name) ranking heads and neurons of a structured HF variant.
STRUCTURED_CRITERION = "activation"


def hf_task(config: RunConfig, kind: str) -> tuple[TextTask | None, TextTask | None]:
    """(labelled task, corpus) of an HF run: ``--task`` for base / classifier models, the corpus for MLM."""
    spec = "tweets" if config.task == "mlm" else config.task
    if kind == "mlm":
        return (None if config.task == "mlm" else labelled_text_task(spec)), corpus_text_task()
    return labelled_text_task(spec), None


class HFRun:
    """The stages of one HF run (dense, variants, evaluation records) on a prepared run folder.

    Args:
        config: the run config (``config.model`` is the HF folder).
        model_dir: where variant folders go (``run_dir.model_dir``), or None not to save models.
        tick: ``tick(stage, detail, advance)`` progress callback.
    """

    def __init__(self, config: RunConfig, model_dir: Any, tick: Any) -> None:
        from prunebench.models.hf import hf_adapter_for, load_hf_model, load_hf_tokenizer

        self.config, self.model_dir, self.tick = config, model_dir, tick
        self.adapter_for = hf_adapter_for
        self.dense = load_hf_model(config.model).eval()
        self.tokenizer = load_hf_tokenizer(config.model)
        self.pooling = read_pooling(config.model)
        self.kind = hf_adapter_for(self.dense).head_kind
        self.task, self.corpus = hf_task(config, self.kind)
        self.evaluator = HFEvaluator(self.dense, self.tokenizer, task=self.task, corpus=self.corpus,
                                     pooling=self.pooling, seed=config.seed)
        source = self.task or self.corpus
        assert source is not None  # hf_task gives a labelled task or the corpus
        self.texts = TokenizedTexts.of(source, self.tokenizer, mlm=self.kind == "mlm")
        self.calib = calibration_batches(self.texts, CALIB_TEXTS, batch_size=32, seed=config.seed + 1)
        # Unseen text that decides whether distillation helped (else its weights are put back).
        self.held_out = calibration_batches(self.texts, 64, batch_size=64, split="val", seed=config.seed + 2)[0]
        loss_fn = probe_loss(self.evaluator.probe, self.pooling) if self.evaluator.probe is not None else None
        self.loss_fn = loss_fn
        pad = self.tokenizer.pad_token_id or 0
        gen = torch.Generator().manual_seed(config.seed + 1)
        ids = torch.randint(5, len(self.tokenizer), (2, 24), generator=gen)  # [2, 24]
        mask = torch.ones_like(ids)
        mask[1, 16:] = 0  # a padded row: masks must keep applying after the shrink
        self._scores: dict[str, list[torch.Tensor]] | None = None
        self.check_batch: Batch = {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}

    def fingerprint(self) -> dict[str, Any]:
        """What the accuracy figures were measured on (stored with the run)."""
        return {"model": str(self.config.model), "kind": self.kind,
                "task": self.task.info if self.task else None, "corpus": self.corpus.info if self.corpus else None,
                "pooling": self.pooling.__dict__}

    # --------------------------------------------------------------------------------------- records
    def describe(self, model: torch.nn.Module, name: str, method: str, requested: float,
                 disk: int | None) -> dict[str, Any]:
        """Size and cost of ``model`` as a variant record."""
        ad = self.adapter_for(model)
        params = [p for p in model.parameters()]
        seq = self.config.seq_len
        return {
            "name": name, "method": method, "requested_sparsity": requested, "measured_sparsity": 0.0,
            "materialization": "dense", "params": sum(p.numel() for p in params),
            "nonzero_params": sum(int(torch.count_nonzero(p)) for p in params),
            "encoder_params": sum(p.numel() for p in ad.encoder_parameters()), "disk_bytes": disk,
            "macs": ad.macs(1, seq)["total"], "effective_macs": ad.macs(1, seq, effective=True)["total"],
            "status": "ok", "error": None, "details": {"config": ad.config_dict()},
        }

    def evaluate(self, store: ResultStore, name: str, model: torch.nn.Module) -> None:
        """Score ``model`` on the HF task and store the evaluation (the one record: headline metric and its
        per-prediction bits, every HF metric with its paired delta under ``details.extra``)."""
        res = self.evaluator.score(model)
        store.put_evaluation(self.evaluator.result(res).record(name))
        self.tick("eval", f"{name}: {res.describe()}")

    # -------------------------------------------------------------------------------------- variants
    def recovery_seconds(self) -> float:
        """Seconds of distillation after each structured shrink (``--quick``: at most a token second)."""
        seconds = self.config.recovery_seconds
        return min(seconds, QUICK_RECOVERY_SECONDS) if self.config.quick else seconds

    def structured(self, sparsity: float) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Activation-ranked heads + neurons removed, checked against the masked reference, refitted, distilled."""
        dense_ad = self.adapter_for(self.dense)
        if self._scores is None:  # the dense model's scores: the same for every sparsity
            self._scores = get_criterion(STRUCTURED_CRITERION).group_scores_many(
                dense_ad, ("heads", "neurons"), self.calib[:8], self.config.seed)
        scores = self._scores
        shrunk, masked = copy.deepcopy(self.dense), copy.deepcopy(self.dense)
        kept = shrink_uniform_(self.adapter_for(shrunk), sparsity, scores)
        mad = self.adapter_for(masked)
        for kind, layers in kept.items():
            for i, keep in enumerate(layers):
                mad.zero_groups_(kind, i, sorted(set(range(mad.group_count(kind, i))) - set(keep)))
        fidelity = {**check_fidelity(masked, shrunk, self.check_batch),
                    "reference": "masked-dense (before refit and recovery)"}
        del masked, shrunk
        model = copy.deepcopy(self.dense)
        start = time.perf_counter()
        shrink_refit_(self.adapter_for(model), dense_ad, sparsity, scores, self.calib)
        refit_s = time.perf_counter() - start
        details: dict[str, Any] = {"kept": kept, "criterion": STRUCTURED_CRITERION, "refit_seconds": refit_s}
        if self.recovery_seconds() > 0:
            stream = self.texts.train_stream(16, seed=self.config.seed)
            # One held-out check mid-way (each costs about a training step; the budget is short).
            history = distill_(model, self.dense, stream, held_out=self.held_out, seconds=self.recovery_seconds(),
                               pooling=self.pooling, checks=1)
            details["recovery"] = history.to_dict()
        model.eval()
        return model, {"fidelity": fidelity, "materialization": "shrink", "details": details}

    def engine(self, name: str, method: str, sparsity: float) -> tuple[torch.nn.Module, dict[str, Any], Any, Any]:
        """Any other method through the pruning engine (calibration from task text); fidelity vs masked dense."""
        spec = prune_spec(method, sparsity, seed=self.config.seed, iterative_steps=self.config.iterative_steps,
                          schedule=self.config.schedule)
        model = copy.deepcopy(self.dense)
        adapter = self.adapter_for(model, loss_fn=self.loss_fn)
        report, plan = prune_with_plan_(adapter, spec, calib=self.calib if spec.needs_calib else None)
        model.eval()
        gradual = METHODS.get(method).gradual  # fine-tuned between steps: its own masks are the reference
        reference = copy.deepcopy(model if gradual else self.dense)
        apply_plan_(self.adapter_for(reference), plan, "zeros")
        fidelity = {**check_fidelity(reference, model, self.check_batch),
                    "reference": "masks-reapplied" if gradual else "masked-dense"}
        extra = {"fidelity": fidelity, "materialization": report.materialization,
                 "measured_sparsity": report.measured_sparsity,
                 "details": {"spec": spec.to_dict(), "prune_report": report.to_dict()}}
        return model, extra, plan, report

    def variant(self, name: str, method: str, sparsity: float) -> tuple[torch.nn.Module, dict[str, Any]]:
        """One variant: pruned, checked, saved + reloaded (bit-identical), described."""
        from prunebench.models import load_model

        start = time.perf_counter()
        plan = report = None
        if METHODS.get(method).structured:
            model, extra = self.structured(sparsity)
        else:
            model, extra, plan, report = self.engine(name, method, sparsity)
        seconds = time.perf_counter() - start
        folder = self.model_dir(name) if self.model_dir is not None else None
        fidelity = extra["fidelity"]
        if folder is not None:
            meta = {"variant": name, "method": method, "sparsity": sparsity}
            if plan is not None and report is not None:
                save_pruned(model, folder, plan, report, metadata=meta)
            else:
                save_model(model, folder, metadata=meta)
            reload = check_fidelity(model, load_model(folder), self.check_batch, atol=0.0)
            fidelity.update(reload_max_abs_diff=reload["max_abs_diff"], reload_ok=reload["ok"])
            fidelity["ok"] = bool(fidelity["ok"] and reload["ok"])
        record = self.describe(model, name, method, sparsity, disk_bytes(folder) if folder else None)
        dense_params = sum(p.numel() for p in self.adapter_for(self.dense).encoder_parameters())
        measured = extra.get("measured_sparsity", 1.0 - record["encoder_params"] / dense_params)
        record.update(measured_sparsity=measured, materialization=extra["materialization"], prune_seconds=seconds,
                      fidelity=fidelity)
        record["details"].update(extra["details"])
        return model, record


def save_dense(run: HFRun, folder: Path | None) -> int | None:
    """Save the dense model (with its tokenizer files) into ``folder``; its size on disk."""
    if folder is None:
        return None
    save_model(run.dense, folder, metadata={"variant": "dense"})
    return disk_bytes(folder)


def corpus_of(run: HFRun) -> dict[str, Any]:
    """The run record's ``corpus`` field for an HF run."""
    return {"task": run.fingerprint(), "baseline": {"model": str(run.config.model), "kind": run.kind}}


def hf_variants(config: RunConfig) -> list[tuple[str, str, float]]:
    """The run's variants (an HF config defaults to :data:`~prunebench.config.HF_SPARSITIES`)."""
    return config.variants()
