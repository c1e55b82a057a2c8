"""The store's tables: which fields each record kind has, how each is stored, and the SQL that creates them.

Records are plain dicts (the data contract between the orchestrator, analysis and report). Every known
field has its own column so that the file can be inspected with the ``sqlite3`` shell; dict-valued fields are
stored as JSON text. Fields the contract does not name are kept, not dropped, in an ``extra`` JSON column, so a
producer that adds a figure loses nothing while the schema catches up.
"""

from __future__ import annotations

from dataclasses import dataclass

from prunebench.results.cell import CELL_FIELDS, CELL_KEY

#: Bumped on any incompatible change of the tables below; recorded in the ``meta`` table of every store.
#: Version 2: cells keyed by (variant, backend, batch_size, seq_len, node_class), generated from ``CellRecord``.
#: A cell status ``skipped`` was added within version 2 (a new value of the ``status`` text column, no layout
#: change): older version-2 stores stored a skip as ``error`` and read back as ``skipped``
#: (:func:`~prunebench.results.cell.normalize_cell_row`); an older prunebench shows a new store's skips as errors.
#: A cell status ``unmeasured`` (the machine was too busy) and the per-block contention fields were added the
#: same way: a new status value, and fields kept in the ``extra`` column (``CellRecord`` fields marked
#: ``IN_EXTRA``), so older version-2 stores read as before (no discarded blocks recorded) and an older
#: prunebench shows an unmeasured cell as failed, without figures.
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

#: Generated from the one cell record (:mod:`prunebench.results.cell`): fields and units are named there only.
CELLS = Table("cells", key=CELL_KEY, fields=CELL_FIELDS)

TABLES = (RUNS, VARIANTS, EVALUATIONS, CELLS)

META_SQL = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
