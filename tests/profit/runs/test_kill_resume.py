"""A batch run killed with SIGKILL at random points, then resumed: every item exactly once.

A real `python -m profit verify` subprocess (2 workers) is killed three times, each time a
seeded random number of stored items and milliseconds after its previous state, then resumed
with --resume until it finishes (about 40 s: four interpreter starts with torch). The store must
then hold every item once, with the same records as a serial run of the same items, and no
worker may outlive its killed driver.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from networks import MODELS_DIR
from profit.data import load_images
from profit.runs import VerifyJob, image_tasks, run_serial
from profit.verify import VerifyOptions

REPO = Path(__file__).resolve().parents[3]
COUNT = 14
ARGS = ("--count", str(COUNT), "--domain", "box", "--steps", "300", "--eps", "0.02")  # PGD: ~0.2 s per item


def _stored(db: Path) -> tuple[str | None, int]:
    """(run id or None, stored items), read while the driver may be writing."""
    if not db.exists():
        return None, 0
    con = sqlite3.connect(db, timeout=10)
    try:
        run = con.execute("SELECT run_id FROM runs").fetchone()
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        n = con.execute("SELECT count(*) FROM verify").fetchone()[0] if "verify" in tables else 0
        return (run[0] if run else None), n
    except sqlite3.OperationalError:
        return None, 0
    finally:
        con.close()


def _marked(marker: str) -> list[int]:
    """Pids of live processes whose environment holds the marker (the driver's workers inherit it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes() and "Z" not in (proc / "stat").read_text()[-60:]:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_killed_runs_resume_without_loss_or_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "kill.sqlite"
    marker = f"PROFIT_KILL_TEST={uuid.uuid4().hex}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PROFIT_KILL_TEST": marker.split("=")[1]}
    base = [sys.executable, "-m", "profit", "verify", *ARGS, "--workers", "2", "--store", str(db), "--no-progress"]
    rng = random.Random(18)
    kills = 0
    for _ in range(3):
        run_id, before = _stored(db)
        argv = base + (["--resume", run_id] if run_id else [])
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = before + rng.randint(1, 4)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _stored(db)[1] < target and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        end = time.monotonic() + 5
        while _marked(marker) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _marked(marker), "workers outlived their killed driver"
    assert kills >= 2, "the run finished before it could be killed: make the items slower"
    run_id, before = _stored(db)
    assert run_id is not None and before < COUNT
    done = subprocess.run(base + ["--resume", run_id], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{COUNT} items in" in done.stdout
    con = sqlite3.connect(db)
    keys = [r[0] for r in con.execute("SELECT item_key FROM verify WHERE run_id = ?", (run_id,))]
    assert sorted(keys, key=int) == [str(i) for i in range(COUNT)]  # each item once
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert con.execute("SELECT finished FROM runs").fetchone()[0] is not None
    stored = {r[0]: r[1:] for r in con.execute("SELECT item_key, status, verdict, margin FROM verify")}
    job = VerifyJob(str(MODELS_DIR / "mnist_mlp.onnx"), VerifyOptions(eps=0.02, domain="box",
                                                                      attack=VerifyOptions().attack.__class__(steps=300)))
    for d in run_serial(job, image_tasks(load_images(count=COUNT))):
        status, verdict, margin = stored[d.task.key]
        assert (status, verdict) == ("ok", d.record["verdict"])
        assert margin == d.record["margin"] or abs(margin - d.record["margin"]) < 1e-6
