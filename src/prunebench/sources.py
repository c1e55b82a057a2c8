"""Where a run's dense model comes from: the one seam between the run pipeline and a kind of model.

:mod:`prunebench.runner.pipeline` runs every stage (variants, evaluation, timing, backends, search targets,
both executors, resume) over a :class:`ModelSource`. A source gives the run what differs by kind of model:

=======================  =======================================  =============================================
                         :class:`PresetSource` (our encoder)      :class:`HFSource` (a pretrained HF folder)
=======================  =======================================  =============================================
dense model              trained on the task, or the cached one   loaded offline from the folder
tokenizer and task       the task's own (``mlm``, ``csv:``...)    the model's tokenizer over the task's texts
calibration              task sequences (labelled)                the ``--calib-task`` mix (default: the task)
evaluation               ``tasks.evaluate``                       ``tasks.hf_suite.HFEvaluator``; a base
                                                                  encoder's fidelity also on Python docs prose
structured criterion     the method's default                     ``activation``
recovery between steps   fine-tuning on the task                  distillation from dense
recovery after a shrink  fine-tuning (``recovery_seconds``)       distillation from dense (``recovery_seconds``)
options it cannot honour none                                     :attr:`HFSource.unsupported`
=======================  =======================================  =============================================

Both produce the same :class:`~prunebench.tasks.evaluation.EvalResult`, the same calibration batch format and
the same unit payloads, so a new kind (a decoder, a ViT) is one new source class plus its adapter.

A source travels to Ray workers with the prepare units (once per run, by Ray's serializer), so it holds no
model: the HF evaluator, built from the dense model, is rebuilt lazily in the process that needs it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from prunebench.bench import make_inputs
from prunebench.config import RunConfig
from prunebench.models.batch import Batch, LossFn
from prunebench.tasks import calibration_batches, mixed_stream
from prunebench.tasks.evaluation import EvalResult

if TYPE_CHECKING:
    # prunebench.runner's package imports its pipeline, which imports this module: Budgets is read lazily.
    from prunebench.runner.budgets import Budgets
    from prunebench.tasks.training import Progress

logger = logging.getLogger(__name__)

#: ``on_step(step, sparsity, model)``: recovery between the steps of a gradual method.
OnStep = Callable[[int, float, nn.Module], None]
#: ``tick(stage, detail, advance)``: the run's progress counter.
Tick = Callable[..., None]
#: Texts (or task sequences) the fidelity check of ``prunebench prune`` reads from the test split.
FIDELITY_TEXTS = 256
#: Paragraphs of Python docs prose the second-domain fidelity reads: about as many tokens as :data:`FIDELITY_TEXTS`
#: tweets (a paragraph is cut at 128 tokens, a tweet has ~30), so each variant of a MiniLM run pays seconds for it.
OTHER_DOMAIN_TEXTS = 64
#: Tokens per text a pretrained encoder reads (at most: its position embeddings may cover fewer).
TEXT_TOKENS = 128
#: ``--quick`` scores a labelled task on this many test texts (a smoke run; the full split is 3,777 tweets, whose
#: evaluation on every backend of every variant is most of a quick HF run's time).
QUICK_TEST_TEXTS = 1000
#: ``--quick`` distils for a token second at most after each shrink (the refit does most of the work).
QUICK_RECOVERY_SECONDS = 1.0
#: Sequences the least-squares refit of shrunk output projections fits on: a refit is a regression that needs
#: more tokens than kept widths (a criterion needs far fewer: ``calib_sequences``).
REFIT_SEQUENCES = 256
#: Held-out rows of task text (validation split) every backend's outputs are compared with eager's on before it
#: is timed, besides the timed batch of random ids (:meth:`ModelSource.check_text`).
CHECK_TEXTS = 16
#: Seed offset of those rows, away from the calibration's and the distillation check's draws.
CHECK_TEXT_SEED_OFFSET = 3
#: Sequences per calibration batch of the latency-budget search. Fisher importance sums one squared gradient per
#: batch, so small batches give it more samples (256 texts: 32; batches of 32 would give 8, a noisy estimate).
SEARCH_CALIB_BATCH = 8


class ModelSource(ABC):
    """What the run pipeline needs from one kind of model (see the module docstring).

    Args:
        config: the run config.
        budgets: its resolved budgets.
        cache_dir: where tokenizers, corpora and trained dense models are cached.
        corpus_root: override of the stdlib corpus location (tests).
    """

    #: Shown in the run record and the progress line.
    kind: ClassVar[str]

    def __init__(self, config: RunConfig, budgets: Budgets, *, cache_dir: Path,
                 corpus_root: Path | None = None) -> None:
        self.config, self.budgets, self.cache_dir, self.corpus_root = config, budgets, cache_dir, corpus_root
        eval_kwargs: dict[str, Any] = {"seed": config.seed}
        if budgets.eval_batches:
            eval_kwargs["max_batches"] = budgets.eval_batches
        self.eval_kwargs = eval_kwargs

    # ----------------------------------------------------------------------------------------- loading
    @abstractmethod
    def load_dense(self, tick: Tick) -> tuple[nn.Module, dict[str, Any]]:
        """The dense model in eval mode and what to record about it (the run record's ``baseline``)."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What the accuracy figures are measured on (the run record's ``corpus.task``)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Token ids of timing and check inputs are drawn below this."""

    @property
    def pad_id(self) -> int:
        """The padding token id of timing inputs."""
        return 0

    # ------------------------------------------------------------------------------------------ inputs
    @abstractmethod
    def calibration(self, n_sequences: int, seed: int, batch_size: int | None = None) -> list[Batch]:
        """``n_sequences`` labelled sequences of real task text (criteria, Wanda, the refit, int8 scales), in
        batches of ``batch_size`` (None: the source's own; Fisher wants small ones, a refit large ones)."""

    def search_calibration(self, n_sequences: int, seed: int) -> list[Batch]:
        """The calibration of the latency-budget search (``prunebench search`` and a run's targets): batches of
        :data:`SEARCH_CALIB_BATCH` sequences, since its Fisher importance wants many small ones."""
        return self.calibration(n_sequences, seed, batch_size=SEARCH_CALIB_BATCH)

    def refit_batches(self, seed: int) -> list[Batch]:
        """The calibration the least-squares refit fits on (:data:`REFIT_SEQUENCES` of task text)."""
        return self.calibration(max(REFIT_SEQUENCES, self.budgets.calib_sequences), seed + 1)

    def check_batch(self, seq_len: int, seed: int) -> Batch:
        """Two rows (one padded) that fidelity and reload checks compare outputs on."""
        return make_inputs(self.vocab_size, 2, seq_len, seed=seed + 1, pad_fraction=0.25, pad_token_id=self.pad_id)

    def check_text(self, seed: int) -> Batch:
        """:data:`CHECK_TEXTS` held-out rows of the scoring task's text (validation split, padded to the longest):
        where a backend's outputs must match eager too before it is timed, since a runtime can reproduce the
        eager model on the timed batch's random ids and still break on real text (static int8 scales,
        activation outliers)."""
        return calibration_batches(self._text_source(), CHECK_TEXTS, batch_size=CHECK_TEXTS, split="val",
                                   seed=seed + CHECK_TEXT_SEED_OFFSET)[0]

    @abstractmethod
    def _text_source(self) -> Any:
        """The scoring task's batches (a :class:`~prunebench.tasks.base.BatchSource`)."""

    def timing_inputs(self, batch_size: int, seq_len: int, device: torch.device) -> Batch:
        """The inputs a timing cell feeds every model (seeded, padded as ``pad_fraction`` says)."""
        return make_inputs(self.vocab_size, batch_size, seq_len, seed=self.config.seed,
                           pad_fraction=self.config.pad_fraction, device=device, pad_token_id=self.pad_id)

    # -------------------------------------------------------------------------------------- evaluation
    @abstractmethod
    def evaluate(self, model: nn.Module, reference: nn.Module) -> EvalResult:
        """Accuracy of ``model`` and its agreement with ``reference`` (the dense model) on fixed test examples."""

    def loss_fn(self, reference: nn.Module) -> LossFn | None:
        """The task loss of models without one of their own (a base encoder's frozen probe), else None."""
        return None

    @abstractmethod
    def fidelity(self, model: nn.Module, dense: nn.Module) -> dict[str, Any]:
        """How close ``model`` stays to ``dense`` on :data:`FIDELITY_TEXTS` held-out test texts: the mean cosine
        of the embeddings (a pretrained encoder: pooled as its folder says; ours: the hidden states) and the
        agreement of predictions where there is a head; ``{"cosine", "agreement" (or None), "on", "n"}``."""

    @abstractmethod
    def evaluate_backend(self, model: nn.Module, runnable: Any, reference: nn.Module) -> EvalResult | str:
        """:meth:`evaluate` with ``model``'s hidden states computed by a backend's ``runnable`` (what was timed),
        or the one-line reason this source cannot evaluate there (recorded with the cells, never eager's)."""

    # ---------------------------------------------------------------------------------------- recovery
    @abstractmethod
    def step_recovery(self, teacher: nn.Module) -> OnStep | None:
        """Recovery between the steps of a gradual method (None: none)."""

    def recovery_seconds(self) -> float:
        """Seconds of recovery after each shrink (``--quick``: at most :data:`QUICK_RECOVERY_SECONDS`)."""
        seconds = self.config.recovery_seconds
        return min(seconds, QUICK_RECOVERY_SECONDS) if self.config.quick else seconds

    def recover(self, model: nn.Module, teacher: nn.Module,
                progress: Progress | None = None) -> dict[str, Any] | None:
        """Recovery of a one-shot shrunk model, in place; what it did (None: this kind has none). ``progress``
        hears of every step, as training's does (fraction of the recovery budget spent, steps, loss)."""
        return None

    #: The criterion of structured pruning ('' = the method's default); recorded in each spec.
    structured_criterion: ClassVar[str] = ""
    #: Options (:class:`RunConfig` field names; ``eval_split`` and ``task_seq_len`` of ``prunebench eval``) this
    #: kind of model cannot honour, with why: given explicitly they are refused before anything is written
    #: (:meth:`refuse_unsupported`), never ignored.
    unsupported: ClassVar[dict[str, str]] = {}

    @classmethod
    def refuse_unsupported(cls, given: dict[str, str]) -> None:
        """Raise for the first option of ``given`` (field name -> how the user wrote it, e.g. ``--train-budget``)
        that this kind cannot honour.

        Raises:
            ValueError: one line naming the option, the kind of model and what applies instead.
        """
        for name, shown in given.items():
            if name in cls.unsupported:
                raise ValueError(f"{shown} does not apply to {cls.kind_label}: {cls.unsupported[name]}")

    #: How messages name this kind of model.
    kind_label: ClassVar[str] = "this model"

    @classmethod
    def check(cls, model: str) -> str:
        """Everything about ``model`` (a run's ``--model``) that can be refused before a run folder exists (no
        weights loaded);
        returns the kind of model (:data:`~prunebench.tasks.factory.MODEL_KINDS`), which decides what tasks
        may score and calibrate it (``runner.validate.check_tasks``).

        Raises:
            PrunebenchError: one line (an unusable folder, a missing extra).
        """
        return "preset"

    def calibrated_on(self) -> list[str]:
        """The task specs whose text calibrates, refits and distils every variant (stored with each evaluation)."""
        return list(self.config.calib_tasks) or [self.config.task]


class PresetSource(ModelSource):
    """prunebench's own encoder (``small``, ``medium``, ``large``): trained on the task, or the cached one."""

    kind: ClassVar[str] = "preset"
    kind_label: ClassVar[str] = "prunebench's own encoder"

    def __init__(self, config: RunConfig, budgets: Budgets, *, cache_dir: Path,
                 corpus_root: Path | None = None, task: Any = None) -> None:
        from prunebench.models import preset_config

        super().__init__(config, budgets, cache_dir=cache_dir, corpus_root=corpus_root)
        #: The task; built by :meth:`load_dense`, or given (a task built elsewhere, as in tests and benchmarks).
        self.task: Any = task
        self._vocab = int(task.vocab_size) if task is not None else preset_config(config.model).vocab_size

    @property
    def vocab_size(self) -> int:
        return self._vocab

    def load_dense(self, tick: Tick) -> tuple[nn.Module, dict[str, Any]]:
        from prunebench.tasks import build_task
        from prunebench.tasks.baseline import load_or_train_baseline

        config = self.config
        if self.task is None:  # a task given to the source (built with a file's own columns) is kept
            tick("data", f"tokenizer and corpus ({config.task})", 0)
            extra = {"max_files": self.budgets.max_files} if self.budgets.max_files and config.task == "mlm" else {}
            # The task keeps its own row length (MLM trains faster on short rows); --seq-len is the timed shape.
            self.task = build_task(config.task, vocab_size=self._vocab, seed=config.seed, cache_dir=self.cache_dir,
                                   corpus_root=self.corpus_root, **extra)
            tick("data", "ready")

        def train_progress(fraction: float, steps: int, loss: float) -> None:
            tick("train", f"dense {config.model}: {fraction:.0%} (step {steps}, loss {loss:.2f})", 0, within=fraction)

        dense, info = load_or_train_baseline(config.model, self.task, self.budgets.train_budget, seed=config.seed,
                                             cache_dir=self.cache_dir, progress=train_progress,
                                             precision=config.train_precision)
        tick("train", "cache hit" if info.get("cache_hit") else f"trained in {info.get('train_seconds', 0):.0f}s")
        baseline = {k: str(v) if isinstance(v, Path) else v for k, v in info.items() if k != "history"}
        return dense.eval(), baseline

    def fingerprint(self) -> dict[str, Any]:
        return self.task.fingerprint()

    def calibration(self, n_sequences: int, seed: int, batch_size: int | None = None) -> list[Batch]:
        return calibration_batches(self.task, n_sequences, batch_size=batch_size or 8, seed=seed)

    def _text_source(self) -> Any:
        return self.task

    def evaluate(self, model: nn.Module, reference: nn.Module) -> EvalResult:
        from prunebench.tasks import evaluate

        result = evaluate(model, self.task, reference=reference, **self.eval_kwargs)
        return replace(result, extra={**result.extra, "calibrated_on": self.calibrated_on()})

    def evaluate_backend(self, model: nn.Module, runnable: Any, reference: nn.Module) -> EvalResult | str:
        from prunebench.backends.evaluation import backend_encoder

        return self.evaluate(backend_encoder(model, runnable), reference)

    def fidelity(self, model: nn.Module, dense: nn.Module) -> dict[str, Any]:
        from prunebench.tasks import evaluate

        result = evaluate(model, self.task, reference=dense, max_batches=max(1, FIDELITY_TEXTS // 32),
                          seed=self.config.seed)
        return {"cosine": result.hidden_cosine, "agreement": result.agreement,
                "on": f"{self.task.name} test sequences", "n": result.n_sequences}

    def step_recovery(self, teacher: nn.Module) -> OnStep | None:
        from prunebench.tasks import RecoveryCallback

        steps = self.budgets.finetune_steps
        if not steps:
            return None
        return RecoveryCallback(self.task, steps, seed=self.config.seed, precision=self.config.train_precision)

    def recover(self, model: nn.Module, teacher: nn.Module,
                progress: Progress | None = None) -> dict[str, Any] | None:
        """Fine-tune a shrunk model on the task for :meth:`recovery_seconds` (our encoder has the task's head, so
        it recovers on the task's own labels; ``teacher`` is not needed)."""
        from prunebench.tasks.budget import Budget, BudgetKind
        from prunebench.tasks.training import finetune

        seconds = self.recovery_seconds()
        if seconds <= 0:
            return None
        history = finetune(model, self.task, Budget(BudgetKind.SECONDS, seconds), seed=self.config.seed,
                           precision=self.config.train_precision, progress=progress)
        model.eval()
        losses = history.losses  # a summary, as distillation records (not every step's loss)
        return {"kind": "fine-tuning", "steps": history.steps, "seconds": round(history.seconds, 2),
                "precision": history.precision, "first_loss": losses[0] if losses else None,
                "last_loss_mean10": sum(losses[-10:]) / len(losses[-10:]) if losses else None}


class HFSource(ModelSource):
    """A pretrained Hugging Face encoder folder: loaded offline, scored through its own tokenizer."""

    kind: ClassVar[str] = "hf"
    kind_label: ClassVar[str] = "a pretrained Hugging Face model"
    structured_criterion: ClassVar[str] = "activation"
    unsupported: ClassVar[dict[str, str]] = {
        "train_budget": "it is loaded as pretrained, never trained",
        "finetune_steps": "it recovers by distillation from dense, in seconds (--recovery-seconds)",
        "eval_batches": "it is scored on every test example of the task (the paired comparison needs them all)",
        "eval_split": "it is scored on the test split (its frozen probe is fitted on the train split)",
        "task_seq_len": "its texts are cut to what its position embeddings cover (at most 128 tokens)",
    }

    @classmethod
    def check(cls, model: str) -> str:
        from prunebench.models.hf.deps import require_transformers

        require_transformers()  # before the package import, which needs it
        from prunebench.models.hf import check_hf_folder

        return check_hf_folder(model)  # its head kind

    def __init__(self, config: RunConfig, budgets: Budgets, *, cache_dir: Path,
                 corpus_root: Path | None = None, task: Any = None) -> None:
        from prunebench.models.hf import load_hf_tokenizer
        from prunebench.tasks.hf_eval import read_pooling

        super().__init__(config, budgets, cache_dir=cache_dir, corpus_root=corpus_root)
        self.tokenizer = load_hf_tokenizer(config.model)
        self.pooling = read_pooling(config.model)
        self.head_kind = ""
        self.max_length = TEXT_TOKENS
        self.task: Any = None
        #: A labelled task built by the caller (a user file with its own column names), used in place of the
        #: config's task; None: the config's task (:func:`hf_texts`).
        self.given_task: Any = task
        self.corpus: Any = None
        self.texts: Any = None
        #: The calibration mix (``config.calib_tasks``), each through the model's tokenizer.
        self.calib_sources: list[Any] = []
        self._evaluator: Any = None
        #: The dense model's embeddings of the second-domain prose (:meth:`other_domain_fidelity`), once.
        self._prose_dense: torch.Tensor | None = None
        self._held_out_batch: Batch | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_evaluator"] = None  # holds the dense model: rebuilt from the reference where it is needed
        state["_prose_dense"] = None
        return state

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def load_dense(self, tick: Tick) -> tuple[nn.Module, dict[str, Any]]:
        from prunebench.models.hf import load_hf_model

        config = self.config
        tick("data", f"model, tokenizer and task ({config.model})", 0)
        dense = load_hf_model(config.model).eval()
        self.attach(dense)
        tick("data", f"{self.head_kind} model, task ready")  # the evaluator is built on first use
        tick("train", "pretrained: nothing to train")
        return dense, {"model": str(config.model), "kind": self.head_kind}

    def attach(self, dense: nn.Module) -> None:
        """Read the task's texts for ``dense`` (already loaded from ``config.model``): its head kind decides
        which text scores it, its position embeddings how long a text may be."""
        from prunebench.models.hf import hf_adapter_for
        from prunebench.tasks.factory import scoring_task, task_texts
        from prunebench.tasks.hf_text import TokenizedTexts, unlabelled

        config = self.config
        adapter = hf_adapter_for(dense)
        self.head_kind = adapter.head_kind
        mlm = self.head_kind == "mlm"
        # Texts are cut to what the position embeddings cover (a small model may cover fewer than 128 tokens).
        self.max_length = min(TEXT_TOKENS, adapter.max_seq_len or TEXT_TOKENS)
        self.task, self.corpus = hf_texts(config.task, self.head_kind, self.corpus_root, texts=self.given_task)
        text_source = self.task or self.corpus
        self.texts = TokenizedTexts.of(text_source, self.tokenizer, mlm=mlm, max_length=self.max_length)
        scoring = scoring_task(config.task, self.head_kind)
        # Another task's labels are not this model's classes (nor its probe's): a mix calibrates on their text.
        self.calib_sources = [
            self.texts if spec == scoring else TokenizedTexts.of(unlabelled(task_texts(spec, self.corpus_root)),
                                                                 self.tokenizer, mlm=mlm, max_length=self.max_length)
            for spec in self.calibrated_on()]

    def calibrated_on(self) -> list[str]:
        from prunebench.tasks.factory import scoring_task

        return list(self.config.calib_tasks) or [scoring_task(self.config.task, self.head_kind)]

    def _build_evaluator(self, dense: nn.Module) -> Any:
        from prunebench.tasks.hf_suite import HFEvaluator

        return HFEvaluator(dense, self.tokenizer, task=self.task, corpus=self.corpus, pooling=self.pooling,
                           seed=self.config.seed, max_length=self.max_length, mlm_seq_len=self.max_length,
                           max_test=QUICK_TEST_TEXTS if self.config.quick else None)

    def evaluator(self, reference: nn.Module) -> Any:
        """The evaluator of ``reference`` (the dense model): built once per process."""
        if self._evaluator is None:
            self._evaluator = self._build_evaluator(reference)
        return self._evaluator

    def fingerprint(self) -> dict[str, Any]:
        return {"model": str(self.config.model), "kind": self.head_kind,
                "task": self.task.info if self.task else None, "corpus": self.corpus.info if self.corpus else None,
                "pooling": self.pooling.__dict__}

    def calibration(self, n_sequences: int, seed: int, batch_size: int | None = None) -> list[Batch]:
        return calibration_batches(self.calib_sources, n_sequences, batch_size=batch_size or 32, seed=seed)

    def _text_source(self) -> Any:
        return self.texts

    def evaluate(self, model: nn.Module, reference: nn.Module, *, other_domain: bool = True) -> EvalResult:
        """See :meth:`ModelSource.evaluate`; a base encoder's record adds its fidelity on another domain (unless
        ``other_domain`` is False: a backend's evaluation checks numerics, which the task's text shows)."""
        evaluator = self.evaluator(reference)
        result = evaluator.result(evaluator.score(model))
        extra = {**result.extra, "calibrated_on": self.calibrated_on()}
        if self.head_kind == "base" and other_domain:
            extra["fidelity_other_domain"] = self.other_domain_fidelity(model, reference)
        return replace(result, extra=extra)

    def other_domain_fidelity(self, model: nn.Module, dense: nn.Module) -> dict[str, Any]:
        """Mean embedding cosine of ``model`` to ``dense`` on :data:`OTHER_DOMAIN_TEXTS` paragraphs of English prose
        from Python's documentation (:func:`~prunebench.tasks.hf_text.prose_texts`, read offline): a domain no
        task is drawn from, where a refit or distillation that specialised the model to its calibration text
        shows (``{"cosine", "on", "n"}``)."""
        from prunebench.tasks.hf_eval import embed
        from prunebench.tasks.hf_text import PROSE_SOURCE, prose_texts

        texts = prose_texts(OTHER_DOMAIN_TEXTS)
        if self._prose_dense is None:
            self._prose_dense = embed(dense, self.tokenizer, texts, self.pooling, max_length=self.max_length)  # [N, D]
        mine = self._prose_dense if model is dense else embed(model, self.tokenizer, texts, self.pooling,
                                                              max_length=self.max_length)  # [N, D]
        cosine = float(torch.nn.functional.cosine_similarity(mine.double(), self._prose_dense.double(), dim=-1).mean())
        return {"cosine": cosine, "on": PROSE_SOURCE, "n": len(texts)}

    def evaluate_backend(self, model: nn.Module, runnable: Any, reference: nn.Module) -> EvalResult | str:
        if self.head_kind != "base":
            # The runnable computes the encoder's hidden states; an MLM or classifier head on top of them would
            # have to be run eagerly through each family's own head modules, which is not built yet.
            return f"accuracy on a backend is measured for base encoders; this is a {self.head_kind} model"
        return self.evaluate(BackendHidden(runnable), reference, other_domain=False)

    def fidelity(self, model: nn.Module, dense: nn.Module) -> dict[str, Any]:
        from prunebench.tasks.hf_eval import embed

        text_task = self.task or self.corpus
        texts = text_task.texts["test"][:FIDELITY_TEXTS]
        mine = embed(model, self.tokenizer, texts, self.pooling, max_length=self.max_length)  # [N, D]
        ref = embed(dense, self.tokenizer, texts, self.pooling, max_length=self.max_length)  # [N, D]
        cosine = float(torch.nn.functional.cosine_similarity(mine.double(), ref.double(), dim=-1).mean())
        agreement = self.evaluate(model, dense).agreement if self.head_kind == "cls" else None
        out = {"cosine": cosine, "agreement": agreement, "on": f"{text_task.name} test text", "n": len(texts)}
        if self.head_kind == "base":  # a sentence encoder: also on another domain than any calibration text
            out["other_domain"] = self.other_domain_fidelity(model, dense)
        return out

    def loss_fn(self, reference: nn.Module) -> LossFn | None:
        from prunebench.tasks.hf_suite import probe_loss

        probe = self.evaluator(reference).probe
        return probe_loss(probe, self.pooling) if probe is not None else None

    def _held_out(self) -> Batch:
        """Unseen text that decides whether distillation helped (else its weights are put back); built once. It is
        the scoring task's (what the model is judged on), whatever the calibration mix."""
        if self._held_out_batch is None:
            self._held_out_batch = calibration_batches(self.texts, 64, batch_size=64, split="val",
                                                       seed=self.config.seed + 2)[0]
        return self._held_out_batch

    def _distill(self, model: nn.Module, teacher: nn.Module, seconds: float, seed: int, checks: int,
                 progress: Progress | None = None) -> Any:
        from prunebench.tasks.hf_distill import distill_

        stream = mixed_stream(self.calib_sources, 16, seed=seed)  # the calibration mix, in turns
        return distill_(model, teacher, stream, held_out=self._held_out(), seconds=seconds, pooling=self.pooling,
                        checks=checks, precision=self.config.train_precision, progress=progress)

    def step_recovery(self, teacher: nn.Module) -> OnStep | None:
        seconds = self.recovery_seconds() / max(self.budgets.iterative_steps, 1)
        if seconds <= 0:
            return None
        return DistillSteps(self, teacher, seconds)

    def recover(self, model: nn.Module, teacher: nn.Module,
                progress: Progress | None = None) -> dict[str, Any] | None:
        if self.recovery_seconds() <= 0:
            return None
        # One held-out check mid-way (each costs about a training step; the budget is short).
        history = self._distill(model, teacher, self.recovery_seconds(), self.config.seed, checks=1,
                                progress=progress)
        model.eval()
        return {"kind": "distillation", **history.to_dict()}

    @classmethod
    def of_model(cls, folder: str | Path, dense: nn.Module, *, cache_dir: Path, given_task: Any = None,
                 **options: Any) -> HFSource:
        """The source of an HF model already loaded from ``folder`` (the one-model commands: prune, search, eval):
        a run config of ``options`` (``task``, ``seed``, ``calib_sequences``, ``recovery_seconds``, ...), its
        text length capped to what the position embeddings cover, and the task's texts read for ``dense``."""
        from prunebench.models.adapters import adapter_for
        from prunebench.runner.budgets import Budgets

        seq_len = min(TEXT_TOKENS, adapter_for(dense).max_seq_len or TEXT_TOKENS)
        config = RunConfig(model=str(folder), seq_len=seq_len, **options)
        source = cls(config, Budgets.of(config), cache_dir=cache_dir, task=given_task)
        source.attach(dense)
        return source


class BackendHidden(nn.Module):
    """A stand-in for a pretrained base encoder whose hidden states come from a backend's runnable: called as
    transformers models are (``input_ids``, ``attention_mask``, ``output_hidden_states``), it returns an object
    whose ``hidden_states[-1]`` and ``last_hidden_state`` are the runnable's outputs [B, S, D]."""

    def __init__(self, runnable: Any) -> None:
        super().__init__()
        self.runnable = runnable

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: Any) -> Any:
        from types import SimpleNamespace

        batch = {"input_ids": input_ids}
        if attention_mask is not None:
            batch["attention_mask"] = attention_mask
        hidden = self.runnable.outputs(batch)  # [B, S, D]
        return SimpleNamespace(last_hidden_state=hidden, hidden_states=(hidden,))


class DistillSteps:
    """``on_step`` of a gradual method on a pretrained encoder: distil from dense after each pruning step."""

    def __init__(self, source: HFSource, teacher: nn.Module, seconds: float) -> None:
        self.source, self.teacher, self.seconds = source, teacher, seconds
        self.histories: list[dict[str, Any]] = []

    def __call__(self, step: int, sparsity: float, model: nn.Module) -> None:
        history = self.source._distill(model, self.teacher, self.seconds, self.source.config.seed + 1000 * step,
                                       checks=1)
        model.eval()
        self.histories.append(history.to_dict())
        logger.info("distillation after pruning step %d (sparsity %.3f): %s", step, sparsity, history.to_dict())


def hf_texts(task: str, head_kind: str, corpus_root: Path | None = None, *, texts: Any = None) -> tuple[Any, Any]:
    """(labelled task, text) a pretrained encoder is scored on, as the task registry says: the labelled task for
    base and classifier models (the run's ``mlm`` default means ``tweets`` there), and for a masked LM the text
    of its task, unlabelled: the stdlib corpus for ``mlm``, the user's file for ``text:PATH``, and a labelled
    task's texts (named ``<task> text``, since that is what its masked-token accuracy measures). ``texts``: the
    task's texts already read by the caller (a user file with its own column names), else read here."""
    from prunebench.tasks.factory import SCORE, check_task_use, scoring_task, task_texts
    from prunebench.tasks.hf_text import unlabelled

    spec = scoring_task(task, head_kind)
    check_task_use(spec, head_kind, SCORE)
    texts = texts if texts is not None else task_texts(spec, corpus_root)
    if head_kind == "mlm":
        return None, texts if texts.labels is None else unlabelled(texts, f"{texts.name} text")
    return texts, None


def source_class(model: str) -> type[ModelSource]:
    """The source class of a model argument: a Hugging Face model folder, else a preset name."""
    from prunebench.models.io import is_hf_folder

    return HFSource if is_hf_folder(model) else PresetSource


def source_for(config: RunConfig, budgets: Budgets, *, cache_dir: Path,
               corpus_root: Path | None = None) -> ModelSource:
    """The source of ``config.model`` (see :func:`source_class`)."""
    return source_class(config.model)(config, budgets, cache_dir=cache_dir, corpus_root=corpus_root)
