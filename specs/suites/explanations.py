"""Formal-explanation experiments as unittest specs: every AXp and CXp of a decision over a
pixel patch, checked against brute force.

    python -m unittest specs.suites.explanations                       # every suite below
    python -m unittest specs.suites.explanations.Five20Binary          # one of them

Each TestCase is one experiment (network, instance, patch, pixel domain, target, local mode).
`setUpClass` enumerates every AXp and CXp with `profit.explain.Explainer` and writes
`<results>/<ClassName>.csv` (kind, size, pixels, minimality; overwritten). The tests assert:

- the enumeration is complete, with the expected numbers of AXps and CXps;
- brute force (`brute_force`, for patches of up to ~20 discrete pixels) finds the same sets:
  every completion of the patch is evaluated in float64, the CXps are the subset-minimal sets
  of pixels whose change alone can violate the target, and the AXps their minimal hitting sets;
- duality: the AXps are exactly the minimal hitting sets of the CXps and vice versa;
- every CXp's witness violates the target in the float64 forward pass and in onnxruntime.

`Five12Levels3` and `Five20Binary` use only what the project ships and run inside the test
suite (tests/specs/test_suites.py). Runtimes are listed in specs/suites/README.md.
"""

from __future__ import annotations

import csv
import unittest
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from networks import MODELS_DIR, load_onnx
from networks.datasets import load_samples
from profit.explain import Enumeration, ExplainOptions, Explainer, PixelDomain
from specs.suites import experiments_suite, results_dir

_CHUNK = 1 << 16  # completions evaluated per forward pass


def brute_force(explainer: Explainer) -> tuple[set[int], set[int]]:
    """(AXps, CXps) of a local-mode problem over a discrete domain, as bit masks over the patch
    positions (bit i = patch pixel i), from the float64 verdict of every completion."""
    problem = explainer.problem
    n, values = problem.n, problem.domain.values
    K = len(values)
    masks = np.arange(1 << n, dtype=np.int64)
    bad = np.zeros(1 << n, dtype=bool)  # bad[m]: some completion differing from v exactly on m violates
    radix = K ** np.arange(n, dtype=np.int64)
    for start in range(0, K ** n, _CHUNK):
        codes = np.arange(start, min(start + _CHUNK, K ** n), dtype=np.int64)
        points = values[(codes[:, None] // radix) % K]  # (N, n)
        violates = problem.evaluate(points) == explainer.negate
        differ = ((points != problem.center) * (1 << np.arange(n, dtype=np.int64))).sum(1)
        bad[differ[violates]] = True
    has_bad_subset = bad.copy()  # over every subset of m (sum over subsets, one bit at a time)
    for i in range(n):
        with_bit = (masks >> i) & 1 == 1
        has_bad_subset[with_bit] |= has_bad_subset[masks[with_bit] ^ (1 << i)]
    minimal = bad.copy()
    for i in range(n):
        with_bit = (masks >> i) & 1 == 1
        minimal[with_bit] &= ~has_bad_subset[masks[with_bit] ^ (1 << i)]
    cxps = set(np.flatnonzero(minimal).tolist())
    return minimal_hitting_sets(cxps, n), cxps


def minimal_hitting_sets(sets: set[int], n: int) -> set[int]:
    """Subset-minimal bit masks over n positions that hit every mask in `sets`."""
    masks = np.arange(1 << n, dtype=np.int64)
    hits = np.ones(1 << n, dtype=bool)
    for s in sets:
        hits &= (masks & s) != 0
    minimal = hits.copy()
    for i in range(n):
        with_bit = (masks >> i) & 1 == 1
        minimal[with_bit] &= ~hits[masks[with_bit] ^ (1 << i)]
    return set(np.flatnonzero(minimal).tolist())


def _mask(pixels: Sequence[int], patch: Sequence[int]) -> int:
    position = {p: i for i, p in enumerate(patch)}
    return sum(1 << position[p] for p in pixels)


class ExplanationExperiment(unittest.TestCase):
    """Base class: subclasses set the class attributes; this class itself runs nothing."""

    network: ClassVar[Path] = MODELS_DIR / "mnist_5v6.onnx"
    instance: ClassVar[int] = 23  # index among the shipped samples
    patch: ClassVar[tuple[int, ...]] = ()
    domain: ClassVar[str] = "binary"
    target: ClassVar[str | int] = "true"  # the predicted class, or another class index
    expected: ClassVar[tuple[int, int] | None] = None  # (AXps, CXps)
    check_brute_force: ClassVar[bool] = True
    explainer: ClassVar[Explainer]
    enumeration: ClassVar[Enumeration]

    @classmethod
    def setUpClass(cls) -> None:
        if cls is ExplanationExperiment:
            raise unittest.SkipTest("base class")
        net = load_onnx(cls.network)
        images, _ = load_samples()
        domain = PixelDomain.parse(cls.domain)
        x = domain.quantize(images[cls.instance].reshape(-1).astype(np.float64))
        cls.explainer = Explainer(net, x, list(cls.patch), domain, options=ExplainOptions(target=cls.target))
        cls.enumeration = cls.explainer.enumerate("both").run()
        path = results_dir() / f"{cls.__name__}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("kind", "size", "pixels", "minimality"))
            for e in cls.enumeration.items:
                writer.writerow((e.kind, e.size, " ".join(map(str, e.pixels)), e.minimality))

    def _masks(self, kind: str) -> set[int]:
        return {_mask(e.pixels, self.patch) for e in self.enumeration.items if e.kind == kind}

    def test_complete_with_expected_counts(self) -> None:
        self.assertEqual(self.enumeration.status, "complete", self.enumeration.reasons)
        if self.expected is not None:
            self.assertEqual((len(self.enumeration.explanations), len(self.enumeration.counterexamples)), self.expected)

    def test_matches_brute_force(self) -> None:
        if not self.check_brute_force:
            self.skipTest("patch too large for brute force")
        axps, cxps = brute_force(self.explainer)
        self.assertEqual(self._masks("axp"), axps)
        self.assertEqual(self._masks("cxp"), cxps)

    def test_duality(self) -> None:
        axps, cxps, n = self._masks("axp"), self._masks("cxp"), len(self.patch)
        self.assertEqual(minimal_hitting_sets(cxps, n), axps)
        self.assertEqual(minimal_hitting_sets(axps, n), cxps)

    def test_witnesses_violate_the_target(self) -> None:
        problem = self.explainer.problem
        for c in self.enumeration.counterexamples:
            values = np.asarray(c.witness)[problem.patch_index][None]
            self.assertEqual(bool(problem.evaluate(values)[0]), self.explainer.negate, c)
            self.assertEqual(bool(problem.runtime_keeps(values)[0]), self.explainer.negate, c)

    def test_results_file(self) -> None:
        lines = (results_dir() / f"{type(self).__name__}.csv").read_text().splitlines()
        self.assertEqual(len(lines), 1 + len(self.enumeration.items))


def _rect(rows: range, cols: range) -> tuple[int, ...]:
    return tuple(r * 28 + c for r in rows for c in cols)


class Five20Binary(ExplanationExperiment):
    """The demo: the 5-vs-6 net on sample 23 (a "5"), the paper's 20-pixel patch (rows 15-18 x
    cols 8-12), binary pixels (runs in the test suite)."""

    patch = _rect(range(15, 19), range(8, 13))
    expected = (67, 22)


class Five12Levels3(ExplanationExperiment):
    """Sample 23, 12 pixels (rows 16-18 x cols 8-11), three intensity levels (runs in the test suite)."""

    patch, domain = _rect(range(16, 19), range(8, 12)), "levels:3"
    expected = (47, 11)


class Six20Binary(ExplanationExperiment):
    """Sample 21 (a "6"), 20 pixels (rows 14-17 x cols 10-14), binary."""

    instance, patch = 21, _rect(range(14, 18), range(10, 15))
    expected = (53, 26)


EXPERIMENTS = (Five20Binary, Five12Levels3, Six20Binary)


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern: str | None) -> unittest.TestSuite:
    """Every experiment of this module, never the base class."""
    return experiments_suite(loader, EXPERIMENTS)
