"""Contrastive-explanation (CEM) experiments as unittest specs.

    python -m unittest specs.suites.cem                     # every suite below
    python -m unittest specs.suites.cem.MlpPnKappa2         # one of them

Each TestCase is one experiment (network, images, mode, kappa, beta, iterations).
`setUpClass` runs `profit.cem.cem` on the images, certifies the results
(`certify_pn` / `certify_pp`) and writes `<results>/<ClassName>.csv` (idx, target,
predicted, found, distance, c, status; overwritten). The tests assert:

- feasibility: a PN only adds to the image, a PP only removes from it (no-info value 0);
- every found explanation holds in onnxruntime (a PN flips the class, a PP keeps it);
- at least `min_found` explanations found and `min_certified` certified (PN: new class proven
  on an eps-ball; PP: the class proven on the box between the PP and the image), the figures
  measured when the suite was written;
- every certified PP's box keeps the class on 500 sampled points (float64).
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
from profit.attacks import onnx_outputs
from profit.cem import CEMOptions, CEMResult, cem, certify_pn, certify_pp
from specs.suites import experiments_suite, results_dir


class CemExperiment(unittest.TestCase):
    """Base class: subclasses set the class attributes; this class itself runs nothing."""

    network: ClassVar[Path] = MODELS_DIR / "mnist_mlp.onnx"
    count: ClassVar[int] = 5
    options: ClassVar[CEMOptions] = CEMOptions()
    min_found: ClassVar[int] = 0
    min_certified: ClassVar[int] = 0
    net: ClassVar[Network]
    result: ClassVar[CEMResult]
    certified: ClassVar[list[bool]]
    boxes: ClassVar[list[tuple[torch.Tensor, torch.Tensor] | None]]

    @classmethod
    def setUpClass(cls) -> None:
        if cls is CemExperiment:
            raise unittest.SkipTest("base class")
        cls.net = load_onnx(cls.network)
        images, _ = load_samples()
        x = torch.as_tensor(images[:cls.count]).reshape(cls.count, *cls.net.input_shape).double()
        cls.result = cem(cls.net, x, cls.options)
        if cls.options.mode == "PN":
            facts = certify_pn(cls.net, cls.result, cls.network)
            cls.certified = [f.proven_eps > 0 for f in facts]
            status = [f"proven eps {f.proven_eps:.3g}" if f.proven_eps > 0 else "flipped" if f.flipped else "-"
                      for f in facts]
            cls.boxes = [None] * cls.count
        else:
            facts = certify_pp(cls.net, cls.result)
            cls.certified = [f.status == "certified" for f in facts]
            status = [f"{f.status}, {len(f.pixels)} pixels" for f in facts]
            cls.boxes = [(torch.minimum(f.pp, x[b]), torch.maximum(f.pp, x[b])) if f.status == "certified" else None
                         for b, f in enumerate(facts)]
        path = results_dir() / f"{cls.__name__}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        r = cls.result
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("idx", "target", "predicted", "found", "distance", "c", "status"))
            for b in range(cls.count):
                writer.writerow((b, int(r.target[b]), int(r.predicted[b]), bool(r.found[b]),
                                 f"{float(r.distance[b]):.6g}", f"{float(r.c[b]):.4g}", status[b]))

    def test_feasible(self) -> None:
        r = self.result
        if r.mode == "PN":
            self.assertTrue(bool((r.explanation >= r.x0 - 1e-12).all() and (r.explanation <= 1).all()))
        else:
            self.assertTrue(bool((r.explanation >= 0).all() and (r.explanation <= r.x0 + 1e-12).all()))

    def test_found_explanations_hold_in_onnxruntime(self) -> None:
        r = self.result
        classes = onnx_outputs(self.network, self.net, r.explanation.float()).argmax(1)
        kept = classes == r.target
        holds = ~kept if r.mode == "PN" else kept
        self.assertTrue(bool(holds[r.found].all()), f"onnxruntime classes {classes.tolist()}")

    def test_counts(self) -> None:
        self.assertGreaterEqual(int(self.result.found.sum()), self.min_found)
        self.assertGreaterEqual(sum(self.certified), self.min_certified)

    def test_certified_boxes_keep_the_class(self) -> None:
        g = torch.Generator().manual_seed(0)
        net64 = self.net.to(torch.float64)
        for b, box in enumerate(self.boxes):
            if box is None:
                continue
            lo, hi = box
            points = lo + torch.rand(500, *lo.shape, generator=g, dtype=torch.float64) * (hi - lo)
            classes = net64(points).reshape(500, -1).argmax(1)
            self.assertTrue(bool((classes == self.result.target[b]).all()), f"image {b}")

    def test_results_file(self) -> None:
        lines = (results_dir() / f"{type(self).__name__}.csv").read_text().splitlines()
        self.assertEqual(len(lines), 1 + self.count)


class MlpPnKappa2(CemExperiment):
    """The shipped MLP, 5 shipped samples, pertinent negatives with kappa 2 (runs in the test suite)."""

    options = CEMOptions(mode="PN", kappa=2.0, max_iter=150, c_steps=3)
    min_found, min_certified = 5, 5


class MlpPp(CemExperiment):
    """The shipped MLP, 20 shipped samples, pertinent positives (kappa 0)."""

    count, options = 20, CEMOptions(mode="PP", max_iter=300, c_steps=5)
    min_found = 20


EXPERIMENTS = (MlpPnKappa2, MlpPp)


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern: str | None) -> unittest.TestSuite:
    """Every experiment of this module, never the base class."""
    return experiments_suite(loader, EXPERIMENTS)
