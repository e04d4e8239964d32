"""beta-smoothing: the IR transform, the smoothed maps approaching the ReLU ones as beta grows, and
the domains on a Softplus node (Box bounds it soundly, the others reject it by name)."""

from __future__ import annotations

import pytest
import torch

from domains import BoxDomain, Crown, DeepPoly, DeepZ, DomainError
from networks.ir import Relu, Softplus
from profit.attribution import BetaSmoothed, IntegratedGradients, Saliency, beta_smoothed_network
from profit.errors import ProfitError
from specs.regions import linf_ball
from tests.profit.attribution.helpers import random_mlp, samples, shipped_net


def test_transform_replaces_every_relu_and_keeps_the_original() -> None:
    net = shipped_net("mnist_conv")
    smooth = beta_smoothed_network(net, 5.0)
    assert sum(isinstance(n.layer, Relu) for n in net) == 3
    assert not any(isinstance(n.layer, Relu) for n in smooth)
    assert [n.layer.beta for n in smooth if isinstance(n.layer, Softplus)] == [5.0] * 3
    x = samples(2)
    torch.testing.assert_close(smooth(x), beta_smoothed_network(net, 5.0)(x))
    with pytest.raises(ProfitError, match="beta"):
        beta_smoothed_network(net, 0.0)


@pytest.mark.parametrize("net_name", ["mnist_mlp", "mnist_conv"])
def test_large_beta_approaches_the_relu_gradient(net_name: str) -> None:
    net, x = shipped_net(net_name), samples(3)
    relu = Saliency(net).attribute(x, abs=False)
    errors = [float((BetaSmoothed(Saliency(net), beta).attribute(x, abs=False) - relu).norm() / relu.norm())
              for beta in (1.0, 10.0, 1000.0)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_smoothed_method_keeps_its_options_and_the_relu_prediction() -> None:
    net, x = shipped_net("mnist_mlp"), samples(2)
    smooth = BetaSmoothed(IntegratedGradients(net), 2.0)
    t = net.logits(x).argmax(1)
    torch.testing.assert_close(smooth.attribute(x, n_steps=8), smooth.attribute(x, target=t, n_steps=8))
    expected = IntegratedGradients(beta_smoothed_network(net, 2.0)).attribute(x, t, n_steps=8)
    torch.testing.assert_close(smooth.attribute(x, n_steps=8), expected)


def test_box_bounds_softplus_soundly_and_other_domains_reject_it() -> None:
    net = beta_smoothed_network(random_mlp(0), 3.0)
    x = torch.rand(2, 6)
    region = linf_ball(x, 0.3, None, None)
    result = BoxDomain(net).bound(region, keep=True)
    points = region.lower + (region.upper - region.lower) * torch.rand(1000, 1, 6)
    values = net.forward_all(points.flatten(0, 1))
    for name, (lo, hi) in result.bounds.items():
        v = values[name].view(1000, 2, -1)
        assert (v >= lo.flatten(1) - 1e-5).all() and (v <= hi.flatten(1) + 1e-5).all(), name
    for domain in (DeepZ, DeepPoly, Crown):
        with pytest.raises(DomainError, match="Softplus"):
            domain(net).bound(region)
