"""Robustness specs in a user's own test suite (unittest or pytest).

    from profit.testing import assert_explanation_stable, assert_property, assert_robust

    def test_digit_is_robust():
        assert_robust("model.onnx", x, eps=0.02, label=7)         # AssertionError if not proven

    class MyModelSpec(ProfitTestCase):
        def test_spec(self):
            self.assertProperty("model.onnx", "prop.vnnlib", timeout=60)

An assertion passes only on a proof: `assert_robust` runs the same pipeline as `profit
verify` (attacks, then the domains cheapest first, then branch and bound with
`domain="auto"`) and passes when every image is verified; `assert_property` passes when the
VNN-LIB property is unsat (proven). Anything else fails, with a message that names the
image (or property), the verdict and the margin, and, when falsified, the file the
counterexample was saved to (`.npy`, in `save_dir`, default $PROFIT_TESTING_DIR or
./profit-counterexamples). Unknown and timeout fail too: an unproven property is not a
passing test. `assert_explanation_stable` passes when certified gradient bounds prove the
saliency map constant over the eps-ball (or its top-k pixels certified).
"""

from __future__ import annotations

import math
import os
import unittest
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from networks.ir import Network
from profit.data import fit_to_network, load_network
from profit.errors import ProfitError
from profit.outcomes import Verdict
from profit.verify import ImageResult, VerifyOptions, run_vnnlib, verify_images


class NotProvenError(AssertionError):
    """A robustness spec that was not proven (falsified, unknown or timed out)."""


def _network(net: Network | str | Path) -> Network:
    return net if isinstance(net, Network) else load_network(net)


def _save_dir(save_dir: str | Path | None) -> Path:
    return Path(save_dir if save_dir is not None else os.environ.get("PROFIT_TESTING_DIR", "profit-counterexamples"))


def _describe(result: ImageResult, name: str) -> str:
    margin = "" if result.margin is None else f", margin {result.margin:.4g}"
    return f"{name}: {result.verdict.value} (label {result.label}, predicted {result.predicted}{margin}, " \
           f"decided by {result.decided_by})"


def assert_robust(net: Network | str | Path, x: Tensor | np.ndarray, eps: float, label: int | Tensor | None = None,
                  domain: str = "auto", timeout: float | None = 60.0, name: str = "image",
                  save_dir: str | Path | None = None) -> list[ImageResult]:
    """Assert that every input within L-inf distance `eps` of x (one image, or a batch
    (B, *shape), pixels in [0, 1]) is classified as `label` (default: x's own prediction).

    domain: "auto" (attacks, box, CROWN, alpha-CROWN, then branch and bound) or one domain
    name (attacks, then that domain only); timeout: seconds per image. Returns the results;
    raises `NotProvenError` naming every image not verified (`name`, `name[i]` in a batch),
    its verdict and margin, and the saved counterexample of a falsified one.
    """
    network = _network(net)
    x = torch.as_tensor(x, dtype=torch.float32)
    single = x.numel() == math.prod(network.input_shape)
    batch = fit_to_network(x.reshape(1, *network.input_shape) if single else x, network, name)
    labels = None if label is None else torch.as_tensor(label, dtype=torch.long).reshape(-1)
    options = VerifyOptions(eps=eps, domain=domain, timeout=timeout, complete=domain == "auto")
    results = verify_images(network, batch, labels, options, progress=False)
    failures = []
    for i, result in enumerate(results):
        if result.verdict is Verdict.VERIFIED:
            continue
        label_i = name if single else f"{name}[{i}]"
        line = _describe(result, label_i)
        if result.counterexample is not None:
            path = _save_dir(save_dir) / f"{label_i.replace('/', '_')}-eps{eps:g}-counterexample.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, result.counterexample.numpy())
            line += f"; counterexample saved to {path}"
        failures.append(line)
    if failures:
        raise NotProvenError(f"not robust at eps {eps:g}: " + "; ".join(failures))
    return results


def assert_property(net: Network | str | Path, vnnlib_path: str | Path, timeout: float | None = 60.0,
                    save_dir: str | Path | None = None) -> None:
    """Assert that the VNN-LIB property holds (the verifier answers unsat: no counterexample
    exists). net: the ONNX file (or a Network loaded from one). Raises `NotProvenError`
    with the answer, and for sat the file the counterexample was saved to (VNN-COMP form)."""
    source = net.source if isinstance(net, Network) else net
    if not source:
        raise ProfitError("assert_property needs the network's ONNX file")
    outcome = run_vnnlib(source, vnnlib_path, timeout=timeout)
    if outcome.result == "unsat":
        return
    message = f"property {vnnlib_path} not proven: {outcome.result} ({outcome.decision.decided_by}, " \
              f"{outcome.seconds:.1f} s)"
    if outcome.result == "sat":
        path = _save_dir(save_dir) / f"{Path(vnnlib_path).name}.counterexample.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outcome.text())
        message += f"; counterexample saved to {path}"
    raise NotProvenError(message)


def assert_explanation_stable(net: Network | str | Path, x: Tensor | np.ndarray, eps: float, k: int | None = None,
                              target: int | Tensor | None = None, name: str = "image") -> None:
    """Assert that the saliency map (d f_target / dx, target default: x's prediction) of each
    image is stable over its L-inf eps-ball, as proven by `profit.attribution.gradient_bounds`:
    with k None, the map is the same at every point of the ball (every ReLU stable); with k,
    the k pixels of largest |gradient| at x are certified top-k everywhere in the ball.
    Raises `NotProvenError` naming each image, its unstable ReLUs and certified pixels."""
    from profit.attribution import Saliency, gradient_bounds

    network = _network(net)
    x = torch.as_tensor(x, dtype=torch.float32)
    single = x.numel() == math.prod(network.input_shape)
    batch = fit_to_network(x.reshape(1, *network.input_shape) if single else x, network, name)
    targets = None if target is None else torch.as_tensor(target, dtype=torch.long).reshape(-1)
    bounds = gradient_bounds(network, batch, eps, targets)
    saliency = Saliency(network).attribute(batch, target=bounds.target).flatten(1)  # |gradient| at x
    failures = []
    for i in range(len(batch)):
        label_i = name if single else f"{name}[{i}]"
        if k is None:
            if not bool(bounds.constant[i]):
                failures.append(f"{label_i}: {int(bounds.unstable[i])} ReLUs unstable, the map can change")
            continue
        certified = bounds.certified_topk(k)[i].flatten()
        top = saliency[i].topk(k).indices
        if not bool(certified[top].all()):
            failures.append(f"{label_i}: {int(certified[top].sum())} of its top-{k} pixels certified "
                            f"({int(bounds.unstable[i])} ReLUs unstable)")
    if failures:
        what = "saliency map not constant" if k is None else f"top-{k} saliency pixels not certified"
        raise NotProvenError(f"{what} at eps {eps:g}: " + "; ".join(failures))


class ProfitTestCase(unittest.TestCase):
    """A TestCase with the assertions of this module as assert* methods (failures are test
    failures, with the same messages)."""

    def assertRobust(self, net: Network | str | Path, x: Tensor | np.ndarray, eps: float,  # noqa: N802
                     label: int | Tensor | None = None, domain: str = "auto", timeout: float | None = 60.0,
                     name: str = "image", save_dir: str | Path | None = None) -> list[ImageResult]:
        try:
            return assert_robust(net, x, eps, label, domain, timeout, name, save_dir)
        except NotProvenError as exc:
            raise self.failureException(str(exc)) from None

    def assertProperty(self, net: Network | str | Path, vnnlib_path: str | Path,  # noqa: N802
                       timeout: float | None = 60.0, save_dir: str | Path | None = None) -> None:
        try:
            assert_property(net, vnnlib_path, timeout, save_dir)
        except NotProvenError as exc:
            raise self.failureException(str(exc)) from None

    def assertExplanationStable(self, net: Network | str | Path, x: Tensor | np.ndarray, eps: float,  # noqa: N802
                                k: int | None = None, target: int | Tensor | None = None,
                                name: str = "image") -> None:
        try:
            assert_explanation_stable(net, x, eps, k, target, name)
        except NotProvenError as exc:
            raise self.failureException(str(exc)) from None


__all__ = ["NotProvenError", "ProfitTestCase", "assert_explanation_stable", "assert_property", "assert_robust"]
