"""CEM (profit.cem): feasible sets, success re-checked by onnxruntime, determinism, the exact
l1 prox, gradient estimators against autograd, black-box use, the generator's savepoints and
checks, and the certified variants against sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from networks import MODELS_DIR, load_onnx
from networks.datasets import load_samples
from profit.attacks import onnx_outputs
from profit.cem import (
    FISTA, CEMLoss, CEMOptions, CEMResult, ExplanationGenerator, FiniteDifferenceGradient, ProjectedAdam,
    RandomDirectionGradient, RuntimeModel, TorchGradient, cem, certify_pn, certify_pp,
)
from profit.cem.components import shrink
from profit.errors import ProfitError

ONNX = MODELS_DIR / "mnist_mlp.onnx"
FAST = CEMOptions(max_iter=80, c_steps=2)


@pytest.fixture(scope="module")
def net():
    return load_onnx(ONNX)


@pytest.fixture(scope="module")
def x(net):
    images, _ = load_samples()
    return torch.as_tensor(images[:3]).reshape(3, *net.input_shape).double()


@pytest.fixture(scope="module")
def results(net, x):
    return {mode: cem(net, x, CEMOptions(mode=mode, max_iter=80, c_steps=2)) for mode in ("PN", "PP")}


def test_feasible_sets(results, x) -> None:
    pn, pp = results["PN"].explanation, results["PP"].explanation
    assert bool((pn >= x - 1e-12).all()) and bool((pn <= 1).all()), "a PN only adds"
    assert bool((pp >= 0).all()) and bool((pp <= x + 1e-12).all()), "a PP only removes"


def test_success_holds_in_onnxruntime(results, net) -> None:
    for mode, result in results.items():
        assert bool(result.found.any()), mode
        classes = onnx_outputs(ONNX, net, result.explanation.float()).argmax(1)
        kept = classes == result.target
        expected = ~kept if mode == "PN" else kept
        assert bool(expected[result.found].all()), (mode, classes, result.target)


def test_deterministic(net, x) -> None:
    a = cem(net, x[:1], FAST, gradient=RandomDirectionGradient(q=10, seed=3))
    b = cem(net, x[:1], FAST, gradient=RandomDirectionGradient(q=10, seed=3))
    assert torch.equal(a.explanation, b.explanation) and torch.equal(a.distance, b.distance)


def test_batch_equals_single_runs(net, x, results) -> None:
    single = cem(net, x[1:2], CEMOptions(mode="PN", max_iter=80, c_steps=2))
    assert torch.allclose(single.explanation[0], results["PN"].explanation[1], atol=1e-6)


def test_shrinkage_is_the_exact_prox() -> None:
    """clamp(shrink(z, t), lo, hi) minimises t|d| + (d - z)^2 / 2 over [lo, hi] (lo <= 0 <= hi)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, generator=g, dtype=torch.float64) * 2
    t = torch.rand(200, generator=g, dtype=torch.float64)
    lo, hi = -torch.rand(200, generator=g, dtype=torch.float64), torch.rand(200, generator=g, dtype=torch.float64)
    grid = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, 20001, dtype=torch.float64)
    objective = t[:, None] * grid.abs() + (grid - z[:, None]) ** 2 / 2
    brute = grid.gather(1, objective.argmin(1, keepdim=True)).squeeze(1)
    assert torch.allclose(torch.clamp(shrink(z, t), lo, hi), brute, atol=1e-4)


def test_gradient_estimators_agree_with_autograd(net, x) -> None:
    loss = CEMLoss(x[:1], net(x[:1].float()).argmax(1), "PN", c=1.0)
    d = torch.full_like(x[:1], 0.05)
    exact = TorchGradient()(loss, net, d)
    fd = FiniteDifferenceGradient(h=1e-2)(loss, net, d)  # the model runs in float32: h not too small
    error = (fd - exact.double()).abs().reshape(-1)
    assert float(error.median()) < 1e-3 and float((error < 5e-3).double().mean()) > 0.95, error.max()
    rd = RandomDirectionGradient(q=200, mu=1e-4, seed=0)(loss, net, d).reshape(-1)
    cos = float(rd @ exact.reshape(-1).double() / (rd.norm() * exact.norm()))
    assert cos > 0.3, cos


def test_black_box_model(net, x) -> None:
    model = RuntimeModel(ONNX, net)
    with pytest.raises(ProfitError, match="white-box"):
        cem(model, x[:1], FAST)
    result = cem(model, x[:1], CEMOptions(max_iter=40, c_steps=2), gradient=FiniteDifferenceGradient(h=1e-3))
    assert bool(result.found[0]) and int(result.predicted[0]) != int(result.target[0])


def test_generator_savepoints_and_checks(net, x) -> None:
    generator = ExplanationGenerator(loss=CEMLoss, optimizer=ProjectedAdam, gradient=TorchGradient,
                                     loss_kwargs={"mode": "PN", "c": 5.0}, num_iter=25, save_freq=10)
    savepoints, meta = generator.run(x[0].numpy(), net)
    assert list(savepoints) == [1, 10, 20, 25]
    assert all(v.shape == tuple(net.input_shape) for v in savepoints.values())
    assert meta["target"] == int(net(x[:1].float()).argmax())
    with pytest.raises(ProfitError, match="optimizer must be"):
        ExplanationGenerator(optimizer=TorchGradient)
    with pytest.raises(ProfitError, match="gamma > 0 needs an autoencoder"):
        ExplanationGenerator(loss_kwargs={"gamma": 1.0}).run(x[0].numpy(), net)


def test_certified_pp_box_keeps_the_class(net, x) -> None:
    """Starting from the whole image as PP (the box is a point: proven), shrinking drops pixels
    while the proof holds; points sampled in the final box all keep the class."""
    x = x[:1]
    target = net(x.float()).argmax(1)
    start = CEMResult(x, target, x.clone(), torch.ones(1, dtype=torch.bool), torch.zeros(1), target, torch.ones(1), "PP")
    certified = certify_pp(net, start)
    g = torch.Generator().manual_seed(0)
    for b, c in enumerate(certified):
        assert c.status == "certified" and c.removed > 0
        lo, hi = torch.minimum(c.pp, x[b]), torch.maximum(c.pp, x[b])
        u = torch.rand(2000, *x[b].shape, generator=g, dtype=torch.float64)
        points = torch.cat([lo + u * (hi - lo), torch.where(u > 0.5, hi, lo)])
        classes = net.to(torch.float64)(points).reshape(len(points), -1).argmax(1)
        assert bool((classes == target[b]).all())


def test_certified_pn_radius_holds(net, results) -> None:
    result = results["PN"]
    for b, c in enumerate(certify_pn(net, result, ONNX)):
        assert c.flipped == (bool(result.found[b]) and c.runtime_class != int(result.target[b]))
        if c.proven_eps > 0:
            centre = result.explanation[b]
            g = torch.Generator().manual_seed(b)
            u = torch.rand(1000, *centre.shape, generator=g, dtype=torch.float64) * 2 - 1
            points = (centre + c.proven_eps * u).clamp(0, 1)
            classes = net.to(torch.float64)(points).reshape(len(points), -1).argmax(1)
            assert bool((classes == c.runtime_class).all())


def test_bad_options(net, x) -> None:
    with pytest.raises(ProfitError, match="PN or PP"):
        cem(net, x[:1], CEMOptions(mode="XX"))
    with pytest.raises(ProfitError, match="learning rate"):
        FISTA(lr=0)
    assert np.isfinite(float(cem(net, x[:1], CEMOptions(max_iter=5, c_steps=1)).c[0]))


def test_cli(tmp_path, capsys) -> None:
    from profit.cli import main

    assert main(["cem", "-d", "0", "--mode", "pp", "--iterations", "30", "--c-steps", "2", "--certify",
                 "--save-dir", str(tmp_path), "--json", str(tmp_path / "cem.json")]) == 0
    import json

    row = json.loads((tmp_path / "cem.json").read_text())["images"][0]
    assert row["found"] and row["predicted"] == row["target"] == 7 and row["l0"] > 0
    out = capsys.readouterr().out
    assert "image 0: class 7 -> 7, found" in out and ("certified" in out or "empirical" in out)
    assert (tmp_path / "cem-pp-0.png").is_file()
    assert main(["cem", "-d", "100000"]) == 2
    assert "out of range" in capsys.readouterr().err


class _Lasso(CEMLoss):
    """min ||A d - b||^2 / 2 + beta ||d||_1 over a box, as a CEM loss on the network d -> A d."""

    def __init__(self, b: torch.Tensor, beta: float, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.b, self.l1, self.lo, self.hi = b, beta, lo, hi

    def inputs(self, d):
        return d

    def box(self):
        return self.lo, self.hi

    def value(self, d, logits):
        return ((logits.double() - self.b) ** 2).sum(1) / 2

    def success(self, logits):
        return torch.ones(len(logits), dtype=torch.bool)

    def distance(self, d):
        return self.value(d, self.A(d)) + self.l1 * d.abs().sum(1)


def test_lasso_toy_matches_cvxpy() -> None:
    """FISTA (constant step 1/L) reaches cvxpy's LASSO optimum over a box to 1e-4."""
    import cvxpy as cp

    from profit.cem.generator import optimise
    from tests.domains.netgen import build
    from networks.ir import Linear

    g = torch.Generator().manual_seed(0)
    A = torch.randn(8, 5, generator=g).double()  # float32 values: the IR network holds A exactly
    b = torch.randn(1, 8, generator=g, dtype=torch.float64)
    lo, hi = torch.full((1, 5), -0.3, dtype=torch.float64), torch.full((1, 5), 1.0, dtype=torch.float64)
    net = build((5,), [("y", Linear(A.float(), torch.zeros(8)), ("x",))]).to(torch.float64)
    loss = _Lasso(b, 0.5, lo, hi)
    loss.A = net
    optimizer, tol = FISTA(lr=1.0 / float(torch.linalg.matrix_norm(A, 2) ** 2), decay=0.0), 1e-4
    best, _, _, _ = optimise(loss, optimizer, TorchGradient(), net, 4000)
    d = cp.Variable(5)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(A.numpy() @ d - b.numpy()[0]) / 2 + 0.5 * cp.norm1(d)),
                         [d >= lo.numpy()[0], d <= hi.numpy()[0]])
    problem.solve()
    assert float(loss.distance(best)[0]) <= problem.value + tol
    assert np.allclose(best[0].numpy(), d.value, atol=10 * tol)

