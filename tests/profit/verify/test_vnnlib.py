"""The VNN-LIB runner against the VNN-COMP 2021 consensus, and its result files.

Ground truth: `consensus` in ../shared/benchmarks/vnncomp2021/results_2021.csv. The
incomplete runner may answer unknown/timeout, never unsat on a SAT instance nor sat
on an UNSAT one; every sat carries a counterexample that onnxruntime confirms and
that lies inside the box as written in the file (checked in float64 here).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from profit.errors import ProfitError
from profit.verify import VnnlibOutcome, run_vnnlib
from specs.vnnlib import VnnlibError, parse_vnnlib

ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks" / "vnncomp2021"
RESULTS = ROOT / "results_2021.csv"
WRONG = {("unsat", "SAT"), ("sat", "UNSAT")}

if not RESULTS.exists():
    pytest.skip(f"{RESULTS} not found (shared benchmarks absent)", allow_module_level=True)


def _rows(benchmark: str) -> list[dict[str, str]]:
    with RESULTS.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["benchmark"] == benchmark]


def _sample(benchmark: str, per_answer: int = 3) -> list[tuple[str, str, str]]:
    """per_answer SAT and per_answer UNSAT instances, spread over the benchmark."""
    picked = []
    for answer in ("SAT", "UNSAT"):
        rows = [r for r in _rows(benchmark) if r["consensus"] == answer]
        step = max(1, len(rows) // per_answer)
        picked += [(r["onnx"], r["vnnlib"], answer) for r in rows[::step][:per_answer]]
    return picked


def _written_bounds(vnnlib: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The input bounds exactly as written, in float64 (files of `(<= X_i c)` / `(>= X_i c)` lines)."""
    lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
    for op, i, value in re.findall(r"\(\s*(<=|>=)\s+X_(\d+)\s+(\S+?)\s*\)", vnnlib.read_text()):
        if op == "<=":
            upper[int(i)] = min(upper[int(i)], float(value))
        else:
            lower[int(i)] = max(lower[int(i)], float(value))
    return lower, upper


def _check_counterexample(outcome: VnnlibOutcome, onnx: Path, vnnlib: Path) -> None:
    """The result text's X lies in the written box; onnxruntime gives exactly its Y; Y violates the spec."""
    text = outcome.text()
    assert text.startswith("sat\n(")
    xs = [float(v) for v in re.findall(r"\(X_\d+ ([^\s()]+)\)", text)]
    ys = [float(v) for v in re.findall(r"\(Y_\d+ ([^\s()]+)\)", text)]
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    assert math.prod(shape) == len(xs)
    y = session.run(None, {inp.name: np.array(xs, dtype=np.float32).reshape(shape)})[0].reshape(-1)
    assert np.array_equal(y.astype(np.float64), np.array(ys))
    lower, upper = _written_bounds(vnnlib, len(xs))
    assert np.all(np.array(xs) >= lower) and np.all(np.array(xs) <= upper)
    problems = parse_vnnlib(vnnlib, n_inputs=len(xs), n_outputs=len(ys))
    inside = [p for p in problems if bool(p.box.contains(torch.tensor([xs], dtype=torch.float32))[0])]
    assert any(float(p.spec.margin(torch.tensor([ys]))[0]) <= 0 for p in inside)


def test_test_benchmark_matches_consensus() -> None:
    for row in _rows("test"):
        onnx, vnnlib = ROOT / "test" / row["onnx"], ROOT / "test" / row["vnnlib"]
        outcome = run_vnnlib(onnx, vnnlib, timeout=30)
        assert outcome.result == row["consensus"].lower(), (row["onnx"], outcome.decision)
        if outcome.result == "sat":
            _check_counterexample(outcome, onnx, vnnlib)


@pytest.mark.parametrize("benchmark", ["mnistfc", "acasxu"])
def test_sample_never_contradicts_consensus(benchmark: str) -> None:
    answered = []
    for onnx_name, vnnlib_name, consensus in _sample(benchmark):
        onnx, vnnlib = ROOT / benchmark / onnx_name, ROOT / benchmark / vnnlib_name
        outcome = run_vnnlib(onnx, vnnlib, timeout=1.0)
        assert (outcome.result, consensus) not in WRONG, (onnx_name, vnnlib_name, outcome.decision)
        assert outcome.result in ("sat", "unsat", "unknown", "timeout")
        if outcome.result == "sat":
            _check_counterexample(outcome, onnx, vnnlib)
        answered.append(outcome.result)
    assert {"sat", "unsat"} & set(answered)  # the sample is not all undecided


def test_unsat_and_timeout_texts() -> None:
    outcome = run_vnnlib(ROOT / "test" / "test_nano.onnx", ROOT / "test" / "test_nano.vnnlib")
    assert outcome.result == "unsat" and outcome.text() == "unsat\n" and outcome.seconds > 0


def test_more_inputs_than_the_network_names_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "wide.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                    "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 0))\n")
    with pytest.raises(VnnlibError, match=r"wide\.vnnlib:2: X_1 out of range"):
        run_vnnlib(ROOT / "test" / "test_nano.onnx", spec)


def test_parse_error_names_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n")
    with pytest.raises(VnnlibError, match=r"bad\.vnnlib:3"):
        run_vnnlib(ROOT / "test" / "test_nano.onnx", spec)


def test_bad_timeout() -> None:
    with pytest.raises(ProfitError, match="timeout"):
        run_vnnlib(ROOT / "test" / "test_nano.onnx", ROOT / "test" / "test_nano.vnnlib", timeout=0)
