"""Batch runs from the command line: the same verdicts as a single run, stored, resumable, and
one-line errors for bad combinations."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest

from profit.cli import main

REPO = Path(__file__).resolve().parents[3]
VNN_TEST = REPO.parent / "shared" / "benchmarks" / "vnncomp2021" / "test"


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _table(out: str) -> list[list[str]]:
    """The idx / label / pred / verdict columns of `profit verify`'s table."""
    return [line.split()[:4] for line in out.splitlines() if line.split() and line.split()[0].isdigit()]


def test_verify_batch_equals_single_run_and_resumes(tmp_path: Path, capsys) -> None:
    args = ("verify", "--count", "4", "--domain", "crown", "--no-progress")
    code, single, _ = _cli(capsys, *args)
    assert code == 0
    store = tmp_path / "runs.sqlite"
    code, out, err = _cli(capsys, *args, "--workers", "0", "--store", store, "--out", tmp_path / "r.csv")
    assert code == 0 and "0 already stored, 4 to run on this process" in err
    assert _table(out) == _table(single) and len(_table(out)) == 4
    assert out.splitlines()[-2].startswith("verified 3/4") and "4 items in" in out.splitlines()[-1]
    with (tmp_path / "r.csv").open() as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == [row[3] for row in _table(single)]
    code, out, err = _cli(capsys, *args[:2], "6", *args[3:], "--workers", "0", "--store", store, "--resume", "last")
    assert code == 0 and "4 already stored, 2 to run" in err and "(2 run now, 4 stored before, 0 errors)" in out
    db = sqlite3.connect(store)
    assert db.execute("SELECT count(*), count(DISTINCT item_key) FROM verify").fetchone() == (6, 6)
    assert "profit verify --count 4" in db.execute("SELECT command FROM runs").fetchone()[0]


def test_vnnlib_batch(tmp_path: Path, capsys) -> None:
    instances = VNN_TEST / "test_instances.csv"
    if not instances.is_file():
        pytest.skip(f"{instances} not found")
    code, out, _ = _cli(capsys, "vnnlib", "--batch", instances, "--workers", "1", "--store", tmp_path / "v.sqlite",
                        "--out", tmp_path / "v.csv", "--no-progress")
    assert code == 0 and "unsat 4, sat 1, unknown 0, timeout 0, error 0; 5 instances" in out
    with (tmp_path / "v.csv").open() as f:
        rows = {(r["onnx"], r["vnnlib"]): r["result"] for r in csv.DictReader(f)}
    assert rows[("test_sat.onnx", "test_prop.vnnlib")] == "sat" and len(rows) == 5


def test_explain_many_instances(tmp_path: Path, capsys) -> None:
    patch = "428,429,430,431,432,456,457"
    code, single, _ = _cli(capsys, "explain", "-p", patch, "-d", "25")
    assert code == 0
    code, out, _ = _cli(capsys, "explain", "-p", patch, "-d", "25,26", "--workers", "0", "--store",
                        tmp_path / "e.sqlite", "--no-progress")
    assert code == 0 and "complete 2/2" in out
    axps = sum(line.startswith("expl ") for line in single.splitlines())
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["25"])
    assert axps >= 1 and row[4] == "complete" and int(row[5]) == axps


@pytest.mark.parametrize("argv, fragment", [
    (["vnnlib", "a.onnx", "b.vnnlib", "--batch", "x.csv"], "not both"),
    (["vnnlib", "a.onnx", "b.vnnlib", "--workers", "2"], "go with --batch"),
    (["vnnlib", "--batch", "missing.csv"], "no such instances file"),
    (["verify", "--count", "1", "--workers", "-1"], "--workers must be >= 0"),
    (["verify", "--count", "1", "--resume", "nothere"], "no run nothere"),
    (["features", "--count", "1", "--workers", "0", "--save-dir", "x"], "not stored by batch runs"),
    (["explain", "-p", "1,2", "-d", "1-3", "--save"], "explain one instance"),
    (["explain", "-p", "1,2", "-d", "5-2"], "-d must be"),
])
def test_bad_batch_input(argv: list[str], fragment: str, tmp_path: Path, capsys,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and err.startswith("profit: error:") and fragment in err, err
    assert len(err.strip().splitlines()) == 1 or "run " in err.splitlines()[0]
