"""The shared matrix: every attribution method through the same checks (shape, determinism, batch ==
single runs), plus the properties that hold for each: completeness of IG and of LRP-eps with zero
biases, the gradient against finite differences, LRP's rules conserving relevance, Captum agreement
where Captum is installed."""

from __future__ import annotations

import pytest
import torch

from networks.ir import Sigmoid, UnsupportedOpError
from profit.attribution import (
    LRP, GuidedBackprop, InputXGradient, IntegratedGradients, LRPOptions, ProofFeatureMap, Saliency,
    SmoothGrad,
)
from profit.errors import ProfitError
from tests.domains.netgen import build
from tests.profit.attribution.helpers import random_conv, random_mlp, samples, shipped_net, zero_bias

METHODS = {  # id -> (class, constructor kwargs, attribute kwargs)
    "saliency": (Saliency, {}, {}),
    "saliency-signed": (Saliency, {}, {"abs": False}),
    "ixg": (InputXGradient, {}, {}),
    "ig": (IntegratedGradients, {}, {"n_steps": 16}),
    "ig-middle": (IntegratedGradients, {}, {"n_steps": 16, "method": "riemann_middle"}),
    "smoothgrad": (SmoothGrad, {}, {"nt_samples": 8, "stdevs": 0.1, "seed": 3}),
    "guided": (GuidedBackprop, {}, {}),
    "lrp-eps": (LRP, {"options": LRPOptions(epsilon=1e-4)}, {}),
    "lrp-zplus-zb": (LRP, {"options": LRPOptions(rule="zplus", first="zb")}, {}),
    "lrp-alphabeta": (LRP, {"options": LRPOptions(rule="alphabeta", alpha=2.0, beta=1.0)}, {}),
    "proof-features": (ProofFeatureMap, {"eps": 0.005}, {}),
}
NETS = ("mnist_mlp", "mnist_conv")


def attribute(method: str, net_name: str, x: torch.Tensor, target=None) -> torch.Tensor:
    cls, init, kwargs = METHODS[method]
    return cls(shipped_net(net_name), **init).attribute(x, target=target, **kwargs)


@pytest.mark.parametrize("net_name", NETS)
@pytest.mark.parametrize("method", METHODS)
def test_shape_determinism_and_batch_equals_single(method: str, net_name: str) -> None:
    x = samples(3)
    original = x.clone()
    maps = attribute(method, net_name, x)
    assert maps.shape == x.shape and torch.isfinite(maps).all()
    assert torch.equal(x, original)  # inputs never mutated
    assert torch.equal(maps, attribute(method, net_name, x))
    assert maps.abs().sum() > 0
    for i in range(3):
        single = attribute(method, net_name, x[i:i + 1])
        torch.testing.assert_close(single, maps[i:i + 1], rtol=1e-4, atol=1e-6)
    explicit = attribute(method, net_name, x, target=shipped_net(net_name).logits(x).argmax(1))
    torch.testing.assert_close(explicit, maps)
    other = attribute(method, net_name, x, target=(shipped_net(net_name).logits(x).argmax(1) + 1) % 10)
    assert not torch.allclose(other, maps)


def test_proof_feature_map_is_the_features_aggregate_and_zero_without_a_proof() -> None:
    from profit.features import ProofFeatures

    net, x = shipped_net("mnist_mlp"), samples(2)
    t = net.logits(x).argmax(1)
    features = ProofFeatures.compute(net, x, t, 0.01)
    expected = torch.stack([m.aggregate for m in features.visualize(features.prune())])
    torch.testing.assert_close(ProofFeatureMap(net, eps=0.01).attribute(x), expected)
    assert (ProofFeatureMap(net, eps=0.5).attribute(x) == 0).all()  # nothing is proven at eps 0.5


def test_smoothgrad_seed_decides_the_noise() -> None:
    net, x = shipped_net("mnist_mlp"), samples(2)
    a = SmoothGrad(net).attribute(x, nt_samples=4, seed=1)
    assert torch.equal(a, SmoothGrad(net).attribute(x, nt_samples=4, seed=1))
    assert not torch.allclose(a, SmoothGrad(net).attribute(x, nt_samples=4, seed=2))
    torch.testing.assert_close(SmoothGrad(net).attribute(x, stdevs=0.0, nt_samples=2),
                               Saliency(net).attribute(x, abs=False))


@pytest.mark.parametrize("net_name", NETS)
def test_integrated_gradients_completeness(net_name: str) -> None:
    net, x = shipped_net(net_name), samples(4)
    baseline = torch.full_like(x, 0.2)
    t = net.logits(x).argmax(1)
    expected = (net.logits(x) - net.logits(baseline)).gather(1, t.view(-1, 1)).squeeze(1)
    maps = IntegratedGradients(net).attribute(x, baselines=baseline, n_steps=256)
    torch.testing.assert_close(maps.flatten(1).sum(1), expected, rtol=0.01, atol=0.02)
    coarse = IntegratedGradients(net).attribute(x, baselines=baseline, n_steps=2)  # the trapezoid of 2 points
    torch.testing.assert_close(coarse, (x - baseline) * (Saliency(net).attribute(x, abs=False)
                                                          + Saliency(net).attribute(baseline, t, abs=False)) / 2)


@pytest.mark.parametrize("options", [LRPOptions(epsilon=1e-7), LRPOptions(rule="zplus", first="zb"),
                                     LRPOptions(rule="alphabeta", alpha=2.0, beta=1.0, first="zb")],
                         ids=["eps", "zplus-zb", "alphabeta-zb"])
@pytest.mark.parametrize("net_name", NETS)
def test_lrp_conserves_relevance_without_biases(net_name: str, options: LRPOptions) -> None:
    net, x = zero_bias(shipped_net(net_name)), samples(4)
    t = net.logits(x).argmax(1)
    f = net.logits(x).gather(1, t.view(-1, 1)).squeeze(1)
    maps = LRP(net, options).attribute(x)
    # alpha-beta conserves a neuron's relevance only where it has contributions of both signs
    rtol = 1e-2 if options.rule == "alphabeta" else 1e-3
    torch.testing.assert_close(maps.flatten(1).sum(1), f, rtol=rtol, atol=1e-4)
    if options.rule == "epsilon":  # LRP-0 on a ReLU net is gradient x input
        torch.testing.assert_close(maps, InputXGradient(net).attribute(x), rtol=1e-3, atol=5e-4)


def test_lrp_zplus_relevance_is_nonnegative_and_biases_break_conservation() -> None:
    net, x = shipped_net("mnist_mlp"), samples(4)
    maps = LRP(net, LRPOptions(rule="zplus")).attribute(x)
    f = net.logits(x).gather(1, net.logits(x).argmax(1).view(-1, 1)).squeeze(1)
    assert (maps >= 0).all()
    eps_sums = LRP(net).attribute(x).flatten(1).sum(1)
    assert (eps_sums - f).abs().max() > 1e-3  # the shipped biases absorb relevance


@pytest.mark.parametrize("make", [lambda: random_mlp(0), lambda: random_conv(1), lambda: shipped_net("mnist_conv")],
                         ids=["mlp", "conv", "mnist_conv"])
def test_gradient_agrees_with_finite_differences(make) -> None:
    net = make().to(torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((2, *net.input_shape), generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1])
    grad = Saliency(net).attribute(x, t, abs=False)
    flat = x.flatten(1)
    coords = torch.randperm(flat.shape[1], generator=g)[:20]
    h = 1e-6
    for i in coords:
        step = torch.zeros_like(flat)
        step[:, i] = h
        up, down = net.logits((flat + step).view_as(x)), net.logits((flat - step).view_as(x))
        fd = (up - down).gather(1, t.view(-1, 1)).squeeze(1) / (2 * h)
        torch.testing.assert_close(grad.flatten(1)[:, i], fd, rtol=1e-5, atol=1e-7)


def test_guided_backprop_differs_from_the_gradient_only_by_clamping() -> None:
    net, x = shipped_net("mnist_mlp"), samples(2)
    guided = GuidedBackprop(net).attribute(x)
    assert not torch.allclose(guided, Saliency(net).attribute(x, abs=False))
    one_layer = random_mlp(3, (5, 4, 2))  # one ReLU: guided = gradient of the clamped last-layer row
    z = torch.rand(1, 5)
    W1, W2 = one_layer.node("fc0").layer.weight, one_layer.node("fc1").layer.weight
    active = (one_layer.forward_all(z)["fc0"] > 0).float()
    torch.testing.assert_close(GuidedBackprop(one_layer).attribute(z, 1), ((W2[1].clamp(min=0) * active) @ W1))


def test_bad_arguments_are_typed_errors() -> None:
    net, x = shipped_net("mnist_mlp"), samples(2)
    with pytest.raises(ProfitError, match="target"):
        Saliency(net).attribute(x, target=10)
    with pytest.raises(ProfitError, match="target"):
        Saliency(net).attribute(x, target=torch.tensor([1, 2, 3]))
    with pytest.raises(ProfitError, match="method"):
        IntegratedGradients(net).attribute(x, method="gausslegendre")
    with pytest.raises(ProfitError, match="rule"):
        LRPOptions(rule="gamma")
    sig = build((3,), [("fc", random_mlp(0, (3, 2)).node("fc0").layer, ("x",)), ("s", Sigmoid(), ("fc",))])
    with pytest.raises(UnsupportedOpError, match="Sigmoid"):
        LRP(sig)


@pytest.mark.parametrize("method", ["saliency", "ixg", "ig", "guided"])
def test_captum_agreement(method: str) -> None:
    captum = pytest.importorskip("captum.attr")
    net, x = shipped_net("mnist_conv"), samples(2)

    class Module(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return net.logits(z)

    model, t = Module(), net.logits(x).argmax(1)
    ours = attribute(method, "mnist_conv", x, t)
    if method == "ig":
        theirs = captum.IntegratedGradients(model).attribute(x, target=t, n_steps=16, method="riemann_trapezoid")
    elif method == "guided":
        pytest.skip("Captum's GuidedBackprop hooks torch.nn.ReLU modules, which the IR does not use")
    else:
        theirs = {"saliency": captum.Saliency, "ixg": captum.InputXGradient}[method](model).attribute(x, target=t)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_readme_example_runs() -> None:
    """The README section's Python block runs as written, with `net` and `x` given."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.index("## Gradient attributions and certified explanation stability")
    start = readme.index("```python\n", section) + len("```python\n")
    code = readme[start:readme.index("```", start)]
    scope = {"net": shipped_net("mnist_mlp"), "x": samples(2)}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["b"].lower.shape == (2, 1, 28, 28)
