"""Certified-gradient (explanation stability) experiments as unittest specs.

    python -m unittest specs.suites.attribution                     # every suite below
    python -m unittest specs.suites.attribution.MlpEps1e4           # one of them

Each TestCase is one experiment (network, images, eps). `setUpClass` bounds the input
gradient of each image's predicted logit over its L-inf eps-ball
(`profit.attribution.gradient_bounds`) and writes `<results>/<ClassName>.csv` (idx, target,
unstable ReLUs, constant map, certified top-10 pixels; overwritten). The tests assert:

- soundness: the gradient at 200 sampled points of each ball lies inside the bounds;
- a constant map is the saliency at the centre everywhere (lower == upper == gradient at x);
- at least `min_constant` maps certified constant, the figure measured when written.
"""

from __future__ import annotations

import csv
import unittest
from pathlib import Path
from typing import ClassVar

import torch

from networks import MODELS_DIR, load_onnx
from networks.datasets import load_samples
from networks.ir import Network
from profit.attribution import GradientBounds, gradient, gradient_bounds
from specs.suites import experiments_suite, results_dir


class AttributionExperiment(unittest.TestCase):
    """Base class: subclasses set the class attributes; this class itself runs nothing."""

    network: ClassVar[Path] = MODELS_DIR / "mnist_mlp.onnx"
    count: ClassVar[int] = 20
    eps: ClassVar[float] = 1e-4
    min_constant: ClassVar[int] = 0
    net: ClassVar[Network]
    x: ClassVar[torch.Tensor]
    bounds: ClassVar[GradientBounds]

    @classmethod
    def setUpClass(cls) -> None:
        if cls is AttributionExperiment:
            raise unittest.SkipTest("base class")
        cls.net = load_onnx(cls.network)
        images, _ = load_samples()
        cls.x = torch.as_tensor(images[:cls.count]).reshape(cls.count, *cls.net.input_shape)
        cls.bounds = gradient_bounds(cls.net, cls.x, cls.eps)
        top = cls.bounds.certified_topk(10).flatten(1).sum(1)
        path = results_dir() / f"{cls.__name__}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("idx", "target", "unstable", "constant", "certified_top10"))
            for i in range(cls.count):
                writer.writerow((i, int(cls.bounds.target[i]), int(cls.bounds.unstable[i]),
                                 bool(cls.bounds.constant[i]), int(top[i])))

    def _gradient(self, points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        net64 = self.net.to(torch.float64)
        return gradient(net64, points.double(), target)

    def test_sampled_gradients_inside_bounds(self) -> None:
        g = torch.Generator().manual_seed(0)
        for i in range(self.count):
            u = torch.rand(200, *self.x[i].shape, generator=g, dtype=torch.float64) * 2 - 1
            points = (self.x[i].double() + self.eps * u).clamp(0, 1)
            grads = self._gradient(points, self.bounds.target[i].expand(200))
            lo, hi = self.bounds.lower[i], self.bounds.upper[i]
            tol = 1e-6 * (1 + grads.abs())
            self.assertTrue(bool(((grads >= lo - tol) & (grads <= hi + tol)).all()), f"image {i}")

    def test_constant_maps_equal_the_centre_gradient(self) -> None:
        rows = self.bounds.constant.nonzero().flatten()
        if len(rows) == 0:
            self.skipTest("no constant map")
        centre = self._gradient(self.x[rows], self.bounds.target[rows])
        self.assertTrue(torch.allclose(self.bounds.lower[rows], centre, atol=1e-6))
        self.assertTrue(torch.allclose(self.bounds.upper[rows], centre, atol=1e-6))

    def test_min_constant(self) -> None:
        self.assertGreaterEqual(int(self.bounds.constant.sum()), self.min_constant)

    def test_results_file(self) -> None:
        lines = (results_dir() / f"{type(self).__name__}.csv").read_text().splitlines()
        self.assertEqual(len(lines), 1 + self.count)


class MlpEps1e4(AttributionExperiment):
    """The shipped MLP, 20 shipped samples, eps 1e-4 (runs in the test suite)."""

    min_constant = 14


class ConvEps1e4(AttributionExperiment):
    """The shipped conv net, the 100 shipped samples, eps 1e-4."""

    network, count, min_constant = MODELS_DIR / "mnist_conv.onnx", 100, 44


EXPERIMENTS = (MlpEps1e4, ConvEps1e4)


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern: str | None) -> unittest.TestSuite:
    """Every experiment of this module, never the base class."""
    return experiments_suite(loader, EXPERIMENTS)
