"""A local process pool for batch runs: items in worker processes, results in completion order.

    with ProcessPool(workers=2) as pool:
        for done in pool.run(job, tasks):       # job: a picklable callable payload -> record dict
            store.insert(...)                   # done.status: "ok" | "timeout" | "error"

Why not `concurrent.futures`: a per-item time limit needs the worker killed and replaced,
and a worker that dies (a segfault, the OOM killer) must become one error row while the
pool carries on; `ProcessPoolExecutor` breaks as a whole in both cases.

Workers start from a `forkserver` (Linux; `spawn` elsewhere) that has imported the job
modules once, so a replacement worker starts in milliseconds and never inherits the
driver's threads. Each worker runs one torch thread, ignores SIGINT (Ctrl-C reaches the
whole process group: the driver alone stops the run, and items in flight are not recorded
as errors but simply not stored, to be run again by a resume) and exits within a fraction
of a second once the driver is gone (even after a kill -9), so no run leaves orphans.

`run_serial` runs the same tasks in this process, without time limits or crash isolation:
the reference a pooled run must equal, and `--workers 0`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

BACKENDS = ("local", "ray")  # where batch items run: this process pool, or Ray tasks (profit.runs.ray)

ItemFunction = Callable[[Any], dict[str, Any]]  # picklable (a module-level function or a frozen job object)
PRELOAD = ("torch", "profit.runs.jobs")  # imported once by the forkserver
_KILL_GRACE = 2.0  # seconds a stopping worker gets before SIGKILL
_WATCH_PERIOD = 0.2  # seconds between a worker's checks that the driver is alive


@dataclass(frozen=True)
class Task:
    """One item: its key in the store, its position in the run, what the item function
    gets, and a hard wall-clock limit (seconds, None: none) after which the worker is killed."""

    key: str
    payload: Any
    position: int = 0
    timeout: float | None = None


@dataclass(frozen=True)
class Done:
    """A finished task: status "ok" (record is the item function's), "timeout" (killed at
    its limit; record empty) or "error" (an exception or a dead worker; `error` says which)."""

    task: Task
    status: str
    record: dict[str, Any]
    seconds: float  # wall-clock, as the worker (ok, error) or the driver (timeout, dead worker) saw it
    worker: str
    error: str | None = None


def run_item(fn: ItemFunction, payload: Any) -> tuple[str, dict[str, Any], str | None, float]:
    """(status, record, error, seconds) of one call: an exception becomes an "error" with a
    one-line message (its type, text and the innermost frame)."""
    start = time.perf_counter()
    try:
        record = fn(payload)
        return "ok", record, None, time.perf_counter() - start
    except Exception as exc:  # an item's failure is a row of the run, not the end of it
        return "error", {}, describe(exc), time.perf_counter() - start


def describe(exc: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}{where}"


def run_serial(fn: ItemFunction, tasks: Iterable[Task]) -> Iterator[Done]:
    """The tasks one after another in this process (no time limit, no crash isolation)."""
    worker = f"pid {os.getpid()}"
    for task in tasks:
        status, record, error, seconds = run_item(fn, task.payload)
        yield Done(task, status, record, seconds, worker, error)


def _context() -> multiprocessing.context.BaseContext:
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


def _watch_parent(ppid: int) -> None:
    """Exit the worker once its parent is gone (the driver, or the forkserver that exits with it)."""
    while True:
        time.sleep(_WATCH_PERIOD)
        if os.getppid() != ppid:
            os._exit(1)


def _worker_main(conn: multiprocessing.connection.Connection, fn: ItemFunction, threads: int) -> None:
    """A worker: receive payloads, send (status, record, error, seconds) back, until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            payload = conn.recv()
        except (EOFError, OSError):
            return
        if payload is None:
            return
        result = run_item(fn, payload)
        try:
            conn.send(result)
        except (EOFError, OSError):
            return
        except Exception as exc:  # a record that does not pickle
            conn.send(("error", {}, f"the record could not be sent: {describe(exc)}", result[3]))


class _Worker:
    def __init__(self, ctx: multiprocessing.context.BaseContext, fn: ItemFunction, threads: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, fn, threads), daemon=True)
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.started = 0.0

    @property
    def name(self) -> str:
        return f"pid {self.process.pid}"

    def give(self, task: Task) -> None:
        self.task, self.started = task, time.monotonic()
        self.conn.send(task.payload)

    def deadline(self) -> float | None:
        if self.task is None or self.task.timeout is None:
            return None
        return self.started + self.task.timeout

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(_KILL_GRACE)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle worker to exit, kill it if it does not."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(_KILL_GRACE)
        self.kill()


def _exit_reason(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"the worker died of signal {signal.Signals(-code).name}"
        except ValueError:
            return f"the worker died of signal {-code}"
    return f"the worker exited with code {code}"


class ProcessPool:
    """`workers` processes with `threads` torch threads each; `run` streams `Done`s."""

    def __init__(self, workers: int, threads: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self.threads = workers, threads
        self._ctx = _context()
        self._live: list[_Worker] = []

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, busy ones are killed."""
        live, self._live = self._live, []
        for w in live:
            if w.task is None:
                w.stop()
            else:
                w.kill()

    def run(self, fn: ItemFunction, tasks: Iterable[Task]) -> Iterator[Done]:
        """Every task's `Done`, in completion order. A task past its timeout: its worker is
        killed, the task is "timeout", a new worker takes its place; a worker that dies:
        "error", and a new one as well. Closing the generator (or an exception in the
        caller, e.g. KeyboardInterrupt) stops every worker."""
        queue = iter(tasks)
        pending = True
        try:
            while True:
                idle = [w for w in self._live if w.task is None]
                while pending and (idle or len(self._live) < self.workers):
                    task = next(queue, None)
                    if task is None:
                        pending = False
                        break
                    worker = idle.pop() if idle else self._spawn(fn)
                    worker.give(task)
                busy = [w for w in self._live if w.task is not None]
                if not busy:
                    return
                deadlines = [d for d in (w.deadline() for w in busy) if d is not None]
                wait = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
                ready = set(multiprocessing.connection.wait(
                    [w.conn for w in busy] + [w.process.sentinel for w in busy], wait))
                now = time.monotonic()
                for w in busy:
                    if w.conn in ready or w.process.sentinel in ready:
                        yield self._collect(w, fn)
                    elif (d := w.deadline()) is not None and now >= d:
                        task = w.task
                        self._replace(w)
                        yield Done(task, "timeout", {}, now - w.started, w.name,
                                   f"killed after its time limit of {task.timeout:g} s")
        finally:
            self.close()

    def _spawn(self, fn: ItemFunction) -> _Worker:
        worker = _Worker(self._ctx, fn, self.threads)
        self._live.append(worker)
        return worker

    def _replace(self, w: _Worker) -> None:
        """Kill `w` and drop it; a new worker is spawned when the next task needs one."""
        w.kill()
        self._live.remove(w)
        w.task = None

    def _collect(self, w: _Worker, fn: ItemFunction) -> Done:
        task = w.task
        assert task is not None
        try:
            if not w.conn.poll():
                raise EOFError
            status, record, error, seconds = w.conn.recv()
        except (EOFError, OSError):
            w.process.join(_KILL_GRACE)
            reason = _exit_reason(w.process)
            seconds = time.monotonic() - w.started
            self._replace(w)
            return Done(task, "error", {}, seconds, w.name, f"{reason} while running item {task.key}")
        w.task = None
        return Done(task, status, record, seconds, w.name, error)
