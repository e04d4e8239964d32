"""Unittest-style experiment specs: each experiment is a `unittest.TestCase`
(network, images, eps, domain, expected outcome) whose `setUpClass` runs it and writes
`<results>/<ClassName>.csv`, and whose tests assert what must hold. Run one with
`python -m unittest specs.suites.<module>.<Class>`; see specs/suites/README.md.

Modules: `robustness` (eps-balls), `vnnlib` (VNN-COMP benchmarks against their verdicts),
`explanations` (AXps/CXps against brute force), `proof_features` (ProFIt).
"""

import os
from pathlib import Path


def results_dir() -> Path:
    """Where the suites write their CSVs: $PROFIT_RESULTS, else ./results."""
    return Path(os.environ.get("PROFIT_RESULTS", "results"))
