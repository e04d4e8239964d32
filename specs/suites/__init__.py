"""Unittest-style experiment specs: each experiment is a `unittest.TestCase`
(network, images, eps, domain, expected outcome) whose `setUpClass` runs it and writes
`<results>/<ClassName>.csv`, and whose tests assert what must hold. Run one with
`python -m unittest specs.suites.<module>.<Class>`; see specs/suites/README.md.

Modules: `robustness` (eps-balls), `vnnlib` (VNN-COMP benchmarks against their verdicts),
`explanations` (AXps/CXps against brute force), `proof_features` (ProFIt), `cem` (contrastive
explanations), `attribution` (certified gradient bounds). Each lists its experiments in
`EXPERIMENTS`, and its `load_tests` (unittest's hook) loads those and never a base class.
"""

import os
import unittest
from collections.abc import Sequence
from pathlib import Path


def results_dir() -> Path:
    """Where the suites write their CSVs: $PROFIT_RESULTS, else ./results."""
    return Path(os.environ.get("PROFIT_RESULTS", "results"))


def experiments_suite(loader: unittest.TestLoader, experiments: Sequence[type[unittest.TestCase]]) -> unittest.TestSuite:
    """The tests of the given experiment classes (a suite module's `load_tests`)."""
    suite = unittest.TestSuite()
    for case in experiments:
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite
