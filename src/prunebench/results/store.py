"""The crash-safe results store: one SQLite file per run folder, one committed transaction per record.

Durability argument. The file is in WAL mode with ``synchronous=FULL``: each ``put_*`` is its own transaction
and returns only after its WAL frames are fsync'ed. A ``kill -9`` at any instant therefore loses at most the
record being written (never one whose ``put_*`` returned), and SQLite's journal guarantees the file is never
left half-written. ``synchronous=NORMAL`` would already survive a process kill in WAL mode, but could drop the
last commits on a power cut or kernel crash; a run commits a few hundred rows that each cost seconds of
measurement, so one fsync per row is free by comparison and we take the stronger guarantee.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from prunebench.errors import PrunebenchError
from prunebench.results.cell import CELL_STATUSES, DEFAULT_BACKEND, LOCAL_NODE_CLASS, CellRecord, normalize_cell_row
from prunebench.results.codec import from_db, to_db, to_json
from prunebench.results.schema import (
    CELLS,
    EVALUATIONS,
    META_SQL,
    RUNS,
    SCHEMA_VERSION,
    TABLES,
    VARIANTS,
    Table,
)

logger = logging.getLogger(__name__)

RUN_STATUSES = ("running", "finished", "failed")
VARIANT_STATUSES = ("ok", "failed")


def _check_status(table: Table, value: Any, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"{table.name}.status must be one of {', '.join(allowed)}; got {value!r}")


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to ``path``; ``readonly`` never writes to the file, nor leaves a file beside it.

    A read-only connection to a WAL store needs its ``-shm`` index, which SQLite creates if it is missing and
    then leaves behind (a reader cannot remove it), and cannot create at all on a read-only mount. A WAL store
    without a ``-wal`` file is one no connection has open (the last one to close merges the log into the file
    and removes it: a finished or stopped run), so the file alone holds everything and is read as
    ``immutable``, which needs neither. With a ``-wal`` file (a run writing, or one killed) the log must be read
    too: ``mode=ro``, which needs the index.
    """
    if not readonly:
        return sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
    wal = _companions(path)[1]
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    return sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True, isolation_level=None, timeout=30.0)


def disk_full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the file system is full (``SQLITE_FULL``)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def disk_full_error(path: Path) -> OSError:
    """The error a full disk raises: an ``ENOSPC`` OSError naming the file (the CLI says "disk full")."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` for a message about a damaged store: repr'd, on one line, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _companions(path: Path) -> tuple[Path, ...]:
    """The store file and the files SQLite keeps beside it in WAL mode."""
    return (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))


class ResultStore:
    """The SQLite results store of one run (``<run_dir>/results.sqlite``).

    Every ``put_*`` is committed in its own transaction before it returns, so a crash loses nothing that was
    reported as stored. Putting a record whose key exists (same variant name, same cell coordinates) replaces
    it in place, which is what a resumed run that re-measures a failed cell wants.

    Args:
        path: the ``.sqlite`` file.
        create: create the file and tables if missing; with ``False`` a missing or foreign file is an error.
        readonly: only read (``report``, ``compare``, a run deciding what to do with a folder): the file is
            opened read-only, so a foreign, empty or corrupt file is never rewritten, and a store on a
            read-only mount can be read. Implies ``create=False``; ``put_*`` then fail.

    Raises:
        PrunebenchError: the file is missing (``create=False``), is not a prunebench store, or was written by a
            newer schema.
        OSError: ``ENOSPC``, the disk is full; a store this call was creating is removed again.
    """

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        create = create and not readonly
        if not create and not self.path.is_file():
            raise PrunebenchError(f"no results store at {self.path}")
        # What this call creates, it removes again if it fails: a failed creation leaves no table-less store.
        new_files = [p for p in _companions(self.path) if not p.exists()] if create else []
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per record.
            self._conn = _connect(self.path, readonly)
        except sqlite3.Error as exc:
            raise PrunebenchError(f"cannot open results store {self.path}: {exc}") from None
        try:
            self._setup(create, readonly)
        except (sqlite3.Error, PrunebenchError, OSError) as exc:
            self._conn.close()
            if self.path in new_files:
                for created in new_files:
                    created.unlink(missing_ok=True)
            if not isinstance(exc, sqlite3.Error):
                raise
            if disk_full(exc):
                raise disk_full_error(self.path) from None
            wal = _companions(self.path)[1]
            if readonly and wal.exists() and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN:
                raise PrunebenchError(f"{self.path} cannot be read here: its write-ahead log {wal.name} (a run "
                                      "writing it, or one killed) needs a folder SQLite can write to") from None
            raise PrunebenchError(f"{self.path} is not a readable prunebench results store ({exc})") from None

    def _setup(self, create: bool, readonly: bool) -> None:
        if not readonly:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("results store %s runs in journal mode %s, not WAL", self.path, mode)
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        has_meta = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            if not create:
                raise PrunebenchError(f"{self.path} is not a prunebench results store (no meta table)")
            self._transaction(
                [(META_SQL, ())]
                + [(t.create_sql(), ()) for t in TABLES]
                + [("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))]
            )
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            version: int | None = int(row[0]) if row else None
        except (TypeError, ValueError):
            raise PrunebenchError(f"{self.path} is a damaged results store: its schema version is "
                                  f"{_shown(row[0])}, not a number") from None
        if version != SCHEMA_VERSION:
            raise PrunebenchError(
                f"{self.path} has results schema version {version}; this prunebench reads version {SCHEMA_VERSION}"
            )
        self._check_tables()

    def _check_tables(self) -> None:
        """Refuse a store that lacks a table or a column (dropped by hand, a truncated copy) at open, with one
        line naming what is missing, instead of a ``no such table`` traceback in whatever reads it first."""
        for table in TABLES:
            columns = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table.name})").fetchall()}
            if not columns:
                raise PrunebenchError(f"{self.path} is a damaged results store: table {table.name!r} is missing")
            missing = [c for c in (*table.field_names, "extra") if c not in columns]
            if missing:
                raise PrunebenchError(f"{self.path} is a damaged results store: table {table.name!r} lacks "
                                      f"column(s) {', '.join(missing[:5])}")

    # -- plumbing ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements in one immediate transaction; committed (fsync'ed) on return, rolled back on error."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self._conn.execute(sql, params)
            self._conn.execute("COMMIT")
        except BaseException as exc:
            # A failed COMMIT (a full disk) leaves the transaction open; SQLite may also have ended it itself.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and disk_full(exc):
                raise disk_full_error(self.path) from None
            raise

    def _upsert(self, table: Table, record: Mapping[str, Any]) -> None:
        if not isinstance(record, Mapping):
            raise ValueError(f"a {table.name} record must be a dict, got {type(record).__name__}")
        missing = [k for k in table.key if record.get(k) is None]
        if missing:
            raise ValueError(f"a {table.name} record needs {', '.join(missing)} (key: {', '.join(table.key)})")
        values = [to_db(table, f, kind, record.get(f)) for f, kind in table.fields]
        extra = {k: v for k, v in record.items() if k not in table.field_names}
        cols = [*table.field_names, "extra"]
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols if c not in table.key)
        sql = (
            f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}"
        )
        self._transaction([(sql, (*values, to_json(extra)))])

    def _rows(self, table: Table, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cols = [*table.field_names, "extra"]
        try:
            rows = self._conn.execute(f"SELECT {', '.join(cols)} FROM {table.name} {where} ORDER BY seq",
                                      params).fetchall()
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None
        out = []
        for number, row in enumerate(rows, 1):
            # Every value is checked against its column's kind: a store edited by hand (a text where a number
            # goes) is one line naming the file, table, row and field, never a TypeError deep in the analysis.
            record = {}
            for (field, kind), value in zip((*table.fields, ("extra", "json")), row, strict=True):
                try:
                    record[field] = from_db(kind, value)
                except ValueError as exc:
                    raise PrunebenchError(f"{self.path} is a damaged results store: {table.name} row {number}, "
                                          f"field {field}: {exc}") from None
            extra = record.pop("extra")
            if not isinstance(extra, dict):
                raise PrunebenchError(f"{self.path} is a damaged results store: {table.name} row {number}, "
                                      "field extra: not a JSON object")
            record.update(extra)
            out.append(record)
        return out

    def _exists(self, table: Table, where: str, params: tuple[Any, ...]) -> bool:
        try:
            return self._conn.execute(f"SELECT 1 FROM {table.name} WHERE {where} LIMIT 1",
                                      params).fetchone() is not None
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None

    def _damaged(self, exc: sqlite3.Error) -> Exception:
        """The one-line error of a read that SQLite refused (a corrupt page, a table dropped while open)."""
        if disk_full(exc):
            return disk_full_error(self.path)
        return PrunebenchError(f"{self.path} is a damaged results store ({str(exc)[:120]})")

    # -- the run ----------------------------------------------------------------------------------------------
    def start_run(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """Record the run, or resume it; returns the stored run record.

        A store holds exactly one run. Starting the run it already holds (same ``run_id``) resumes it: the
        given fields replace the stored ones (``run_id`` and ``created`` stay), and the status goes back to
        ``running``. A different ``run_id`` is refused, so that two runs never mix their rows.

        Raises:
            PrunebenchError: the store already holds another run.
        """
        existing = self.get_run()
        if existing is None:
            record = {**run, "status": "running"}
        else:
            if existing["run_id"] != run.get("run_id"):
                raise PrunebenchError(
                    f"{self.path} already holds run {existing['run_id']!r}, not {run.get('run_id')!r}"
                )
            old_fp = (existing.get("environment") or {}).get("fingerprint_hash")
            new_fp = (run.get("environment") or {}).get("fingerprint_hash", old_fp)
            if old_fp != new_fp:
                # Cells measured before and after the resume come from different environments; say so.
                logger.warning("run %s resumed in another environment (%s, was %s)", existing["run_id"], new_fp, old_fp)
            keep = {"run_id": existing["run_id"], "created": existing.get("created"), "status": "running"}
            record = {**existing, **run, **keep}
        self._upsert(RUNS, record)
        return self.get_run() or {}

    def update_run(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``fields`` into the stored run record (e.g. the corpus fingerprint once it is known).

        ``run_id`` cannot change; ``status`` must be one of :data:`RUN_STATUSES`. Returns the updated record.

        Raises:
            PrunebenchError: no run has been started in this store.
            ValueError: an attempt to change ``run_id``, or a bad field value.
        """
        existing = self.get_run()
        if existing is None:
            raise PrunebenchError(f"{self.path} holds no run yet; call start_run first")
        if "run_id" in fields and fields["run_id"] != existing["run_id"]:
            raise ValueError(f"update_run cannot change run_id ({existing['run_id']!r} -> {fields['run_id']!r})")
        _check_status(RUNS, fields.get("status"), RUN_STATUSES)
        self._upsert(RUNS, {**existing, **fields})
        return self.get_run() or {}

    def get_run(self) -> dict[str, Any] | None:
        """The run record, or None before :meth:`start_run`."""
        rows = self._rows(RUNS)
        return rows[0] if rows else None

    def set_run_status(self, status: str) -> None:
        """Set the run's status (``running``, ``finished`` or ``failed``)."""
        _check_status(RUNS, status, RUN_STATUSES)
        if self.get_run() is None:
            raise PrunebenchError(f"{self.path} holds no run yet; call start_run first")
        self._transaction([("UPDATE runs SET status=?", (status,))])

    # -- records ----------------------------------------------------------------------------------------------
    def put_variant(self, variant: Mapping[str, Any]) -> None:
        """Store (or replace) one variant record, keyed by ``name``; committed on return."""
        _check_status(VARIANTS, variant.get("status"), VARIANT_STATUSES)
        self._upsert(VARIANTS, variant)

    def put_evaluation(self, evaluation: Mapping[str, Any]) -> None:
        """Store (or replace) one evaluation record, keyed by ``variant``; committed on return."""
        self._upsert(EVALUATIONS, evaluation)

    def put_cell(self, cell: CellRecord | Mapping[str, Any]) -> None:
        """Store (or replace) one benchmark cell, keyed by ``(variant, backend, batch_size, seq_len, node_class)``;
        committed on return. A plain dict without ``backend`` is an ``eager`` cell, without ``node_class`` one
        timed in-process (``local``)."""
        row = cell.to_row() if isinstance(cell, CellRecord) else {**cell}
        for key, default in (("backend", DEFAULT_BACKEND), ("node_class", LOCAL_NODE_CLASS)):
            if row.get(key) is None:
                row[key] = default
        _check_status(CELLS, row.get("status"), CELL_STATUSES)
        self._upsert(CELLS, row)

    def has_variant(self, name: str, status: str | None = None) -> bool:
        """Whether a variant of that name is stored (with that status, if given)."""
        if status is None:
            return self._exists(VARIANTS, "name=?", (name,))
        return self._exists(VARIANTS, "name=? AND status=?", (name, status))

    def has_evaluation(self, name: str) -> bool:
        """Whether the variant named ``name`` has a stored evaluation."""
        return self._exists(EVALUATIONS, "variant=?", (name,))

    def has_cell(self, variant: str, batch_size: int, seq_len: int, status: str | None = None,
                 backend: str = DEFAULT_BACKEND, node_class: str = LOCAL_NODE_CLASS) -> bool:
        """Whether that benchmark cell is stored for that backend and node class (with that status, if given,
        e.g. ``"ok"`` to retry errors)."""
        where = "variant=? AND backend=? AND batch_size=? AND seq_len=? AND node_class=?"
        params: tuple[Any, ...] = (variant, backend, int(batch_size), int(seq_len), node_class)
        if status is not None:
            where, params = where + " AND status=?", (*params, status)
        return self._exists(CELLS, where, params)

    def variants(self) -> list[dict[str, Any]]:
        """All variant records, in the order they were first stored."""
        return self._rows(VARIANTS)

    def evaluations(self) -> list[dict[str, Any]]:
        """All evaluation records, in the order they were first stored."""
        return self._rows(EVALUATIONS)

    def cells(self, variant: str | None = None) -> list[dict[str, Any]]:
        """All benchmark cells (or those of one variant), in the order they were first stored."""
        rows = self._rows(CELLS) if variant is None else self._rows(CELLS, "WHERE variant=?", (variant,))
        return [normalize_cell_row(row) for row in rows]

    def cell_records(self) -> list[CellRecord]:
        """All benchmark cells as :class:`CellRecord`, in the order they were first stored."""
        return [CellRecord.from_row(row) for row in self.cells()]

    def snapshot(self) -> dict[str, Any]:
        """Everything in the store as plain data: ``{schema_version, run, variants, evaluations, cells}``."""
        # One read transaction, so that a writer in another process cannot slip rows in between the tables.
        self._conn.execute("BEGIN")
        try:
            return {
                "schema_version": SCHEMA_VERSION,
                "run": self.get_run(),
                "variants": self.variants(),
                "evaluations": self.evaluations(),
                "cells": self.cells(),
            }
        finally:
            self._conn.execute("COMMIT")

    def export_json(self, path: str | Path) -> Path:
        """Write ``results.json`` (the whole store; see :func:`prunebench.results.export.export_json`)."""
        from prunebench.results.export import export_json

        return export_json(self.snapshot(), path)

    def export_csv(self, path: str | Path) -> Path:
        """Write ``results.csv`` (one row per variant x batch size; see :mod:`prunebench.results.export`)."""
        from prunebench.results.export import export_csv

        return export_csv(self.snapshot(), path)
