"""The small proof-feature suite of specs/suites runs inside the test suite (the full ones are
run by hand: `python -m unittest specs.suites.proof_features`)."""

from __future__ import annotations

import csv
import unittest
from pathlib import Path

import pytest

from specs.suites import proof_features


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


def test_every_experiment_is_listed_in_the_readme() -> None:
    readme = (Path(proof_features.__file__).parent / "README.md").read_text()
    for name in ("MnistConvCrownSmall", "Mnist01CrownEps002", "Mnist01CrownEps01", "Mnist01DeepzEps01",
                 "MnistConvIbpCrownEps01", "CifarConvSmallPgdCrown"):
        assert name in readme
