"""The results of a run: a crash-safe SQLite store in the run folder, and its JSON/CSV exports.

Records are plain dicts following the data contract (see :mod:`prunebench.results.schema`); a benchmark cell is
the one :class:`~prunebench.results.cell.CellRecord` that bench produces and analysis reads::

    with ResultStore(run_dir / "results.sqlite") as store:
        store.start_run({"run_id": ..., "created": ..., "config": {...}, "environment": {...}})
        if not store.has_cell("magnitude@0.5", 1, 128, status="ok"):
            store.put_cell({...})          # committed before it returns
"""

from prunebench.results.cell import (
    CELL_FIELDS,
    CELL_KEY,
    CELL_STATUSES,
    DEFAULT_BACKEND,
    LOCAL_NODE_CLASS,
    CellRecord,
    flop_ideal,
)
from prunebench.results.export import CSV_COLUMNS, csv_rows, export_csv, export_json, write_bytes_atomic
from prunebench.results.folder import load_snapshot, open_run, store_path
from prunebench.results.schema import SCHEMA_VERSION, STORE_FILENAME
from prunebench.results.store import RUN_STATUSES, VARIANT_STATUSES, ResultStore

__all__ = [
    "CELL_FIELDS",
    "CELL_KEY",
    "CELL_STATUSES",
    "CSV_COLUMNS",
    "DEFAULT_BACKEND",
    "LOCAL_NODE_CLASS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "VARIANT_STATUSES",
    "CellRecord",
    "ResultStore",
    "csv_rows",
    "export_csv",
    "export_json",
    "flop_ideal",
    "load_snapshot",
    "open_run",
    "store_path",
    "write_bytes_atomic",
]
