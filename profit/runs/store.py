"""The results store of batch runs: an SQLite file that survives a crash, a kill -9 or Ctrl-C.

    store = Store("profit-runs.sqlite")
    run = store.start_run("verify", COLUMNS, options={"eps": 0.02, ...}, command="profit verify ...")
    store.insert(run.run_id, "verify", key="17", status="ok", record={...}, wall_seconds=0.4, worker="pid 123")
    done = store.finished_keys(run.run_id, "verify")       # what a resume skips
    store.export(run.run_id, "out.csv")                      # or .json

Tables: `runs` (run id, kind, options as JSON, code version (`profit.version.__version__`
plus the git commit when the code runs from a git checkout), the command line, started /
finished) and one table per job kind (`verify`, `vnnlib`, `features`, `explain`, `cem`) holding one
row per finished item: run id, item key, position, status ("ok", "timeout" or "error"), the
error message, worker, wall seconds, finish time, then the kind's own record columns.
`UNIQUE(run_id, item_key)` makes a duplicate impossible; an item stored with status "error"
(a crashed worker) is the only row a later insert may replace.

Durability: WAL journal, synchronous=NORMAL, one transaction per finished item. A commit
that returned survives a kill -9 of the process (it is in the WAL file); a power cut may
lose the last commits but never corrupts the file. Only one process writes (the driver);
readers (another terminal, a test polling the file) may read while it runs.
"""

from __future__ import annotations

import csv
import datetime
import json
import sqlite3
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profit.errors import ProfitError
from profit.version import __version__

DEFAULT_STORE = "profit-runs.sqlite"  # in the current directory

STATUSES = ("ok", "timeout", "error")  # an item's outcome: its own record, killed at its time limit, crashed
KINDS = ("verify", "vnnlib", "features", "explain", "cem")
Columns = Sequence[tuple[str, str]]  # (name, SQL type) of a kind's record columns
_COMMON = (("position", "INTEGER"), ("status", "TEXT NOT NULL"), ("error", "TEXT"), ("worker", "TEXT"),
           ("wall_seconds", "REAL"), ("finished_at", "TEXT"))
_SQL_TYPES = ("INTEGER", "REAL", "TEXT")


@dataclass(frozen=True)
class RunInfo:
    """One row of the runs table."""

    run_id: str
    kind: str
    options: dict[str, Any]
    version: str
    command: str
    started: str
    finished: str | None


def code_version() -> str:
    """`__version__`, plus `+git.<commit>` (and `.dirty` with uncommitted changes) when the
    package runs from a git checkout; the version alone when git is missing or fails."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+git.{commit}{'.dirty' if dirty else ''}" if commit else __version__


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _check_name(name: str) -> str:
    """Table and column names come from the job kinds (code), never from users; still checked."""
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"not a plain SQL name: {name!r}")
    return name


class Store:
    """An SQLite results store (see the module docstring). Use as a context manager, or `close()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ProfitError(f"{self.path}: the store is a directory, expected an SQLite file")
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                            "options TEXT NOT NULL, version TEXT NOT NULL, command TEXT, started TEXT NOT NULL, "
                            "finished TEXT)")
        except sqlite3.DatabaseError as exc:
            raise ProfitError(f"{self.path}: not a usable results store ({exc})") from None
        self._columns: dict[str, list[str]] = {}

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def ensure_table(self, kind: str, columns: Columns) -> None:
        """Create the kind's table (common columns + `columns`) if it does not exist yet."""
        if kind in self._columns:
            return
        for name, sql_type in columns:
            if sql_type not in _SQL_TYPES:
                raise ValueError(f"column {name}: SQL type {sql_type!r} is not one of {_SQL_TYPES}")
        cols = [(n, t) for n, t in (*_COMMON, *columns)]
        body = ", ".join(f"{_check_name(n)} {t}" for n, t in cols)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {_check_name(kind)} (run_id TEXT NOT NULL REFERENCES "
                        f"runs(run_id), item_key TEXT NOT NULL, {body}, UNIQUE(run_id, item_key))")
        existing = {row[1] for row in self.db.execute(f"PRAGMA table_info({kind})")}
        missing = [n for n, _ in cols if n not in existing]
        if missing:
            raise ProfitError(f"{self.path}: table {kind} was written by another version of profit "
                              f"(no column {', '.join(missing)}): use a new --store file")
        self._columns[kind] = [n for n, _ in columns]

    def start_run(self, kind: str, columns: Columns, options: dict[str, Any], command: str = "") -> RunInfo:
        """A new run: a fresh run id, the options as JSON and the code version, committed at once."""
        self.ensure_table(kind, columns)
        info = RunInfo(uuid.uuid4().hex[:12], kind, options, code_version(), command, _now(), None)
        with self._transaction():
            self.db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, NULL)",
                            (info.run_id, kind, json.dumps(options, sort_keys=True), info.version, command,
                             info.started))
        return info

    def run(self, run_id: str, kind: str | None = None) -> RunInfo:
        """The run `run_id` ("last": the latest run, of `kind` if given); ProfitError if absent."""
        if run_id == "last":
            query, args = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY started DESC, " \
                "rowid DESC LIMIT 1", (kind,) if kind else ()
        else:
            query, args = "SELECT * FROM runs WHERE run_id = ?", (run_id,)
        row = self.db.execute(query, args).fetchone()
        if row is None:
            what = f"no {kind + ' ' if kind else ''}run" if run_id == "last" else f"no run {run_id}"
            raise ProfitError(f"{self.path}: {what} in this store")
        info = RunInfo(row[0], row[1], json.loads(row[2]), row[3], row[4] or "", row[5], row[6])
        if kind is not None and info.kind != kind:
            raise ProfitError(f"run {run_id} in {self.path} is a {info.kind} run, not {kind}")
        return info

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        ids = [r[0] for r in self.db.execute("SELECT run_id FROM runs ORDER BY started, rowid")]
        return [self.run(i) for i in ids]

    def finish_run(self, run_id: str) -> None:
        """Mark the run finished (every item it was asked for is stored)."""
        with self._transaction():
            self.db.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (_now(), run_id))

    def insert(self, run_id: str, kind: str, key: str, status: str, record: dict[str, Any], *,
               position: int | None = None, error: str | None = None, wall_seconds: float | None = None,
               worker: str | None = None) -> bool:
        """Store one finished item in its own transaction; True if a row was written.

        record: values of the kind's columns (missing ones are NULL; dicts and lists are
        stored as JSON). An existing row of the same (run, key) is replaced only if its
        status is "error"; otherwise nothing is written (False), so no item is ever stored twice.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        columns = self._columns[kind]
        unknown = set(record) - set(columns)
        if unknown:
            raise ValueError(f"{kind} records have no column(s) {sorted(unknown)}")
        names = ["run_id", "item_key", "position", "status", "error", "worker", "wall_seconds", "finished_at",
                 *columns]
        values = [run_id, key, position, status, error, worker, wall_seconds, _now(),
                  *[_sql_value(record.get(c)) for c in columns]]
        update = ", ".join(f"{n} = excluded.{n}" for n in names[2:])
        with self._transaction():
            cursor = self.db.execute(
                f"INSERT INTO {kind} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
                f"ON CONFLICT(run_id, item_key) DO UPDATE SET {update} WHERE {kind}.status = 'error'", values)
        return cursor.rowcount > 0

    def finished_keys(self, run_id: str, kind: str, retry_errors: bool = True) -> set[str]:
        """Keys of the run's stored items (without those stored as errors if retry_errors)."""
        if kind not in self._tables():
            return set()
        where = " AND status != 'error'" if retry_errors else ""
        return {r[0] for r in self.db.execute(f"SELECT item_key FROM {kind} WHERE run_id = ?{where}", (run_id,))}

    def records(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Every stored row of the run as a dict (common and record columns), by position then key."""
        kind = kind or self.run(run_id).kind
        if kind not in self._tables():
            return []
        cursor = self.db.execute(f"SELECT * FROM {_check_name(kind)} WHERE run_id = ? ORDER BY position, item_key",
                                 (run_id,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def export(self, run_id: str, path: str | Path) -> Path:
        """Write the run's rows as CSV (one row per item) or JSON ({"run": ..., "records": [...]})."""
        path = Path(path)
        info = self.run(run_id)
        rows = self.records(run_id, info.kind)
        try:
            if path.suffix.lower() == ".json":
                doc = {"run": {"run_id": info.run_id, "kind": info.kind, "options": info.options,
                               "version": info.version, "command": info.command, "started": info.started,
                               "finished": info.finished}, "records": rows}
                path.write_text(json.dumps(doc, indent=1) + "\n")
            elif path.suffix.lower() == ".csv":
                with path.open("w", newline="") as f:
                    names = list(rows[0]) if rows else ["run_id", "item_key"]
                    writer = csv.DictWriter(f, fieldnames=names)
                    writer.writeheader()
                    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
            else:
                raise ProfitError(f"{path}: the export must end in .csv or .json")
        except OSError as exc:
            raise ProfitError(f"{path}: cannot write ({exc.strerror or exc})") from None
        return path

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): one atomic write."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _sql_value(value: Any) -> Any:
    """A record value as SQLite stores it: numbers and text as they are, bools as 0/1,
    lists/dicts/tuples as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


def decode_json(rows: Iterable[dict[str, Any]], columns: Iterable[str]) -> list[dict[str, Any]]:
    """The rows with the named JSON columns parsed back."""
    names = list(columns)
    out = []
    for row in rows:
        row = dict(row)
        for name in names:
            if isinstance(row.get(name), str):
                row[name] = json.loads(row[name])
        out.append(row)
    return out
