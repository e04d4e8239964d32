"""The cluster backend: the same item functions as Ray tasks (the only module importing ray).

    for done in run_ray(job, tasks, address="auto"):      # a running cluster (`ray start --head`)
        ...                                               # the same `Done`s as the local pool

Ray is an optional extra (`pip install profit[ray]`) and never starts by default: only
`--backend ray` or `--ray ADDRESS` bring it in. With an address, the driver joins that
cluster (`auto`, `HOST:6379`, or a Ray Client address `ray://HOST:10001`); without one it
starts a local Ray with `workers` CPUs (about 7 s and 800 MB here, which is why the local
process pool is the default). Every node needs the same profit installed (or, on one
machine / a shared file system, this checkout: its folder is put on the workers'
PYTHONPATH). The results are streamed back to the driver, which alone writes the store,
so store and resume work as with the local pool.

One task per item, one CPU per task, one torch thread each, no retries (a retried item
could run twice; a crashed worker is an error row, as in the pool). At most as many tasks
are in flight as the cluster has CPUs, so a task's hard time limit, counted from its
submission, is close to its own run time; a task past it is cancelled with force (its
worker process is killed) and stored as "timeout".
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from profit.errors import ProfitError
from profit.runs.pool import Done, ItemFunction, Task, describe, run_item

_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding the profit package


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ProfitError("the Ray backend needs ray: pip install 'profit[ray]' (or pip install ray)") from None
    return ray


def _ray_item(fn: ItemFunction, payload: Any) -> tuple[str, dict[str, Any], str | None, float, str]:
    """One item in a Ray worker: (status, record, error, seconds, worker)."""
    import torch

    torch.set_num_threads(1)
    status, record, error, seconds = run_item(fn, payload)
    return status, record, error, seconds, f"{os.uname().nodename} pid {os.getpid()}"


def run_ray(fn: ItemFunction, tasks: Iterable[Task], address: str | None = None,
            workers: int | None = None) -> Iterator[Done]:
    """Every task's `Done`, in completion order, computed by Ray tasks (see the module docstring)."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p),
               "OMP_NUM_THREADS": "1"}
        try:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, logging_level="WARNING", runtime_env={"env_vars": env})
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ProfitError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                              f"{' '.join(str(exc).split())}") from None
    in_flight: dict[Any, tuple[Task, float]] = {}
    try:
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_item)
        fn_ref = ray.put(fn)
        queue = iter(tasks)
        pending = True
        while True:
            while pending and len(in_flight) < slots:
                task = next(queue, None)
                if task is None:
                    pending = False
                    break
                in_flight[remote.remote(fn_ref, task.payload)] = (task, time.monotonic())
            if not in_flight:
                return
            deadlines = [t0 + t.timeout for t, t0 in in_flight.values() if t.timeout is not None]
            wait = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait)
            for ref in ready:
                task, t0 = in_flight.pop(ref)
                try:
                    status, record, error, seconds, worker = ray.get(ref)
                except ray.exceptions.RayError as exc:  # a dead worker or node
                    status, record, error, seconds, worker = "error", {}, describe(exc), time.monotonic() - t0, "ray"
                yield Done(task, status, record, seconds, worker, error)
            now = time.monotonic()
            for ref, (task, t0) in list(in_flight.items()):
                if task.timeout is not None and now >= t0 + task.timeout:
                    ray.cancel(ref, force=True)
                    del in_flight[ref]
                    yield Done(task, "timeout", {}, now - t0, "ray", f"killed after its time limit of {task.timeout:g} s")
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
