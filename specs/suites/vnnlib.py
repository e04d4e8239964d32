"""VNN-LIB benchmark experiments as unittest specs: VNN-COMP instances against their verdicts.

    python -m unittest specs.suites.vnnlib                           # every suite below
    python -m unittest specs.suites.vnnlib.Vnncomp2021Test           # one of them

Each TestCase is one benchmark (an instances CSV: onnx, vnnlib, timeout; optionally a subset
of its rows and a timeout per instance) with its expected verdicts (the `consensus` column of
VNN-COMP 2021's results_2021.csv; VNN-COMP 2022's benchmarks come without one). `setUpClass`
decides every instance with `profit.verify.run_vnnlib` and writes `<results>/<ClassName>.csv`
(onnx, vnnlib, timeout, result, expected, seconds, decided_by; overwritten). The tests assert:

- no wrong verdict: never unsat where the reference says SAT, never sat where it says UNSAT;
- every sat holds on its own: the counterexample lies in an input box of the parsed property
  and onnxruntime's outputs there violate the property (re-checked here, independently of the
  verifier's own confirmation);
- at least `min_solved` instances decided (sat or unsat), the figure measured when the suite
  was written.

`Vnncomp2021Test` and `AcasxuSample` run inside the test suite (tests/specs/test_suites.py);
all need ../shared and are skipped without it. Runtimes are in specs/suites/README.md.
"""

from __future__ import annotations

import csv
import unittest
from pathlib import Path
from typing import ClassVar

from networks.datasets import shared_dir
from profit.verify import VnnlibInstance, VnnlibOutcome, counterexample_holds, read_instances, run_vnnlib
from specs.suites import experiments_suite, results_dir

_SHARED = shared_dir()
_VNNCOMP = None if _SHARED is None else _SHARED / "benchmarks"
WRONG = {("unsat", "SAT"), ("sat", "UNSAT")}
COLUMNS = ("onnx", "vnnlib", "timeout", "result", "expected", "seconds", "decided_by")


def reference_verdicts(path: Path, benchmark: str) -> dict[tuple[str, str], str]:
    """(onnx, vnnlib) -> consensus (SAT / UNSAT / UNKNOWN) of one benchmark of results_2021.csv."""
    with path.open(newline="") as f:
        return {(r["onnx"], r["vnnlib"]): r["consensus"] for r in csv.DictReader(f) if r["benchmark"] == benchmark}


class VnnlibExperiment(unittest.TestCase):
    """Base class: subclasses set the class attributes; this class itself runs nothing."""

    instances: ClassVar[Path | None] = None  # a VNN-COMP instances CSV
    rows: ClassVar[tuple[int, ...] | None] = None  # the CSV rows to run (0-based; None: all)
    timeout: ClassVar[float | None] = None  # seconds per instance (None: the CSV's)
    reference: ClassVar[Path | None] = None  # results_2021.csv, or None: no expected verdicts
    benchmark: ClassVar[str] = ""  # its `benchmark` column
    min_solved: ClassVar[int] = 0
    selected: ClassVar[list[VnnlibInstance]]
    outcomes: ClassVar[list[VnnlibOutcome]]
    expected: ClassVar[list[str]]

    @classmethod
    def setUpClass(cls) -> None:
        if cls is VnnlibExperiment:
            raise unittest.SkipTest("base class")
        if cls.instances is None or not Path(cls.instances).is_file():
            raise unittest.SkipTest(f"instances {cls.instances} not found")
        every = read_instances(cls.instances, cls.timeout)
        cls.selected = every if cls.rows is None else [every[i] for i in cls.rows]
        verdicts = reference_verdicts(cls.reference, cls.benchmark) if cls.reference is not None else {}
        cls.expected = [verdicts.get((i.onnx, i.vnnlib), "UNKNOWN") for i in cls.selected]
        cls.outcomes = [run_vnnlib(i.onnx_path, i.vnnlib_path, timeout=i.timeout)
                        for i in cls.selected]
        path = results_dir() / f"{cls.__name__}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for i, outcome, expected in zip(cls.selected, cls.outcomes, cls.expected):
                writer.writerow((i.onnx, i.vnnlib, i.timeout, outcome.result, expected,
                                 f"{outcome.seconds:.3f}", outcome.decision.decided_by))

    def test_no_wrong_verdict(self) -> None:
        wrong = [(i.onnx, i.vnnlib, o.result, e) for i, o, e in zip(self.selected, self.outcomes, self.expected)
                 if (o.result, e) in WRONG]
        self.assertEqual(wrong, [])

    def test_sat_counterexamples_hold(self) -> None:
        for instance, outcome in zip(self.selected, self.outcomes):
            if outcome.result == "sat":
                self.assertTrue(counterexample_holds(instance.onnx_path, instance.vnnlib_path,
                                                     outcome.decision.counterexample[0]),
                                f"{instance.onnx} {instance.vnnlib}: the counterexample does not hold")

    def test_min_solved(self) -> None:
        solved = sum(o.result in ("sat", "unsat") for o in self.outcomes)
        self.assertGreaterEqual(solved, self.min_solved, f"{solved}/{len(self.outcomes)} solved")

    def test_results_file(self) -> None:
        lines = (results_dir() / f"{type(self).__name__}.csv").read_text().splitlines()
        self.assertEqual(len(lines), 1 + len(self.selected))
        self.assertEqual(lines[0], ",".join(COLUMNS))


_2021 = None if _VNNCOMP is None else _VNNCOMP / "vnncomp2021"
_2022 = None if _VNNCOMP is None else _VNNCOMP / "vnncomp2022"
_RESULTS_2021 = None if _2021 is None else _2021 / "results_2021.csv"


class Vnncomp2021Test(VnnlibExperiment):
    """VNN-COMP 2021's five `test` instances (runs in the test suite)."""

    instances = None if _2021 is None else _2021 / "test" / "test_instances.csv"
    reference, benchmark, min_solved = _RESULTS_2021, "test", 5


class AcasxuSample(VnnlibExperiment):
    """Twelve ACAS Xu instances (every 16th row: properties 1-4 on several networks; runs in the test suite)."""

    instances = None if _2021 is None else _2021 / "acasxu" / "acasxu_instances.csv"
    rows = tuple(range(0, 186, 16))
    reference, benchmark, min_solved = _RESULTS_2021, "acasxu", 12


class Acasxu(VnnlibExperiment):
    """All 186 ACAS Xu instances at the 2021 timeouts."""

    instances = None if _2021 is None else _2021 / "acasxu" / "acasxu_instances.csv"
    reference, benchmark, min_solved = _RESULTS_2021, "acasxu", 186


class Mnistfc(VnnlibExperiment):
    """All 90 mnistfc instances (256x2/4/6, eps 0.03/0.05) at the 2021 timeouts."""

    instances = None if _2021 is None else _2021 / "mnistfc" / "mnistfc_instances.csv"
    reference, benchmark, min_solved = _RESULTS_2021, "mnistfc", 59


class CollinsRulCnn(VnnlibExperiment):
    """collins_rul_cnn (1-D-style conv regression nets), 10 s per instance."""

    instances = None if _2022 is None else _2022 / "collins_rul_cnn" / "instances.csv"
    timeout, min_solved = 10.0, 55


class ReachProbDensity(VnnlibExperiment):
    """reach_prob_density (small control nets), 10 s per instance."""

    instances = None if _2022 is None else _2022 / "reach_prob_density" / "instances.csv"
    timeout, min_solved = 10.0, 27


class RlBenchmarks(VnnlibExperiment):
    """rl_benchmarks (small control nets), 10 s per instance."""

    instances = None if _2022 is None else _2022 / "rl_benchmarks" / "instances.csv"
    timeout, min_solved = 10.0, 290


class SriResnetA(VnnlibExperiment):
    """sri_resnet_a (a CIFAR-10 ResNet with residual Adds and BatchNorm), 10 s per instance."""

    instances = None if _2022 is None else _2022 / "sri_resnet_a" / "instances.csv"
    timeout, min_solved = 10.0, 18


EXPERIMENTS = (Vnncomp2021Test, AcasxuSample, Acasxu, Mnistfc, CollinsRulCnn, ReachProbDensity, RlBenchmarks,
               SriResnetA)


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern: str | None) -> unittest.TestSuite:
    """Every experiment of this module, never the base class."""
    return experiments_suite(loader, EXPERIMENTS)
