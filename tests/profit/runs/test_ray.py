"""The Ray backend on a local Ray (skipped without ray: it is the optional extra profit[ray])."""

from __future__ import annotations

from pathlib import Path

import pytest

from networks import MODELS_DIR
from profit.data import load_images
from profit.runs import Batch, RunOptions, VerifyJob, image_tasks, run_serial
from profit.verify import VerifyOptions

pytest.importorskip("ray", reason="ray is not installed (pip install 'profit[ray]')")


def test_ray_local_gives_the_serial_records_and_resumes(tmp_path: Path) -> None:
    job = VerifyJob(str(MODELS_DIR / "mnist_mlp.onnx"), VerifyOptions(eps=0.02, domain="crown"), "samples")
    tasks = image_tasks(load_images(count=4))
    serial = {d.task.key: d.record for d in run_serial(job, tasks)}
    store = tmp_path / "ray.sqlite"
    first = Batch(job, tasks[:3], RunOptions(store=store, workers=0, progress=False))
    first.execute()  # three items stored by a serial run: Ray runs the fourth only
    batch = Batch(job, tasks, RunOptions(store=store, backend="ray", workers=2, resume=first.run_id, progress=False))
    assert [t.key for t in batch.pending] == ["3"]
    done = batch.execute()
    assert done.ran == 1 and done.complete
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    rows = {r["item_key"]: r for r in done.rows}
    assert all(r["status"] == "ok" for r in rows.values())
    assert {k: strip({c: rows[k][c] for c in serial[k]}) for k in rows} == {k: strip(r) for k, r in serial.items()}
    assert rows["3"]["worker"] != rows["0"]["worker"]
