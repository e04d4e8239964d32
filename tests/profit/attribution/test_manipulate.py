"""The manipulation attack and its metrics (PCC, SSIM): the attack moves the explanation toward the
target map while the class stays; the metrics have their defining values."""

from __future__ import annotations

import pytest
import torch

from profit.attribution import (
    LRP, InputXGradient, ManipulationOptions, Saliency, manipulate, normalise, pcc, ssim,
)
from profit.errors import ProfitError
from tests.profit.attribution.helpers import samples, shipped_net


def test_metrics_have_their_defining_values() -> None:
    a = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pcc(a, a), torch.ones(3))
    torch.testing.assert_close(pcc(a, 2 * a + 1), torch.ones(3))
    torch.testing.assert_close(pcc(a, -a), -torch.ones(3))
    torch.testing.assert_close(ssim(a, a), torch.ones(3, dtype=torch.float64))
    noise = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    values = [float(ssim(a, (a + s * noise).clamp(0, 1)).mean()) for s in (0.01, 0.1, 0.5)]
    assert 1 > values[0] > values[1] > values[2]
    flat = ssim(a.flatten(1), a.flatten(1) * 0.5)  # global statistics for non-image shapes
    assert flat.shape == (3,) and (flat < 1).all()
    n = normalise(torch.tensor([[1.0, -3.0], [0.0, 0.0]]))
    torch.testing.assert_close(n, torch.tensor([[0.25, 0.75], [0.0, 0.0]]))


@pytest.mark.parametrize("method", [Saliency, InputXGradient])
def test_attack_moves_the_map_toward_the_target_and_keeps_the_class(method) -> None:
    net = shipped_net("mnist_conv")
    xs = samples(3)
    x, other = xs[:1], xs[1:2]
    explainer = method(net)
    target_map = explainer.attribute(other, net.logits(other).argmax(1))
    result = manipulate(net, x, target_map, explainer, ManipulationOptions(steps=60, lr=3e-3, gamma=1e-3))
    assert result.x_adv.shape == x.shape and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.pcc_after.item() > result.pcc_before.item() + 0.1
    assert result.class_kept.all() and result.output_change.item() < 1.0
    assert result.ssim_input.item() < 1
    torch.testing.assert_close(result.map_adv, normalise(explainer.attribute(result.x_adv, net.logits(x).argmax(1))))
    torch.testing.assert_close(result.pcc_after, pcc(result.map_adv, result.map_target))
    assert torch.equal(x, samples(1))  # the input is not modified


def test_attack_needs_a_gradient_method_and_valid_options() -> None:
    net = shipped_net("mnist_mlp")
    with pytest.raises(ProfitError, match="gradient method"):
        manipulate(net, samples(1), samples(1), LRP(net))
    with pytest.raises(ProfitError, match="steps"):
        ManipulationOptions(steps=0)
