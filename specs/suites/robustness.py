"""Eps-ball robustness experiments as unittest specs.

    python -m unittest specs.suites.robustness                       # every suite below
    python -m unittest specs.suites.robustness.MlpAutoSmall          # one of them

Each TestCase is one experiment (network, images, eps, domain, complete or not, expected
minimum number of verified images). `setUpClass` runs `profit.verify.verify_images` on every
image and writes `<results>/<ClassName>.csv` (the `profit verify --out` columns, overwritten;
`<results>` is $PROFIT_RESULTS or ./results). The tests assert what must hold:

- at least `min_verified` images are verified (the figure measured when the suite was written);
- no contradiction: a stronger attack than the pipeline's (`check_restarts` PGD restarts of
  `check_steps` steps on every verified ball) finds no counterexample that onnxruntime
  confirms, and every falsified image's counterexample lies in its ball and is misclassified
  by onnxruntime;
- unknown stays unknown: with `complete`, no image is left unknown unless it timed out.

`MlpAutoSmall` and `MlpCompleteSmall` use only what the project ships and run inside the test
suite (tests/specs/test_suites.py); the others need ../shared and are skipped without it.
Runtimes are listed in specs/suites/README.md.
"""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import ClassVar

import torch

from networks import MODELS_DIR, Network, load_onnx
from networks.datasets import shared_dir
from profit.attacks import AttackOptions, confirm, onnx_outputs, pgd
from profit.data import fit_to_network, load_images
from profit.outcomes import Verdict
from profit.verify import ImageResult, VerifyOptions, summarize, verify_images, write_results
from specs.properties import robustness
from specs.regions import inner_box
from specs.suites import experiments_suite, results_dir

_SHARED = shared_dir()


class RobustnessExperiment(unittest.TestCase):
    """Base class: subclasses set the class attributes; this class itself runs nothing."""

    network: ClassVar[Path | None] = None  # ONNX file
    images: ClassVar[str | None] = None  # image source for profit.data.load_images (None: shipped samples)
    channels: ClassVar[int] = 1
    count: ClassVar[int] = 10
    eps: ClassVar[float] = 0.02
    domain: ClassVar[str] = "auto"
    complete: ClassVar[bool] = False
    timeout: ClassVar[float | None] = None  # seconds per image
    min_verified: ClassVar[int] = 0
    check_restarts: ClassVar[int] = 20  # the cross-check attack on every verified ball
    check_steps: ClassVar[int] = 100
    net: ClassVar[Network]
    x: ClassVar[torch.Tensor]
    results: ClassVar[list[ImageResult]]

    @classmethod
    def setUpClass(cls) -> None:
        if cls is RobustnessExperiment:
            raise unittest.SkipTest("base class")
        if cls.network is None or not Path(cls.network).is_file():
            raise unittest.SkipTest(f"network {cls.network} not found")
        if cls.images is not None and not Path(cls.images).exists():
            raise unittest.SkipTest(f"images {cls.images} not found")
        cls.net = load_onnx(cls.network)
        data = load_images(cls.images, count=cls.count, channels=cls.channels)
        cls.x = fit_to_network(data.images, cls.net, data.source)
        options = VerifyOptions(eps=cls.eps, domain=cls.domain, complete=cls.complete, timeout=cls.timeout)
        cls.results = verify_images(cls.net, cls.x, data.labels, options, progress=False, indices=data.indices)
        write_results(results_dir() / f"{cls.__name__}.csv", cls.results, cls.net.source, options,
                      summarize(cls.results))

    def _verdicts(self, verdict: Verdict) -> list[int]:
        return [i for i, r in enumerate(self.results) if r.verdict is verdict]

    def test_min_verified(self) -> None:
        verified = len(self._verdicts(Verdict.VERIFIED))
        self.assertGreaterEqual(verified, self.min_verified, f"{verified}/{len(self.results)} verified")

    def test_no_attack_breaks_a_verified_ball(self) -> None:
        rows = self._verdicts(Verdict.VERIFIED)
        if not rows:
            self.skipTest("nothing verified")
        x = self.x[rows]
        labels = torch.tensor([self.results[i].label for i in rows])
        region, feasible = inner_box((x.double() - self.eps).clamp(0, 1), (x.double() + self.eps).clamp(0, 1))
        spec = robustness(labels, self.net.n_outputs)
        options = AttackOptions(steps=self.check_steps, restarts=self.check_restarts, seed=7)
        points, found = pgd(self.net, region, spec, options)
        broken = confirm(self.net.source, self.net, points, region, spec) & found & feasible
        self.assertFalse(bool(broken.any()),
                         f"verified images {[self.results[rows[k]].idx for k in broken.nonzero().flatten()]} "
                         "have a confirmed counterexample")

    def test_counterexamples_are_real(self) -> None:
        for i in self._verdicts(Verdict.FALSIFIED):
            r = self.results[i]
            cex = r.counterexample.reshape(self.x[i].shape)
            self.assertLessEqual(float((cex - self.x[i]).abs().max()), self.eps + 1e-6, f"image {r.idx}: outside")
            self.assertTrue(0 <= float(cex.min()) and float(cex.max()) <= 1, f"image {r.idx}: outside [0, 1]")
            y = onnx_outputs(self.net.source, self.net, cex.unsqueeze(0))[0]
            others = torch.cat([y[:r.label], y[r.label + 1:]])
            self.assertLessEqual(float(y[r.label] - others.max()), 0.0, f"image {r.idx}: onnxruntime keeps the label")

    def test_complete_leaves_nothing_unknown(self) -> None:
        if not self.complete:
            self.skipTest("incomplete run: unknown is an answer")
        self.assertEqual(self._verdicts(Verdict.UNKNOWN), [])

    def test_results_file(self) -> None:
        lines = (results_dir() / f"{type(self).__name__}.csv").read_text().splitlines()
        self.assertEqual(len(lines), 1 + len(self.results))
        self.assertTrue(lines[0].startswith("idx,label,predicted,verdict,margin,decided_by,seconds"))


class MlpAutoSmall(RobustnessExperiment):
    """The shipped mnist_mlp, 30 shipped samples, eps 0.02, auto (runs in the test suite)."""

    network = MODELS_DIR / "mnist_mlp.onnx"
    count, eps, domain, min_verified = 30, 0.02, "auto", 28


class MlpCompleteSmall(RobustnessExperiment):
    """The shipped mnist_mlp, the 100 shipped samples, eps 0.02, auto then branch and bound (in the test suite)."""

    network = MODELS_DIR / "mnist_mlp.onnx"
    count, eps, domain, complete, timeout, min_verified = 100, 0.02, "auto", True, 60.0, 95


_MNIST = None if _SHARED is None else str(_SHARED / "data" / "mnist" / "mnist_test_first100.csv")
_CIFAR = None if _SHARED is None else str(_SHARED / "data" / "cifar10" / "cifar10_test_first100.csv")
_MNISTFC = None if _SHARED is None else _SHARED / "benchmarks" / "vnncomp2021" / "mnistfc"
_PROFIT_NETS = None if _SHARED is None else _SHARED / "networks" / "profit"


class Mnistfc256x2AlphaCrown(RobustnessExperiment):
    """VNN-COMP 2021's mnist-net_256x2, the first 100 MNIST test images, eps 0.02, alpha-CROWN."""

    network = None if _MNISTFC is None else _MNISTFC / "mnist-net_256x2.onnx"
    images, count, eps, domain, min_verified = _MNIST, 100, 0.02, "alpha-crown", 71


class Mnistfc256x6Complete(RobustnessExperiment):
    """mnist-net_256x6, the first 100 MNIST test images, eps 0.01, auto then branch and bound (60 s each)."""

    network = None if _MNISTFC is None else _MNISTFC / "mnist-net_256x6.onnx"
    images, count, eps, complete, timeout, min_verified = _MNIST, 100, 0.01, True, 60.0, 90


class Mnist01CrownEps01(RobustnessExperiment):
    """ProFIt's mnist_0.1 (trained for eps 0.1), the first 100 MNIST test images, eps 0.1, CROWN."""

    network = None if _PROFIT_NETS is None else _PROFIT_NETS / "mnist_0.1.onnx"
    images, count, eps, domain, min_verified = _MNIST, 100, 0.1, "crown", 61


class CifarConvSmallPgdAlphaCrown(RobustnessExperiment):
    """ERAN's convSmall (PGD) from ProFIt, the 100 CIFAR-10 images, eps 2/255, alpha-CROWN."""

    network = None if _PROFIT_NETS is None else _PROFIT_NETS / "convSmall_pgd_cifar.onnx"
    images, channels, count, eps, domain, min_verified = _CIFAR, 3, 100, 2 / 255, "alpha-crown", 34


EXPERIMENTS = (MlpAutoSmall, MlpCompleteSmall, Mnistfc256x2AlphaCrown, Mnistfc256x6Complete, Mnist01CrownEps01,
               CifarConvSmallPgdAlphaCrown)


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern: str | None) -> unittest.TestSuite:
    """Every experiment of this module, never the base class."""
    return experiments_suite(loader, EXPERIMENTS)
