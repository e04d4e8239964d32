"""CEM of many images in a process pool (`explain_many`, `CEMJob`): every id gets a result with
its meta data, a failing item is one error, a hanging one a timeout, no worker outlives the
call, and pooled records equal the same items run in this process; CEMJob also runs as a
stored batch."""

from __future__ import annotations

import time

import numpy as np
import pytest

from networks.datasets import load_samples
from profit.cem import CEMOptions
from profit.errors import ProfitError
from profit.runs import Batch, CEMItem, CEMJob, RunOptions, cem_tasks, explain_many
from tests.profit.runs.test_pool import _pid_alive as _alive

JOB = CEMJob("mnist_mlp", CEMOptions(mode="PN", max_iter=30, c_steps=2), autoencoder="mnist_ae")


def _items() -> list[CEMItem]:
    images, labels = load_samples()
    items = [CEMItem(f"img-{i}", images[i], {"label": int(labels[i]), "n": i}) for i in range(5)]
    items.insert(2, CEMItem("broken", np.zeros((3, 5)), {"label": None, "n": -1}))  # does not fit the network
    return items


def test_six_images_two_workers_one_crash() -> None:
    items = _items()
    results = explain_many(JOB, items, workers=2, timeout=120)
    assert list(results) == [item.key for item in items]
    assert [r["status"] for r in results.values()].count("error") == 1
    broken = results["broken"]
    assert broken["status"] == "error" and "do not fit the network" in broken["error"]
    assert broken["meta"] == {"label": None, "n": -1}
    for item in items:
        r = results[item.key]
        assert r["meta"] == item.meta
        if item.key != "broken":
            assert r["status"] == "ok" and r["found"] and r["predicted"] != r["target"] and r["ae_error"] > 0
    pids = {int(r["worker"].split()[-1]) for r in results.values()}
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "a worker outlived explain_many"
    serial = explain_many(JOB, items[:2], workers=0)
    for key in ("img-0", "img-1"):
        assert serial[key]["explanation"] == results[key]["explanation"]


def test_a_hanging_item_is_a_timeout() -> None:
    slow = CEMJob("mnist_mlp", CEMOptions(mode="PN", max_iter=100_000, c_steps=5))
    results = explain_many(slow, _items()[:2], workers=2, timeout=1.0)
    assert [r["status"] for r in results.values()] == ["timeout", "timeout"]
    assert all("time limit" in r["error"] for r in results.values())
    pids = {int(r["worker"].split()[-1]) for r in results.values()}
    time.sleep(0.5)
    assert not any(_alive(p) for p in pids)


def test_stored_batch_and_bad_jobs(tmp_path) -> None:
    items = _items()[:2]
    finished = Batch(JOB, cem_tasks(items), RunOptions(store=tmp_path / "runs.sqlite", workers=0,
                                                       progress=False)).execute()
    rows = JOB.results(finished.rows)
    assert set(rows) == {"img-0", "img-1"} and all(r["status"] == "ok" and r["found"] for r in rows.values())
    assert rows["img-1"]["meta"] == items[1].meta
    with pytest.raises(ProfitError, match="same id"):
        explain_many(JOB, [items[0], items[0]])
    with pytest.raises(ProfitError, match="unknown optimizer"):
        CEMJob("mnist_mlp", optimizer="sgd")
    with pytest.raises(ProfitError, match="autoencoder"):
        CEMJob("mnist_mlp", CEMOptions(gamma=1.0))
