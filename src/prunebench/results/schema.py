"""The store's tables: which fields each record kind has, how each is stored, and the SQL that creates them.

Records are plain dicts (the data contract between the orchestrator, analysis and report). Every known
field has its own column so that the file can be inspected with the ``sqlite3`` shell; dict-valued fields are
stored as JSON text. Fields the contract does not name are kept, not dropped, in an ``extra`` JSON column, so a
producer that adds a figure loses nothing while the schema catches up.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bumped on any incompatible change of the tables below; recorded in the ``meta`` table of every store.
SCHEMA_VERSION = 2

#: The store's file name inside a run folder.
STORE_FILENAME = "results.sqlite"

#: Column kinds: SQL affinity of each, and how values are converted on the way in and out.
KINDS = {"text": "TEXT", "real": "REAL", "int": "INTEGER", "bool": "INTEGER", "json": "TEXT"}


@dataclass(frozen=True)
class Table:
    """One record kind: its SQL table, the fields that identify a row, and every known field.

    Attributes:
        name: SQL table name.
        key: fields that identify a row (a UNIQUE constraint; putting the same key again replaces the row).
        fields: ``(field, kind)`` pairs in column order, ``kind`` one of :data:`KINDS`; includes the key fields.
    """

    name: str
    key: tuple[str, ...]
    fields: tuple[tuple[str, str], ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        """The known field names, in column order."""
        return tuple(f for f, _ in self.fields)

    def create_sql(self) -> str:
        """``CREATE TABLE`` for this record kind (``seq`` keeps insertion order; ``extra`` keeps unknown fields)."""
        cols = ["seq INTEGER PRIMARY KEY AUTOINCREMENT"]
        cols += [f"{f} {KINDS[k]}" + (" NOT NULL" if f in self.key else "") for f, k in self.fields]
        cols += ["extra TEXT NOT NULL DEFAULT '{}'", f"UNIQUE ({', '.join(self.key)})"]
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  " + ",\n  ".join(cols) + "\n)"


RUNS = Table(
    "runs",
    key=("run_id",),
    fields=(
        ("run_id", "text"),
        ("created", "text"),
        ("status", "text"),
        ("config", "json"),
        ("environment", "json"),
        ("corpus", "json"),
    ),
)

VARIANTS = Table(
    "variants",
    key=("name",),
    fields=(
        ("name", "text"),
        ("method", "text"),
        ("requested_sparsity", "real"),
        ("measured_sparsity", "real"),
        ("materialization", "text"),
        ("params", "int"),
        ("nonzero_params", "int"),
        ("encoder_params", "int"),
        ("disk_bytes", "int"),
        ("macs", "int"),
        ("effective_macs", "int"),
        ("prune_seconds", "real"),
        ("fidelity", "json"),
        ("status", "text"),
        ("error", "text"),
        ("details", "json"),
    ),
)

EVALUATIONS = Table(
    "evaluations",
    key=("variant",),
    fields=(
        ("variant", "text"),
        ("accuracy", "real"),
        ("loss", "real"),
        ("agreement", "real"),
        ("kl", "real"),
        ("cosine", "real"),
        ("trivial_accuracy", "real"),
        ("metric_name", "text"),
        ("details", "json"),
    ),
)

#: The node class of cells timed in-process (the local executor); a Ray run names each class of its nodes.
LOCAL_NODE_CLASS = "local"

CELLS = Table(
    "cells",
    # node_class: which hardware class timed the cell; one run can time every cell on several classes.
    key=("variant", "batch_size", "seq_len", "node_class"),
    fields=(
        ("variant", "text"),
        ("batch_size", "int"),
        ("seq_len", "int"),
        ("node_class", "text"),
        ("status", "text"),
        ("error", "text"),
        ("latency_ms", "real"),
        ("latency_p90_ms", "real"),
        ("latency_cv", "real"),
        ("baseline_latency_ms", "real"),
        ("speedup", "real"),
        ("speedup_ci_low", "real"),
        ("speedup_ci_high", "real"),
        ("flop_ideal_speedup", "real"),
        ("throughput_samples_s", "real"),
        ("throughput_tokens_s", "real"),
        ("peak_memory_bytes", "int"),
        ("n_pairs", "int"),
        ("raw", "json"),
    ),
)

TABLES = (RUNS, VARIANTS, EVALUATIONS, CELLS)

META_SQL = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
