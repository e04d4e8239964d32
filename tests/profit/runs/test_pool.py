"""The local process pool: the same records as a serial run, a per-item time limit that kills
and replaces the worker, a crashed worker recorded as an error while the pool carries on."""

from __future__ import annotations

import os
import signal
import time

import pytest

from networks import MODELS_DIR
from profit.data import load_images
from profit.runs import ProcessPool, Task, VerifyJob, image_tasks, run_serial
from profit.verify import VerifyOptions


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _pids(dones) -> set[int]:
    return {int(d.worker.split()[-1]) for d in dones}


def _square(n: int) -> dict:
    """A pool item: sleeps n / 10 s (longer items finish later), crashes on n == 13, hangs on n == 99."""
    if n == 13:
        os.kill(os.getpid(), signal.SIGSEGV)
    if n == 99:
        time.sleep(60)
    if n == 7:
        raise ValueError("seven is not allowed")
    time.sleep(n / 10)
    return {"n": n, "square": n * n, "pid": os.getpid()}


def test_pool_equals_serial_run() -> None:
    """Verify-job records of a 2-worker pool equal the serial run's (the same item function)."""
    job = VerifyJob(str(MODELS_DIR / "mnist_mlp.onnx"), VerifyOptions(eps=0.02, domain="crown"))
    tasks = image_tasks(load_images(count=6))
    serial = {d.task.key: d.record for d in run_serial(job, tasks)}
    with ProcessPool(2) as pool:
        pooled = list(pool.run(job, tasks))
    assert {d.status for d in pooled} == {"ok"}
    assert len(_pids(pooled)) == 2
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert {d.task.key: strip(d.record) for d in pooled} == {k: strip(r) for k, r in serial.items()}
    assert [serial[str(i)]["verdict"] for i in range(6)] == ["verified", "verified", "unknown", "verified",
                                                             "verified", "verified"]


def test_completion_order_timeout_crash_and_error() -> None:
    """Results stream as they finish; a hanging item is killed at its limit, a segfault and an
    exception become error rows, and the replacement workers finish the rest."""
    tasks = [Task(str(n), n, i, timeout=3.0) for i, n in enumerate([9, 1, 99, 13, 7, 2, 3])]
    start = time.monotonic()
    with ProcessPool(2) as pool:
        dones = list(pool.run(_square, tasks))
    elapsed = time.monotonic() - start
    by_key = {d.task.key: d for d in dones}
    assert sorted(by_key) == sorted(t.key for t in tasks) and len(dones) == len(tasks)
    assert by_key["99"].status == "timeout" and "time limit of 3 s" in by_key["99"].error
    assert by_key["13"].status == "error" and "SIGSEGV" in by_key["13"].error
    assert by_key["7"].status == "error" and "ValueError: seven is not allowed" in by_key["7"].error
    for n in (9, 1, 2, 3):
        assert by_key[str(n)].status == "ok" and by_key[str(n)].record["square"] == n * n
    keys = [d.task.key for d in dones]
    assert keys.index("1") < keys.index("9")  # completion order, not submission order
    assert elapsed < 30  # the hanging item did not hold the pool for its 60 s
    assert len(_pids(dones)) == 3  # two workers, and one in place of the crashed (the rest was done by the time
    # the hanging one was killed)
    time.sleep(0.5)
    assert not any(_pid_alive(p) for p in _pids(dones)), "workers left running"


def test_closing_the_stream_stops_the_workers() -> None:
    """Leaving the loop early (as KeyboardInterrupt does) kills the busy workers: no orphans."""
    tasks = [Task(str(n), n, i) for i, n in enumerate([1, 99, 99])]
    with ProcessPool(2) as pool:
        stream = pool.run(_square, tasks)
        first = next(stream)
        busy = [w.process.pid for w in pool._live]
        stream.close()
    assert first.task.key == "1" and busy
    time.sleep(0.5)
    assert not any(_pid_alive(p) for p in busy)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProcessPool(0)
