"""Certified gradient bounds: soundness by sampling and by PGD on the gradient components, exact
numbers on a hand-sized net, the constant-map and certified top-k certificates."""

from __future__ import annotations

import pytest
import torch

from networks.ir import Linear, MaxPool, Relu, UnsupportedOpError
from profit.attribution import GradientBounds, Saliency, beta_smoothed_network, gradient, gradient_bounds
from specs.regions import linf_ball
from tests.domains.netgen import build
from tests.profit.attribution.helpers import random_conv, random_mlp, samples, shipped_net

TOL = 1e-5


def _ball_points(x: torch.Tensor, eps: float, n: int, seed: int) -> torch.Tensor:
    """n points of the clipped ball around x (1, ...): half uniform, half random vertices."""
    box = linf_ball(x, eps)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((n, *x.shape[1:]), generator=g)
    u[n // 2:] = (u[n // 2:] > 0.5).float()
    return box.lower + (box.upper - box.lower) * u


def _pgd_extremes(net, x: torch.Tensor, eps: float, target: int, components: torch.Tensor,
                  steps: int = 30) -> torch.Tensor:
    """Points of the ball found by signed-gradient ascent on +- d f_t / dx_c of the softplus-smoothed
    net (a ReLU net's gradient is piecewise constant, so its own second derivative is 0): one point
    per component and sign, (2 K, ...)."""
    box = linf_ball(x, eps)
    k = len(components)
    signs = torch.cat([torch.ones(k), -torch.ones(k)])
    comps = components.repeat(2)
    z = x.repeat(2 * k, *(1,) * (x.dim() - 1)).clone()
    t = torch.full((2 * k,), target)
    for step in range(steps):
        smooth = beta_smoothed_network(net, 2.0 * 1.2 ** step)
        z.requires_grad_(True)
        with torch.enable_grad():
            out = smooth.logits(z).gather(1, t.view(-1, 1)).sum()
            (g,) = torch.autograd.grad(out, z, create_graph=True)
            objective = (signs * g.flatten(1).gather(1, comps.view(-1, 1)).squeeze(1)).sum()
            (ascent,) = torch.autograd.grad(objective, z)
        z = torch.minimum(torch.maximum(z.detach() + eps / 4 * ascent.sign(), box.lower), box.upper)
    return z


def _assert_inside(bounds: GradientBounds, grads: torch.Tensor, b: int = 0) -> None:
    lo, hi = bounds.lower[b].float(), bounds.upper[b].float()
    assert (grads >= lo - TOL * (1 + grads.abs())).all(), float((lo - grads).max())
    assert (grads <= hi + TOL * (1 + grads.abs())).all(), float((grads - hi).max())


CASES = {  # id -> (network, input shape source, eps)
    "mnist_mlp": (lambda: shipped_net("mnist_mlp"), 0.01),
    "mnist_conv": (lambda: shipped_net("mnist_conv"), 0.005),
    "mlp": (lambda: random_mlp(4), 0.1),
    "mlp-deep": (lambda: random_mlp(5, (4, 8, 8, 8, 3)), 0.2),
    "conv": (lambda: random_conv(6), 0.05),
}


@pytest.mark.parametrize("case", CASES)
def test_sampled_and_pgd_gradients_lie_within_the_bounds(case: str) -> None:
    make, eps = CASES[case]
    net = make()
    x = samples(1) if net.input_shape == (1, 28, 28) else torch.rand((1, *net.input_shape),
                                                                      generator=torch.Generator().manual_seed(1))
    bounds = gradient_bounds(net, x, eps)
    t = int(bounds.target)
    assert bounds.unstable.item() > 0 and (bounds.lower <= bounds.upper).all()
    points = _ball_points(x, eps, 500, seed=2)
    grads = gradient(net, points, torch.full((500,), t))
    _assert_inside(bounds, grads)
    width = (bounds.upper - bounds.lower).flatten()
    components = width.argsort(descending=True)[:8]
    extremes = _pgd_extremes(net, x, eps, t, components)
    pgd_grads = gradient(net, extremes, torch.full((len(extremes),), t))
    _assert_inside(bounds, pgd_grads)
    assert (pgd_grads.flatten(1) - grads[:1].flatten(1)).abs().max() > 0  # PGD moved the gradient
    for domain in ("deeppoly", "box"):
        other = gradient_bounds(net, x, eps, t, domain=domain)
        _assert_inside(other, grads)
        if domain == "box":  # looser pre-activation bounds: never a tighter gradient interval here
            assert (other.upper - other.lower).sum() >= (bounds.upper - bounds.lower).sum() - 1e-9


def test_hand_sized_example() -> None:
    """f = h1 - 2 h2, h1 = relu(x1 + x2), h2 = relu(x1 - x2) on x = (1, 0) +- 0.5: h1's input lies
    in [0, 2] (derivative open at 0), h2's in [0, 2] too; with x = (1, 0.2) +- 0.1 both stable."""
    net = build((2,), [("fc1", Linear(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.zeros(2)), ("x",)),
                       ("r", Relu(), ("fc1",)),
                       ("fc2", Linear(torch.tensor([[1.0, -2.0]]), torch.zeros(1)), ("r",))])
    wide = gradient_bounds(net, torch.tensor([[1.0, 0.0]]), 0.5, 0, lo=None, hi=None, domain="box")
    # grad = d1 (1, 1) - 2 d2 (1, -1), d1, d2 in [0, 1]
    torch.testing.assert_close(wide.lower, torch.tensor([[-2.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(wide.upper, torch.tensor([[1.0, 3.0]], dtype=torch.float64))
    assert wide.unstable.item() == 2 and not wide.constant.item()
    tight = gradient_bounds(net, torch.tensor([[1.0, 0.2]]), 0.1, 0, lo=None, hi=None)
    assert tight.constant.item()
    torch.testing.assert_close(tight.lower, torch.tensor([[-1.0, 3.0]], dtype=torch.float64))
    torch.testing.assert_close(tight.upper, tight.lower)


def test_constant_map_and_certified_topk() -> None:
    net, x = shipped_net("mnist_mlp"), samples(3)
    bounds = gradient_bounds(net, x, 1e-5)
    assert bounds.constant.all()
    grad = Saliency(net).attribute(x, abs=False).double()
    torch.testing.assert_close(bounds.lower, grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bounds.upper, bounds.lower)
    top = bounds.certified_topk(5)
    assert top.flatten(1).sum(1).tolist() == [5, 5, 5]
    expected = torch.zeros_like(top.flatten(1)).scatter(1, grad.abs().flatten(1).topk(5, dim=1).indices, True)
    assert torch.equal(top.flatten(1), expected)
    wide = gradient_bounds(net, x[:1], 0.02)
    certified = wide.certified_topk(20)[0].flatten()
    assert certified.sum() < 20
    points = _ball_points(x[:1], 0.02, 200, seed=5)
    grads = gradient(net, points, wide.target.expand(200)).abs().flatten(1)
    tops = torch.zeros_like(grads, dtype=torch.bool).scatter(1, grads.topk(20, dim=1).indices, True)
    assert tops[:, certified].all()


def test_activation_on_the_input_uses_the_region() -> None:
    net = build((2,), [("r", Relu(), ("x",)), ("fc", Linear(torch.tensor([[2.0, -1.0]]), torch.zeros(1)), ("r",))])
    bounds = gradient_bounds(net, torch.tensor([[0.5, 0.05]]), 0.1, 0)  # x1 in [0.4, 0.6], x2 in [0, 0.15]
    torch.testing.assert_close(bounds.lower, torch.tensor([[2.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(bounds.upper, torch.tensor([[2.0, 0.0]], dtype=torch.float64))


def test_unsupported_ops_are_named() -> None:
    net = build((1, 4, 4), [("m", MaxPool((2, 2), (2, 2)), ("x",))])
    with pytest.raises(UnsupportedOpError, match="MaxPool"):
        gradient_bounds(net, torch.rand(1, 1, 4, 4), 0.1, 0)


@pytest.mark.parametrize("case", ["mnist_mlp", "conv"])
def test_softplus_gradient_bounds_are_sound(case: str) -> None:
    """Sampled gradients of beta-smoothed nets lie within the bounds (how their width moves with beta
    is measured by benchmarks/attribution.py: it depends on the pre-activation bounds, no theorem)."""
    make, eps = CASES[case]
    relu_net = make()
    x = samples(1) if relu_net.input_shape == (1, 28, 28) else torch.rand((1, *relu_net.input_shape),
                                                                           generator=torch.Generator().manual_seed(1))
    t = int(relu_net.logits(x).argmax(1))
    for beta in (1.0, 10.0, 100.0):
        net = beta_smoothed_network(relu_net, beta)
        bounds = gradient_bounds(net, x, eps, t)
        points = _ball_points(x, eps, 500, seed=3)
        _assert_inside(bounds, gradient(net, points, torch.full((500,), t)))
        assert bounds.unstable.item() > 0 and (bounds.upper - bounds.lower).max() > 0
