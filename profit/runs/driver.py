"""Run a job's tasks into the results store: new or resumed, serial, local pool or Ray.

    batch = Batch(job, tasks, RunOptions(store="profit-runs.sqlite", workers=2))
    print(batch.run_id, len(batch.pending))       # what is left to run
    finished = batch.execute()                     # a FinishedRun: the stored rows of these tasks

`Batch` opens the store and either starts a run (a fresh run id, the job's options, the
code version) or, with `resume`, reopens one: the job's options must equal the stored ones
(otherwise the items would mean something else), and every task already stored as "ok" or
"timeout" is skipped; one stored as "error" (a crashed worker) runs again and its row is
replaced. `execute` runs the rest on the chosen backend and stores each item as it
finishes, in its own transaction, so an interrupted run (Ctrl-C, kill -9, a power cut up to
the last commits) loses at most the items that were in flight.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from profit.errors import ProfitError
from profit.runs.jobs import CEMItem, CEMJob, Job, cem_tasks, hard_limit
from profit.runs.pool import BACKENDS, Done, ProcessPool, Task, run_serial
from profit.runs.store import DEFAULT_STORE, Store, decode_json



def default_workers() -> int:
    """The CPUs this process may use (one torch thread per worker)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RunOptions:
    """How to run a batch.

    store: the SQLite file (created if missing); workers: processes of the local pool (0:
    in this process, no time limits), or Ray's CPUs when it starts a local Ray (None: every
    CPU); resume: a run id of the store, or "last" (its latest run of the job's kind);
    backend: "local" (process pool) or "ray"; address: the Ray cluster to join ("auto",
    "HOST:6379", "ray://HOST:10001"; implies backend ray; None with backend ray: start a
    local Ray); item_timeout: seconds after which an item's worker is killed (None: the
    job's own per-item budget x 1.5 + 10 s, no limit without one); command: the command
    line, stored with the run.
    """

    store: str | Path = DEFAULT_STORE
    workers: int | None = None
    resume: str | None = None
    backend: str = "local"
    address: str | None = None
    item_timeout: float | None = None
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ProfitError(f"unknown backend '{self.backend}' (choose from {', '.join(BACKENDS)})")
        if self.workers is not None and self.workers < 0:
            raise ProfitError(f"--workers must be >= 0, got {self.workers}")
        if self.item_timeout is not None and not self.item_timeout > 0:
            raise ProfitError(f"--item-timeout must be > 0 seconds, got {self.item_timeout}")

    @property
    def ray(self) -> bool:
        """Whether the items run as Ray tasks (backend ray, or an address given)."""
        return self.backend == "ray" or self.address is not None

    def describe(self) -> str:
        if self.ray:
            return f"Ray at {self.address}" if self.address else "a local Ray"
        workers = default_workers() if self.workers is None else self.workers
        return "this process" if workers == 0 else f"{workers} local worker{'s' * (workers != 1)}"


@dataclass(frozen=True)
class FinishedRun:
    """The stored rows of a batch's tasks (this session's and earlier ones'), by position."""

    run_id: str
    store: Path
    rows: list[dict[str, Any]]  # common columns (item_key, status, error, ...) and the job's record columns
    ran: int  # items run by this session
    skipped: int  # items found in the store
    complete: bool  # every task of the batch is stored

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "error"]


class Batch:
    """A job's tasks bound to a run of a store (see the module docstring)."""

    def __init__(self, job: Job, tasks: Sequence[Task], options: RunOptions = RunOptions()) -> None:
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            raise ProfitError("two items of the batch have the same key")
        self.job, self.options = job, options
        limit, budget = options.item_timeout, hard_limit(job.item_budget())
        self.tasks = [replace(t, timeout=limit if limit is not None else t.timeout if t.timeout is not None
                              else budget) for t in tasks]
        self.store = Store(options.store)
        wanted = json.loads(json.dumps(job.options_json()))
        if options.resume is None:
            self.store.ensure_table(job.kind, job.columns)
            self.run_id = self.store.start_run(job.kind, job.columns, wanted, options.command).run_id
            done: set[str] = set()
        else:
            info = self.store.run(options.resume, job.kind)
            if info.options != wanted:
                self.store.close()
                raise ProfitError(f"run {info.run_id} was started with other options ({_difference(info.options, wanted)}): "
                                  "resume it with the same arguments, or start a new run")
            self.store.ensure_table(job.kind, job.columns)
            self.run_id = info.run_id
            done = self.store.finished_keys(info.run_id, job.kind)
        self.pending = [t for t in self.tasks if t.key not in done]

    def execute(self) -> FinishedRun:
        """Run the pending tasks, store each as it finishes; the rows of all the batch's tasks."""
        ran = 0
        skipped = len(self.tasks) - len(self.pending)
        bar = tqdm(total=len(self.tasks), initial=skipped, desc=self.job.kind, unit="item", file=sys.stderr,
                   disable=not self.options.progress, leave=False, dynamic_ncols=True)
        try:
            for done in self._stream():
                record = done.record if done.status == "ok" else self.job.placeholder(done.task, done.status,
                                                                                      done.seconds)
                self.store.insert(self.run_id, self.job.kind, done.task.key, done.status, record,
                                  position=done.task.position, error=done.error, wall_seconds=done.seconds,
                                  worker=done.worker)
                ran += 1
                bar.update(1)
            return self.finished(ran, skipped)
        finally:
            bar.close()
            self.store.close()

    def finished(self, ran: int = 0, skipped: int = 0) -> FinishedRun:
        """The stored rows of the batch's tasks (marks the run finished when all are stored)."""
        rows = decode_json(self.store.records(self.run_id, self.job.kind), self.job.json_columns)
        keys = {t.key for t in self.tasks}
        rows = [r for r in rows if r["item_key"] in keys]
        complete = len(rows) == len(self.tasks)
        if complete:
            self.store.finish_run(self.run_id)
        return FinishedRun(self.run_id, self.store.path, rows, ran, skipped, complete)

    def _stream(self) -> Iterator[Done]:
        if not self.pending:
            return
        if self.options.ray:
            from profit.runs.ray import run_ray

            yield from run_ray(self.job, self.pending, self.options.address, self.options.workers)
            return
        workers = default_workers() if self.options.workers is None else self.options.workers
        if workers == 0:
            yield from run_serial(self.job, self.pending)
            return
        with ProcessPool(min(workers, len(self.pending))) as pool:
            yield from pool.run(self.job, self.pending)


def explain_many(job: CEMJob, items: Sequence[CEMItem], workers: int = 2,
                 timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """Contrastive explanations of many images in a local process pool (`workers` 0: in this
    process), without a store: {item id: record with "status" ("ok", "timeout": killed after
    `timeout` seconds, "error": an exception or a dead worker), "error", "meta" and, when ok,
    the CEM record}. Every id gets an entry and the call returns once all are done: a
    crashing or hanging item costs its worker (replaced), never the batch; no worker outlives
    the call."""
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise ProfitError("two items of the batch have the same id")
    tasks = cem_tasks(items, timeout)
    out: dict[str, dict[str, Any]] = {}
    if workers == 0:
        stream: Iterator[Done] = run_serial(job, tasks)
        for done in stream:
            out[done.task.key] = _cem_entry(job, done)
    else:
        with ProcessPool(min(workers, max(len(tasks), 1))) as pool:
            for done in pool.run(job, tasks):
                out[done.task.key] = _cem_entry(job, done)
    return {key: out[key] for key in keys}


def _cem_entry(job: CEMJob, done: Done) -> dict[str, Any]:
    record = done.record if done.status == "ok" else job.placeholder(done.task, done.status, done.seconds)
    return {**record, "status": done.status, "error": done.error, "worker": done.worker}


def _difference(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> str:
    """The first few option paths whose values differ: `options.eps 0.02 (now 0.03)`."""
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _difference(a, b, f"{prefix}{key}.")
            if inner:
                diffs.append(inner)
        elif a != b:
            diffs.append(f"{prefix}{key} {a} (now {b})")
    return ", ".join(diffs[:3])
