"""The configuration of a whole ``prunebench run``: a frozen, validated dataclass with TOML loading.

Precedence: defaults < TOML file (``--config run.toml``) < command-line options. Every field can be set in
TOML under a ``[run]`` table or at top level; unknown keys and wrongly typed values are one-line errors
that name the valid keys, raised before any expensive work starts.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from prunebench.analysis.deploy import DEFAULT_MAX_ACCURACY_DROP
from prunebench.models.io import is_hf_folder
from prunebench.models.presets import model_names, preset_config
from prunebench.pruning.schedule import SCHEDULE_REGISTRY
from prunebench.pruning.spec import MAX_STEPS, METHODS, PruneSpec
from prunebench.serde import reject_duplicates, reject_unknown
from prunebench.tasks.budget import Budget
from prunebench.tasks.precision import PRECISIONS, resolve_precision

#: Pruning methods a run can compare, with the sparsity each gets when none is given.
DEFAULT_SPARSITY: dict[str, float] = {
    "magnitude": 0.5,  # unstructured, per-layer |W|
    "structured": 0.5,  # heads + FFN neurons physically removed
    "iterative": 0.8,  # gradual magnitude with recovery fine-tuning between steps
    "wanda": 0.5,  # |W| * ||x||, per output row
    "nm": 0.5,  # 2:4 semi-structured: the sparsity is fixed by N:M
}
RUN_METHODS = tuple(DEFAULT_SPARSITY)
#: Sparsities of every method of a Hugging Face run when none are given: a degradation curve needs several.
HF_SPARSITIES = (0.3, 0.5, 0.7)
#: What a Hugging Face run does when not told otherwise (:meth:`RunConfig.from_dict`), sized so that
#: ``prunebench run --model <MiniLM folder>`` fits 10 minutes on 2 cores (README): structured (shrunk, refitted,
#: distilled: the recovered variants, and the ones that get faster) and Wanda (one-shot, calibrated) at
#: :data:`HF_SPARSITIES`, timed at batch sizes 1 and 16 for at most 4 s per cell. ``--methods``,
#: ``--batch-sizes`` and ``--set max_time=10`` bring back the rest.
HF_DEFAULTS: dict[str, Any] = {"methods": ("structured", "wanda"), "batch_sizes": (1, 16), "max_time": 4.0}
DEVICES = ("cpu", "cuda")
#: Seeds are stored as SQLite integers and fed to torch and numpy generators: 0 .. 2^63 - 1.
MAX_SEED = 2**63 - 1
#: The most torch threads a run may pin: above any machine's core count, below what overflows torch's
#: ``set_num_threads`` (a C int), so a typo such as ``--set threads=1e20`` is refused before the run folder exists.
MAX_THREADS = 4096
#: The most calibration sequences a criterion, refit or search may read. Importance estimates settle within a few
#: hundred sequences (Wanda and SparseGPT use 128; a run reads 256), while every sequence costs a forward (and
#: for gradient criteria a backward) pass and the batches are all held in memory, so ``--calib-sequences
#: 100000`` would only spend the time of many runs for the same plan.
MAX_CALIB_SEQUENCES = 4096
#: Integer run options with their valid range (None: no upper bound), checked by :func:`check_int_option`.
INT_RANGES: dict[str, tuple[int, int | None]] = {
    "seq_len": (1, None), "finetune_steps": (0, None), "iterative_steps": (1, MAX_STEPS),
    "calib_sequences": (1, MAX_CALIB_SEQUENCES), "eval_batches": (0, None),
}


def _hf_max_positions(folder: str) -> int:
    """``max_position_embeddings`` of an HF folder's ``config.json`` (512 where it says none)."""
    from prunebench.user_files import UnsafeFileError, read_json

    try:
        return int(read_json(Path(folder) / "config.json").get("max_position_embeddings", 512))
    except (UnsafeFileError, ValueError, TypeError, AttributeError):
        return 512  # the folder check that follows names what is wrong with the file


#: Separates a speedup target from the backend it is to be met on (``3@onnxruntime-int8``).
TARGET_BACKEND_SEP = "@"


def parse_target(item: object) -> tuple[float, str | None]:
    """A speedup target of ``run --targets``: a number (searched on the fastest of the run's backends) or
    ``T@BACKEND`` (searched on that backend); ``(target, backend or None)``.

    Raises:
        ValueError: not a number above 1, or an unknown backend (the message lists the registered ones).
    """
    backend = None
    value: object = item
    if isinstance(item, str):
        text, sep, name = item.strip().partition(TARGET_BACKEND_SEP)
        if sep:
            from prunebench.backends import BACKENDS  # lazy: backends import bench, which is heavier

            backend = BACKENDS.get(name.strip()).name if name.strip() else ""
            if not backend:
                raise ValueError(f"speedup target {item!r} names no backend after {TARGET_BACKEND_SEP!r}")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"speedup target {item!r} is not a number (or NUMBER@BACKEND)") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 1.0:
        raise ValueError(f"speedup target {item!r} must be a number above 1 (a speedup over the dense model)")
    return float(value), backend


def target_name(target: float, backend: str | None) -> str:
    """Variant name of a searched target: ``search@3x``, or ``search@3x@onnxruntime-int8`` for a named backend."""
    return f"search@{target:g}x" + (f"{TARGET_BACKEND_SEP}{backend}" if backend else "")


def check_seed(seed: object, what: str = "seed") -> int:
    """Return ``seed`` if it is an integer in [0, 2^63 - 1], else raise a one-line ValueError."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:  # type: ignore[operator]
        shown = seed if _is_int(seed) and abs(seed) < 10**30 else f"{str(seed)[:24]}..."  # type: ignore[arg-type]
        raise ValueError(f"{what} must be an integer in [0, 2^63 - 1], got {shown}")
    return seed  # type: ignore[return-value]


def check_int_option(name: str, value: object) -> int:
    """Return ``value`` if it is an integer in the range :data:`INT_RANGES` gives ``name``, else raise a one-line
    ValueError naming that range (the run config's check, and the CLI flags of the same option on other
    commands)."""
    low, high = INT_RANGES[name]
    if not _is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
        valid = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results (and so is stored with them).

    Attributes:
        model: preset name (``small``, ``medium``, ``large``) or a Hugging Face model folder.
        methods: pruning methods to compare (see :data:`RUN_METHODS`).
        sparsities: sparsity levels for every method except ``nm``; empty = each method's default.
        batch_sizes: batch sizes of the benchmark sweep.
        seq_len: sequence length for benchmarks and the task.
        threads: torch intra-op threads, pinned for the whole run (None = torch's default, recorded).
        seed: seed of model init, data order, masking and benchmark inputs.
        device: ``cpu`` or ``cuda``.
        quick: a smaller everything (training budget, eval batches, timing budget) for a first look.
        task: the task that scores the models, a spec of the task registry (``prunebench list tasks``): ``mlm``
            (built-in, Python stdlib source; a pretrained base or classifier model: ``tweets``), ``tweets``,
            ``csv:PATH``, ``jsonl:PATH``, ``text:PATH`` (a masked LM's own plain-text corpus).
        calib_tasks: the tasks whose text calibrates, refits and distils every variant, in equal shares
            (deterministic by ``seed``); empty = ``task`` alone. Stored with each variant's evaluation.
        train_budget: dense training budget (``"600"`` steps or ``"90s"``); empty = the task's default.
        finetune_steps: recovery fine-tuning steps after each iterative pruning step.
        recovery_seconds: seconds of recovery after each one-shot structured shrink and refit, and after each
            search target's (``--quick``: at most 1): fine-tuning on the task for our own encoder, distillation
            from dense for a Hugging Face model (which also distils between iterative steps).
        train_precision: precision of dense training and recovery fine-tuning: ``auto`` (bf16 mixed precision
            where the hardware has native bf16, else fp32), ``fp32`` or ``bf16``.
        iterative_steps: pruning steps of the iterative method.
        schedule: sparsity schedule of the iterative method (``one_shot``, ``linear``, ``cubic``).
        calib_sequences: calibration sequences of task text for criteria that need data (Wanda, Taylor,
            activation), the same default for every kind of model.
        eval_batches: test batches evaluated per variant (0 = the task's default).
        min_time: minimum seconds of paired timing per benchmark cell (0 = 0.5 s, or the quick preset's).
        max_time: maximum seconds of paired timing per benchmark cell, which wins over the minimums (0 = the
            preset's: 10 s, quick 2.5 s; a Hugging Face run's default is 4 s, see :data:`HF_DEFAULTS`).
        pad_fraction: fraction of each benchmark sequence that is padding.
        save_models: keep every pruned model in the run folder (needed to resume without re-pruning).
        targets: speedups (> 1) for the latency-budget search; each adds a ``search@<t>x`` variant, searched
            at the first batch size and ``seq_len`` and verified by paired timing (``prunebench.search``). A
            number is searched on the fastest of ``backends`` (dense timed on each against dense eager); a
            string ``"T@BACKEND"`` on that backend (variant ``search@<t>x@BACKEND``), which is then also added
            to ``backends``. Speedups on any backend are against dense eager.
        backends: execution backends every variant is timed on (``eager`` first: the main sweep; others are
            timed against dense eager after a fidelity check, see :mod:`prunebench.backends`).
        refit: after a one-shot structured shrink, refit the shrunk output projections by least squares to the
            dense model's outputs on task text (both kinds of model; ``--no-refit`` turns it off).
        allow_busy: keep timing blocks during which other processes held the cores (flagged ``contended``)
            instead of discarding and retiming them (:mod:`prunebench.bench.load`); the search then also goes on
            with a latency model that missed its held-out check and judges targets on busy measurements.
        max_accuracy_drop: the accuracy budget of the recommendation the report and the terminal open with
            (:func:`prunebench.analysis.deploy.recommend`): percentage points of accuracy a deployed
            (variant, backend) may lose against dense eager. It changes no measurement, only that choice.
    """

    model: str = "medium"
    methods: tuple[str, ...] = RUN_METHODS
    sparsities: tuple[float, ...] = ()
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    seq_len: int = 128
    threads: int | None = None
    seed: int = 0
    device: str = "cpu"
    quick: bool = False
    task: str = "mlm"
    calib_tasks: tuple[str, ...] = ()
    train_budget: str = ""
    finetune_steps: int = 10
    recovery_seconds: float = 20.0
    train_precision: str = "auto"
    iterative_steps: int = 4
    schedule: str = "cubic"
    calib_sequences: int = 256
    eval_batches: int = 0
    min_time: float = 0.0
    max_time: float = 0.0
    pad_fraction: float = 0.0
    save_models: bool = True
    targets: tuple[float | str, ...] = ()
    backends: tuple[str, ...] = ("eager",)
    refit: bool = True
    allow_busy: bool = False
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP

    def __post_init__(self) -> None:
        if (self.model not in model_names() or self.model == "custom") and not self.is_hf:
            valid = ", ".join(n for n in model_names() if n != "custom")
            raise ValueError(f"unknown model {self.model!r}; choose from: {valid}, or a Hugging Face model folder")
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "sparsities", tuple(float(s) for s in self.sparsities))
        object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        specs = [parse_target(t) for t in self.targets]
        # Canonical: a plain target as a float, a named backend's as "T@BACKEND".
        object.__setattr__(self, "targets", tuple(t if b is None else f"{t:g}{TARGET_BACKEND_SEP}{b}"
                                                  for t, b in specs))
        names = [target_name(t, b) for t, b in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"targets lists a target twice: {', '.join(map(str, self.targets))}")
        object.__setattr__(self, "calib_tasks", _calib_tasks(self.calib_tasks))
        if specs:
            from prunebench.search.allocate import check_targets  # lazy, as parse_backends below

            check_targets([t for t, _ in specs])  # the search's own rule: above 1, at most MAX_TARGET
        if not self.methods:
            raise ValueError(f"methods is empty; choose from: {', '.join(RUN_METHODS)}")
        for method in self.methods:
            if method not in DEFAULT_SPARSITY:
                raise ValueError(f"unknown method {method!r}; choose from: {', '.join(RUN_METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a method twice: {', '.join(self.methods)}")
        for name in ("sparsities", "batch_sizes", "targets"):  # the one list rule, for TOML lists too
            values = getattr(self, name)
            reject_duplicates(values, f"{name} = {list(values)}")
        for s in self.sparsities:
            if not (math.isfinite(s) and 0.0 <= s < 1.0):
                raise ValueError(f"sparsity {s:g} is outside [0, 1)")
        if not self.batch_sizes or any(not _is_int(b) or b <= 0 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {list(self.batch_sizes)}")
        check_seed(self.seed)
        for name in INT_RANGES:
            check_int_option(name, getattr(self, name))
        limit = _hf_max_positions(self.model) if self.is_hf else preset_config(self.model).max_positions
        if self.seq_len > limit:
            raise ValueError(f"seq_len {self.seq_len} exceeds the {self.model} model's max_positions {limit}")
        if self.threads is not None and (not _is_int(self.threads) or not 0 < self.threads <= MAX_THREADS):
            raise ValueError(f"threads must be an integer in [1, {MAX_THREADS}], got {self.threads!r}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose from: {', '.join(DEVICES)}")
        if self.train_precision not in PRECISIONS:
            raise ValueError(f"unknown train_precision {self.train_precision!r}; choose from: {', '.join(PRECISIONS)}")
        # Training runs on the CPU whatever the benchmark device; bf16 without native bf16 is an error now,
        # not after the data is built.
        resolve_precision(self.train_precision, torch.device("cpu"))
        SCHEDULE_REGISTRY.get(self.schedule)  # unknown -> ValueError listing the registered schedules
        if not 0.0 <= self.pad_fraction < 1.0:
            raise ValueError(f"pad_fraction must lie in [0, 1), got {self.pad_fraction}")
        if not (math.isfinite(self.recovery_seconds) and self.recovery_seconds >= 0):
            raise ValueError(f"recovery_seconds must be a finite number of seconds >= 0, got {self.recovery_seconds}")
        for name in ("min_time", "max_time"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {getattr(self, name)}")
        drop = self.max_accuracy_drop
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not (math.isfinite(drop)
                                                                                and 0 <= drop <= 100):
            raise ValueError(f"max_accuracy_drop must be a number of percentage points in [0, 100], got {drop!r}")
        if self.train_budget:
            Budget.parse(self.train_budget)  # a bad budget is an error now, not after the store exists
        from prunebench.backends import parse_backends  # lazy: backends import bench, which is heavier

        # eager is always timed (every speedup is against dense eager); unknown names list the valid ones.
        names = parse_backends(self.backends)
        named = tuple(b for _, b in self.target_specs() if b is not None)  # a target's backend is timed too
        object.__setattr__(self, "backends", tuple(dict.fromkeys(("eager", *names, *named))))

    def target_specs(self) -> tuple[tuple[float, str | None], ...]:
        """``(target, backend)`` per target; backend None: the fastest of :attr:`backends`."""
        return tuple(parse_target(t) for t in self.targets)

    @property
    def is_hf(self) -> bool:
        """Whether ``model`` names a Hugging Face model folder (its source is :class:`prunebench.sources.HFSource`)."""
        return self.model not in model_names() and is_hf_folder(self.model)

    def variants(self) -> list[tuple[str, str, float]]:
        """The (variant name, method, sparsity) triples this run produces, dense excluded, in run order."""
        out = []
        for method in self.methods:
            if METHODS.get(method).nm_pattern:  # N:M fixes the sparsity: one variant, named by its pattern
                spec = PruneSpec(method=method)
                out.append((f"{method}{spec.n}:{spec.m}", method, spec.sparsity))
                continue
            for s in self.sparsities or (HF_SPARSITIES if self.is_hf else (DEFAULT_SPARSITY[method],)):
                out.append((f"{method}@{s:g}", method, s))
        # Searched variants: the third field is the speedup target, not a sparsity (see runner/searched.py).
        out.extend((target_name(t, b), "search", t) for t, b in self.target_specs())
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a (TOML or JSON) mapping, type-checking every value; unknown keys are errors.

        A Hugging Face model folder gets :data:`HF_DEFAULTS` for whichever of those keys ``data`` leaves out.
        """
        if not data:
            return cls()
        given = _coerce(data)
        model = given.get("model")
        hf = isinstance(model, str) and model not in model_names() and is_hf_folder(model)
        return replace(cls(), **({**HF_DEFAULTS, **given} if hf else given))

    def merged(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with ``overrides`` (already-typed values, None = keep) applied."""
        return replace(self, **_coerce({k: v for k, v in overrides.items() if v is not None}))


def _calib_tasks(specs: Any) -> tuple[str, ...]:
    """``calib_tasks`` as a tuple of registered task specs (each item may be a comma list), each once.

    Raises:
        ValueError: not text, an empty item, an unknown spec (naming the valid forms), or a spec given twice.
    """
    from prunebench.tasks.factory import parse_task  # lazy: the task readers import tokenizers

    items: list[str] = []
    for spec in specs:
        if not isinstance(spec, str):
            raise ValueError(f"calib_tasks must be task specs (text), got {spec!r}")
        for item in spec.split(","):
            if not item.strip():
                raise ValueError(f"--calib-task has an empty item in {spec!r}")
            try:
                parse_task(item.strip())
            except ValueError as exc:
                raise ValueError(f"--calib-task: {exc}") from None
            items.append(item.strip())
    if len(set(items)) != len(items):
        raise ValueError(f"--calib-task names a task twice: {', '.join(items)}")
    return tuple(items)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_types() -> dict[str, Any]:
    return {f.name: f.default for f in fields(RunConfig)}


def _coerce(data: dict[str, Any]) -> dict[str, Any]:
    """Check keys and value types against RunConfig's fields (by their defaults' types)."""
    defaults = _field_types()
    reject_unknown(data, defaults, "run option(s)", list_valid=True)
    out: dict[str, Any] = {}
    for key, value in data.items():
        default = defaults[key]
        if isinstance(default, tuple):
            if isinstance(value, (str, int, float)):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"run option {key} must be a list, got {value!r}")
            value = tuple(value)
        elif key == "threads":
            if value is not None and not _is_int(value):
                raise ValueError(f"run option threads must be an integer, got {value!r}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"run option {key} must be true or false, got {value!r}")
        elif isinstance(default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"run option {key} must be a number, got {value!r}")
            value = float(value)
        elif isinstance(default, int):
            if not _is_int(value):
                raise ValueError(f"run option {key} must be an integer, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"run option {key} must be a string, got {value!r}")
        out[key] = value
    return out


#: Size limit of a run's TOML config file (a real one is a few hundred bytes).
CONFIG_MAX_BYTES = 2**20


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read run options from a TOML file (keys at top level or under ``[run]``).

    Raises:
        ValueError: the file is missing or unreadable, or malformed (the message gives line and column).
    """
    from prunebench.user_files import UnsafeFileError, read_bounded

    file = Path(path)
    try:
        # Bounded, regular files only: /dev/zero or /dev/urandom would fill memory, a FIFO would block for ever.
        text = read_bounded(file, CONFIG_MAX_BYTES).decode("utf-8")
    except UnsafeFileError as exc:
        raise ValueError(f"cannot read config file: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {file} is not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"malformed TOML in {file}: {exc}") from None
    except RecursionError:
        raise ValueError(f"{file} is nested too deeply to be a run config") from None
    if "run" in doc:
        if not isinstance(doc["run"], dict):
            raise ValueError(f"{file}: [run] must be a table")
        extra = sorted(set(doc) - {"run"})
        if extra:
            raise ValueError(f"{file}: keys outside [run]: {', '.join(extra)}")
        return dict(doc["run"])
    return doc
