"""The results store: round trip, no duplicates, error rows replaced, export, resume checks."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from networks import MODELS_DIR
from profit.data import load_images
from profit.errors import ProfitError
from profit.runs import Batch, RunOptions, Store, VerifyJob, code_version, image_tasks
from profit.verify import VerifyOptions
from profit.version import __version__

COLUMNS = (("n", "INTEGER"), ("name", "TEXT"), ("value", "REAL"), ("extra", "TEXT"))


def test_round_trip_and_export(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        run = store.start_run("verify", COLUMNS, {"eps": 0.02, "nested": {"a": [1, 2]}}, "profit verify")
        assert store.insert(run.run_id, "verify", "b", "ok", {"n": 2, "name": "two", "value": 0.5,
                                                              "extra": {"k": [1]}}, position=2, worker="w1")
        assert store.insert(run.run_id, "verify", "a", "ok", {"n": True, "value": None}, position=1)
        assert store.insert(run.run_id, "verify", "c", "timeout", {"n": 3}, position=3, error="killed")
    with Store(path) as store:  # a fresh connection reads what the first committed
        info = store.run(run.run_id)
        assert info.options == {"eps": 0.02, "nested": {"a": [1, 2]}} and info.kind == "verify"
        assert info.version == code_version() and info.version.startswith(__version__)
        assert info.command == "profit verify" and info.finished is None
        rows = store.records(run.run_id)
        assert [r["item_key"] for r in rows] == ["a", "b", "c"]
        assert rows[0]["n"] == 1 and rows[0]["value"] is None and rows[0]["name"] is None
        assert json.loads(rows[1]["extra"]) == {"k": [1]} and rows[1]["worker"] == "w1"
        assert rows[2]["status"] == "timeout" and rows[2]["error"] == "killed"
        assert store.finished_keys(run.run_id, "verify") == {"a", "b", "c"}
        assert store.run("last").run_id == run.run_id == store.run("last", "verify").run_id
        store.export(run.run_id, tmp_path / "out.csv")
        store.export(run.run_id, tmp_path / "out.json")
        store.finish_run(run.run_id)
        assert store.run(run.run_id).finished is not None
    with (tmp_path / "out.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["item_key"] for r in table] == ["a", "b", "c"] and table[1]["name"] == "two" and table[0]["name"] == ""
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["run"]["options"]["eps"] == 0.02 and len(doc["records"]) == 3
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_duplicates_and_error_rows_are_replaced(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        run = store.start_run("explain", COLUMNS, {})
        assert store.insert(run.run_id, "explain", "k", "ok", {"n": 1})
        assert not store.insert(run.run_id, "explain", "k", "ok", {"n": 2})  # an ok row stays
        assert not store.insert(run.run_id, "explain", "k", "error", {}, error="boom")
        assert store.insert(run.run_id, "explain", "e", "error", {}, error="crash")
        assert store.finished_keys(run.run_id, "explain") == {"k"}  # a resume runs "e" again
        assert store.finished_keys(run.run_id, "explain", retry_errors=False) == {"k", "e"}
        assert store.insert(run.run_id, "explain", "e", "ok", {"n": 5})
        rows = {r["item_key"]: r for r in store.records(run.run_id)}
        assert len(rows) == 2 and rows["k"]["n"] == 1 and rows["e"]["n"] == 5 and rows["e"]["error"] is None
        other = store.start_run("explain", COLUMNS, {})
        assert store.insert(other.run_id, "explain", "k", "ok", {"n": 9})  # keys are per run
        with pytest.raises(sqlite3.IntegrityError):
            store.db.execute("INSERT INTO explain (run_id, item_key, status) VALUES (?, 'k', 'ok')", (run.run_id,))
        with pytest.raises(ValueError):
            store.insert(run.run_id, "explain", "x", "ok", {"nope": 1})
        with pytest.raises(ProfitError, match="no run nothere"):
            store.run("nothere")
        with pytest.raises(ProfitError, match="is a explain run, not verify"):
            store.run(run.run_id, "verify")


def test_not_a_store(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not SQLite" * 100)
    with pytest.raises(ProfitError, match="not a usable results store"):
        Store(bad)
    with pytest.raises(ProfitError, match="directory"):
        Store(tmp_path)


def test_batch_resume_skips_stored_items_and_checks_options(tmp_path: Path) -> None:
    net = str(MODELS_DIR / "mnist_mlp.onnx")
    job = VerifyJob(net, VerifyOptions(eps=0.02, domain="box"), "samples")
    store = tmp_path / "runs.sqlite"
    first = Batch(job, image_tasks(load_images(count=3)), RunOptions(store=store, workers=0, progress=False))
    done = first.execute()
    assert done.complete and done.ran == 3 and done.skipped == 0
    more = Batch(job, image_tasks(load_images(count=5)),
                 RunOptions(store=store, workers=0, resume=first.run_id, progress=False))
    assert [t.key for t in more.pending] == ["3", "4"]
    done = more.execute()
    assert done.ran == 2 and done.skipped == 3 and [r["idx"] for r in done.rows] == [0, 1, 2, 3, 4]
    with Store(store) as s:
        assert len(s.records(first.run_id)) == 5 and s.run(first.run_id).finished is not None
    other = VerifyJob(net, VerifyOptions(eps=0.03, domain="box"), "samples")
    with pytest.raises(ProfitError, match=r"other options \(options.eps 0.02 \(now 0.03\)\)"):
        Batch(other, image_tasks(load_images(count=5)), RunOptions(store=store, resume="last"))
