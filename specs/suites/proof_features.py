"""Proof-feature experiments (issue 6, after ProFIt, ICLR 2024) as unittest specs.

    python -m unittest specs.suites.proof_features                        # every suite below
    python -m unittest specs.suites.proof_features.MnistConvCrownSmall     # one of them

Each TestCase is one experiment (network, images, eps, domain, priority). `setUpClass` proves
every image, prunes each proof to a small sufficient set and evaluates top-k sufficiency, then
writes `<results>/<ClassName>.csv` (one row per image, overwritten; `<results>` is
$PROFIT_RESULTS or ./results). The tests assert what must hold:

- every kept set re-verifies: a fresh run of the domain on the literal pruned network (features
  outside the set replaced by 0) proves the property;
- kept sets are made of non-zero-priority features, and the greedy set is inside the suffix set;
- the ProFIt-priority top-k curve dominates the random one on average over k.

`MnistConvCrownSmall` uses only what the project ships and runs inside the test suite
(tests/specs/test_suites.py); the others need ../shared and are skipped without it. Runtimes are
listed in specs/suites/README.md.
"""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import ClassVar

import torch

from domains import get_domain
from networks import MODELS_DIR, Network, load_onnx
from networks.datasets import shared_dir
from profit.features import (
    FeatureRun, FeatureRunOptions, PruneOptions, masked_network, resolve_layer, run_features, write_csv,
)
from profit.data import fit_to_network, load_images
from specs.properties import robustness
from specs.regions import linf_ball
from specs.suites import experiments_suite, results_dir

_SHARED = shared_dir()


class FeatureExperiment(unittest.TestCase):
    """Base class: subclasses set the class attributes; this class itself runs nothing."""

    network: ClassVar[Path | None] = None  # ONNX file
    images: ClassVar[str | None] = None  # image source for profit.data.load_images (None: shipped samples)
    channels: ClassVar[int] = 1
    count: ClassVar[int] = 10
    eps: ClassVar[float] = 0.02
    domain: ClassVar[str] = "crown"
    priority: ClassVar[str] = "profit"
    layer: ClassVar[int | str] = -1
    result: ClassVar[FeatureRun]
    net: ClassVar[Network]
    x: ClassVar[torch.Tensor]
    labels: ClassVar[torch.Tensor]

    @classmethod
    def setUpClass(cls) -> None:
        if cls is FeatureExperiment:
            raise unittest.SkipTest("base class")
        if cls.network is None or not Path(cls.network).is_file():
            raise unittest.SkipTest(f"network {cls.network} not found")
        if cls.images is not None and not Path(cls.images).exists():
            raise unittest.SkipTest(f"images {cls.images} not found")
        cls.net = load_onnx(cls.network)
        data = load_images(cls.images, count=cls.count, channels=cls.channels)
        cls.x, cls.labels = fit_to_network(data.images, cls.net, data.source), data.labels
        options = FeatureRunOptions(eps=cls.eps, domain=cls.domain, layer=cls.layer, topk=20,
                                    prune=PruneOptions(priority=cls.priority))
        cls.result = run_features(cls.net, cls.x, cls.labels, options, indices=data.indices)
        write_csv(results_dir() / f"{cls.__name__}.csv", cls.result.rows)

    def test_kept_sets_reverify(self) -> None:
        """A fresh domain run on each literally pruned network proves the property."""
        node = resolve_layer(self.net, self.layer)
        spec = robustness(self.labels, self.net.n_outputs)
        for p in self.result.pruned:
            if not p.proven:
                continue
            keep = torch.zeros(p.width, dtype=torch.bool)
            keep[p.kept_greedy] = True
            pruned_net = masked_network(self.net, node, keep)
            i = p.index
            result = get_domain(self.domain)(pruned_net).bound(linf_ball(self.x[i:i + 1], self.eps), spec[i])
            self.assertTrue(bool(result.proven[0]), f"image {i}: kept set {p.kept_greedy.tolist()} does not re-verify")

    def test_kept_within_nonzero_and_suffix(self) -> None:
        for p in self.result.pruned:
            if not p.proven:
                continue
            self.assertLessEqual(len(p.kept_greedy), p.nonzero)
            self.assertTrue(set(p.kept_greedy.tolist()) <= set(p.kept_suffix.tolist()))
            self.assertEqual(len(set(p.kept_greedy.tolist())), len(p.kept_greedy))

    def test_profit_topk_dominates_random(self) -> None:
        if self.result.summary.proven == 0:
            self.skipTest("no image proven")
        success = self.result.topk.success()
        profit, random = self.result.topk.priorities.index("profit"), self.result.topk.priorities.index("random")
        self.assertGreaterEqual(float(success[profit].mean()), float(success[random].mean()))

    def test_results_file(self) -> None:
        lines = (results_dir() / f"{type(self).__name__}.csv").read_text().splitlines()
        self.assertEqual(len(lines), 1 + len(self.result.pruned))
        self.assertTrue(lines[0].startswith("idx,label,proven,width,nonzero,kept_suffix,kept_greedy,kept_indices"))


class MnistConvCrownSmall(FeatureExperiment):
    """The shipped mnist_conv, 8 shipped samples, eps 0.02, CROWN (runs in the test suite)."""

    network = MODELS_DIR / "mnist_conv.onnx"
    count = 8


_MNIST = None if _SHARED is None else str(_SHARED / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
_CIFAR = None if _SHARED is None else str(_SHARED / "data" / "cifar10" / "cifar10_test_first100.csv")
_PROFIT_NETS = None if _SHARED is None else _SHARED / "networks" / "profit"


class Mnist01CrownEps002(FeatureExperiment):
    """ProFIt's mnist_0.1 (COLT), first 500 MNIST test images, eps 0.02, CROWN."""

    network = None if _PROFIT_NETS is None else _PROFIT_NETS / "mnist_0.1.onnx"
    images, count, eps, domain = _MNIST, 500, 0.02, "crown"


class Mnist01CrownEps01(Mnist01CrownEps002):
    """As Mnist01CrownEps002 at eps 0.1."""

    eps = 0.1


class Mnist01DeepzEps01(Mnist01CrownEps002):
    """ProFIt's mnist_0.1, first 500 MNIST test images, eps 0.1, DeepZ."""

    eps, domain = 0.1, "deepz"


class MnistConvIbpCrownEps01(FeatureExperiment):
    """The project's IBP-trained mnist_conv_ibp, first 500 MNIST test images, eps 0.1, CROWN."""

    network = MODELS_DIR / "mnist_conv_ibp.onnx"
    images, count, eps, domain = _MNIST, 500, 0.1, "crown"


class CifarConvSmallPgdCrown(FeatureExperiment):
    """ERAN's convSmall (PGD) from ProFIt, the 100 CIFAR-10 images, eps 2/255, CROWN."""

    network = None if _PROFIT_NETS is None else _PROFIT_NETS / "convSmall_pgd_cifar.onnx"
    images, channels, count, eps, domain = _CIFAR, 3, 100, 2 / 255, "crown"


EXPERIMENTS = (MnistConvCrownSmall, Mnist01CrownEps002, Mnist01CrownEps01, Mnist01DeepzEps01, MnistConvIbpCrownEps01,
               CifarConvSmallPgdCrown)


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern: str | None) -> unittest.TestSuite:
    """Every experiment of this module, never the base class."""
    return experiments_suite(loader, EXPERIMENTS)
