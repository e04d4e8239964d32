"""The small experiments of specs/suites run inside the test suite (the full ones are run by
hand: `python -m unittest specs.suites.<module>`, see specs/suites/README.md)."""

from __future__ import annotations

import csv
import unittest
from pathlib import Path

import pytest

from networks.datasets import shared_dir
from specs.suites import attribution, cem, explanations, proof_features, robustness, vnnlib


def test_small_proof_feature_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFIT_RESULTS", str(tmp_path))
    suite = unittest.TestLoader().loadTestsFromTestCase(proof_features.MnistConvCrownSmall)
    result = unittest.TextTestRunner(verbosity=0).run(suite)
    assert result.wasSuccessful(), result.failures + result.errors
    assert result.testsRun == 4 and not result.skipped
    rows = list(csv.DictReader((tmp_path / "MnistConvCrownSmall.csv").open()))
    assert len(rows) == 8 and sum(r["proven"] == "True" for r in rows) >= 6


def test_results_are_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run replaces the CSV (one row per image, never appended)."""
    monkeypatch.setenv("PROFIT_RESULTS", str(tmp_path))
    (tmp_path / "MnistConvCrownSmall.csv").write_text("stale\n" * 50)
    proof_features.write_csv(tmp_path / "MnistConvCrownSmall.csv", [])
    assert (tmp_path / "MnistConvCrownSmall.csv").read_text().count("\n") == 1


SMALL = [(robustness.MlpAutoSmall, "MlpAutoSmall"), (robustness.MlpCompleteSmall, "MlpCompleteSmall"),
         (vnnlib.Vnncomp2021Test, "Vnncomp2021Test"), (vnnlib.AcasxuSample, "AcasxuSample"),
         (explanations.Five20Binary, "Five20Binary"), (explanations.Five12Levels3, "Five12Levels3"),
         (cem.MlpPnKappa2, "MlpPnKappa2"), (attribution.MlpEps1e4, "MlpEps1e4")]


@pytest.mark.parametrize("case, name", SMALL, ids=[name for _, name in SMALL])
def test_small_suites(case: type[unittest.TestCase], name: str, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test of the experiment passes (a skip only where the experiment says so) and its CSV is written."""
    if case.__module__.endswith("vnnlib") and shared_dir() is None:
        pytest.skip("../shared is absent")
    monkeypatch.setenv("PROFIT_RESULTS", str(tmp_path))
    suite = unittest.TestLoader().loadTestsFromTestCase(case)
    result = unittest.TextTestRunner(verbosity=0).run(suite)
    assert result.wasSuccessful(), result.failures + result.errors
    allowed = {"test_complete_leaves_nothing_unknown"}  # skipped by an incomplete experiment
    assert {test._testMethodName for test, _ in result.skipped} <= allowed
    assert (tmp_path / f"{name}.csv").is_file()


@pytest.mark.parametrize("module", [robustness, vnnlib, explanations, proof_features, cem, attribution])
def test_every_experiment_is_in_the_readme(module) -> None:
    readme = (Path(module.__file__).parent / "README.md").read_text()
    names = [c.__name__ for c in module.EXPERIMENTS]
    assert [n for n in names if f"`{n}`" not in readme] == []
