"""Tests of domains.box: hand-computed transformers, soundness by sampling at every node,
the contract (batching, zero width, no mutation, unsupported ops), IBP differentiability."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from domains.base import DomainError
from domains.box import BoxDomain, Interval, interval_bounds
from networks import load_onnx
from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Input, Layer, Linear, MaxPool, Network, Node, Pad, Relu,
    Reshape, Sigmoid, Tanh, Transpose,
)
from specs.properties import Spec, robustness
from specs.regions import Box, linf_ball

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TOL = 1e-5


def build(input_shape: tuple[int, ...], layers: list[tuple[str, Layer, tuple[str, ...]]]) -> Network:
    """A Network from (name, layer, inputs) triples after an Input named 'x'; shapes by forward."""
    nodes = [Node("x", Input(), (), input_shape)]
    dtype = next((t.dtype for _, layer, _ in layers for t in layer.tensors().values()), torch.float32)
    values = {"x": torch.zeros(1, *input_shape, dtype=dtype)}
    for name, layer, inputs in layers:
        values[name] = layer.forward(*(values[i] for i in inputs))
        nodes.append(Node(name, layer, inputs, tuple(values[name].shape[1:])))
    return Network(tuple(nodes))


def _lin(g: torch.Generator, n_in: int, n_out: int) -> Linear:
    return Linear(torch.randn(n_out, n_in, generator=g) / math.sqrt(n_in), torch.randn(n_out, generator=g) * 0.3)


def _conv(g: torch.Generator, c_in: int, c_out: int, k: int, **kw) -> Conv:
    w = torch.randn(c_out, c_in, k, k, generator=g) / math.sqrt(c_in * k * k)
    return Conv(w, torch.randn(c_out, generator=g) * 0.3, **kw)


def zoo() -> dict[str, Network]:
    """Small random networks that together use every IR layer type."""
    g = torch.Generator().manual_seed(0)
    mlp = build((4,), [
        ("l1", _lin(g, 4, 6), ("x",)), ("r1", Relu(), ("l1",)),
        ("l2", _lin(g, 6, 5), ("r1",)), ("s2", Sigmoid(), ("l2",)),
        ("l3", _lin(g, 5, 4), ("s2",)), ("t3", Tanh(), ("l3",)),
        ("out", _lin(g, 4, 3), ("t3",)),
    ])
    conv = build((2, 6, 6), [
        ("aff", Affine(torch.randn(2, 6, 6, generator=g), torch.randn(2, 6, 6, generator=g)), ("x",)),
        ("c1", _conv(g, 2, 3, 3, pads=(1, 0, 0, 1)), ("aff",)), ("r1", Relu(), ("c1",)),
        ("mp", MaxPool((2, 2), (2, 2), (0, 0, 1, 1)), ("r1",)),
        ("ap", AvgPool((2, 2), (1, 1), (1, 1, 1, 1)), ("mp",)),
        ("pad", Pad((0, 1, 0, 0, 0, 1), 0.5), ("ap",)),
        ("c2", _conv(g, 3, 2, 2, stride=(2, 1), dilation=(1, 2)), ("pad",)), ("r2", Relu(), ("c2",)),
        ("tr", Transpose((1, 2, 0)), ("r2",)), ("flat", Reshape((-1,)), ("tr",)),
        ("out", _lin(g, 12, 3), ("flat",)), ("sig", Sigmoid(), ("out",)),
    ])
    dag = build((5,), [
        ("a", _lin(g, 5, 4), ("x",)), ("ra", Relu(), ("a",)),
        ("b", _lin(g, 5, 4), ("x",)), ("tb", Tanh(), ("b",)),
        ("s", Add(), ("ra", "tb")), ("cat", Concat(0), ("s", "ra")), ("r2", Relu(), ("cat",)),
        ("sub", _lin(g, 8, 4), ("r2",)), ("res", Add(), ("sub", "a")), ("out", _lin(g, 4, 3), ("res",)),
    ])
    convdag = build((1, 5, 5), [
        ("c1", _conv(g, 1, 2, 3, pads=(1, 1, 1, 1)), ("x",)), ("r1", Relu(), ("c1",)),
        ("c2", _conv(g, 1, 2, 3, pads=(1, 1, 1, 1)), ("x",)), ("t2", Tanh(), ("c2",)),
        ("cat", Concat(0), ("r1", "t2")),
        ("mp", MaxPool((3, 3), (2, 2), (1, 1, 1, 1)), ("cat",)),
        ("aff", Affine(-torch.rand(4, 3, 3, generator=g), torch.zeros(4, 3, 3)), ("mp",)),
        ("add", Add(), ("mp", "aff")), ("r2", Relu(), ("add",)),
        ("flat", Reshape((36,)), ("r2",)), ("out", _lin(g, 36, 2), ("flat",)),
    ])
    pool = build((1, 4, 4), [("mp", MaxPool((2, 2), (1, 1)), ("x",)), ("ap", AvgPool((3, 3), (1, 1)), ("mp",))])
    return {"mlp": mlp, "conv": conv, "dag": dag, "convdag": convdag, "pool": pool}


NETS = zoo()


def random_box(shape: tuple[int, ...], batch: int = 3, seed: int = 1) -> Box:
    """B random boxes, some coordinates of zero width, one batch element a point."""
    g = torch.Generator().manual_seed(seed)
    center = torch.randn(batch, *shape, generator=g)
    scale = torch.tensor([1.0, 0.2, 0.0, 1.0] * batch)[:batch].reshape(-1, *[1] * len(shape))
    width = torch.rand(batch, *shape, generator=g) * scale
    width = width * (torch.rand(batch, *shape, generator=g) > 0.3)
    return Box(center - width, center + width)


def samples(box: Box, n: int = 1000, seed: int = 2) -> Tensor:
    """(B, n + n//4 + 1, *shape): uniform points, vertices and the center of every box."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([box.sample(n, g), box.vertices_sample(n // 4, g), box.center.unsqueeze(1)], dim=1)


def assert_sound(net: Network, bounds: dict[str, tuple[Tensor, Tensor]], xs: Tensor, rel: float = 0.0) -> None:
    """Every node's value at every sample xs (B, S, *input_shape) lies in its bounds."""
    B, S = xs.shape[:2]
    values = net.forward_all(xs.reshape(B * S, *xs.shape[2:]))
    for name, (lo, hi) in bounds.items():
        v = values[name].reshape(B, S, *lo.shape[1:])
        tol = TOL + rel * v.abs()
        below = (v < lo.unsqueeze(1) - tol).sum().item()
        above = (v > hi.unsqueeze(1) + tol).sum().item()
        assert below == 0 and above == 0, f"node {name}: {below} values below, {above} above the bounds"


def one_node(layer: Layer, shape: tuple[int, ...], n_inputs: int = 1) -> Network:
    if n_inputs == 1:
        return build(shape, [("y", layer, ("x",))])
    return build(shape, [("a", Reshape(shape), ("x",)), ("b", Affine(-torch.ones(shape), torch.ones(shape)), ("x",)),
                         ("y", layer, ("a", "b"))])


def box_of(lower: list, upper: list) -> Box:
    return Box(torch.tensor([lower], dtype=torch.float32), torch.tensor([upper], dtype=torch.float32))


def bounds_of(net: Network, box: Box) -> tuple[Tensor, Tensor]:
    r = BoxDomain(net).bound(box)
    return r.lower[0], r.upper[0]


# ---------------------------------------------------------------- hand-computed transformers

def test_linear_hand_computed() -> None:
    net = one_node(Linear(torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.tensor([1.0, -1.0])), (2,))
    lo, hi = bounds_of(net, box_of([0, -1], [1, 2]))
    torch.testing.assert_close(lo, torch.tensor([-3.0, -1.5]))
    torch.testing.assert_close(hi, torch.tensor([4.0, 3.0]))


def test_conv_hand_computed() -> None:
    net = one_node(Conv(torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]]]), torch.tensor([0.5])), (1, 2, 2))
    lo, hi = bounds_of(net, Box(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)))
    assert lo.flatten().tolist() == [-0.5] and hi.flatten().tolist() == [3.5]


def test_affine_negative_scale_hand_computed() -> None:
    net = one_node(Affine(torch.tensor([-2.0, 3.0]), torch.tensor([1.0, 0.0])), (2,))
    lo, hi = bounds_of(net, box_of([-1, -1], [2, 2]))
    assert lo.tolist() == [-3.0, -3.0] and hi.tolist() == [3.0, 6.0]


def test_activations_hand_computed() -> None:
    assert [t.tolist() for t in bounds_of(one_node(Relu(), (2,)), box_of([-1, -3], [3, -1]))] == [[0, 0], [3, 0]]
    lo, hi = bounds_of(one_node(Sigmoid(), (1,)), box_of([0], [0]))
    assert lo.tolist() == [0.5] and hi.tolist() == [0.5]
    lo, hi = bounds_of(one_node(Tanh(), (1,)), box_of([-1], [2]))
    torch.testing.assert_close(lo, torch.tensor([math.tanh(-1)]))
    torch.testing.assert_close(hi, torch.tensor([math.tanh(2)]))


def test_pools_hand_computed() -> None:
    box = Box(torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]]]]), torch.tensor([[[[1.0, 3.0], [0.0, 2.0]]]]))
    lo, hi = bounds_of(one_node(MaxPool((2, 2), (2, 2)), (1, 2, 2)), box)
    assert lo.flatten().tolist() == [2.0] and hi.flatten().tolist() == [3.0]
    lo, hi = bounds_of(one_node(AvgPool((2, 2), (2, 2)), (1, 2, 2)), box)
    assert lo.flatten().tolist() == [0.5] and hi.flatten().tolist() == [1.5]
    # padded cells never win a max pool, even over negative values
    lo, hi = bounds_of(one_node(MaxPool((2, 2), (1, 1), (1, 1, 0, 0)), (1, 1, 1)),
                       Box(torch.full((1, 1, 1, 1), -3.0), torch.full((1, 1, 1, 1), -2.0)))
    assert lo.flatten().tolist() == [-3.0] and hi.flatten().tolist() == [-2.0]


def test_add_concat_and_shape_ops_hand_computed() -> None:
    # a = x, b = 1 - x over x in [0, 1]: box loses the correlation, a + b in [0, 2]
    lo, hi = bounds_of(one_node(Add(), (1,), n_inputs=2), box_of([0], [1]))
    assert lo.tolist() == [0.0] and hi.tolist() == [2.0]
    lo, hi = bounds_of(one_node(Concat(0), (1,), n_inputs=2), box_of([0], [1]))
    assert lo.tolist() == [0.0, 0.0] and hi.tolist() == [1.0, 1.0]
    lo, hi = bounds_of(one_node(Pad((1, 0), 7.0), (1,)), box_of([0], [1]))
    assert lo.tolist() == [7.0, 0.0] and hi.tolist() == [7.0, 1.0]
    row = Box(torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[3.0, 4.0]]]))
    lo, hi = bounds_of(one_node(Transpose((1, 0)), (1, 2)), row)
    assert lo.tolist() == [[1.0], [2.0]] and hi.tolist() == [[3.0], [4.0]]
    lo, hi = bounds_of(one_node(Reshape((2,)), (1, 2)), row)
    assert lo.tolist() == [1.0, 2.0] and hi.tolist() == [3.0, 4.0]


def test_two_two_one_relu_net_hand_computed() -> None:
    net = build((2,), [("h", Linear(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.zeros(2)), ("x",)),
                       ("r", Relu(), ("h",)), ("y", Linear(torch.tensor([[1.0, 1.0]]), torch.zeros(1)), ("r",))])
    r = BoxDomain(net).bound(box_of([-1, -1], [1, 1]), keep=True)
    assert r.bounds["h"][0].tolist() == [[-2.0, -2.0]] and r.bounds["h"][1].tolist() == [[2.0, 2.0]]
    assert r.bounds["r"][0].tolist() == [[0.0, 0.0]] and r.bounds["r"][1].tolist() == [[2.0, 2.0]]
    assert r.lower.tolist() == [[0.0]] and r.upper.tolist() == [[4.0]]
    assert isinstance(r.states["r"], Interval) and r.domain == "box"


def test_spec_folded_into_last_linear_layer() -> None:
    # y1 = y2 = x1 + x2: bounding y first gives y1 - y2 in [-4, 4]; folding C W = 0 gives exactly 0
    net = one_node(Linear(torch.ones(2, 2), torch.tensor([1.0, 1.0])), (2,))
    spec = Spec(torch.tensor([[[1.0, -1.0]]]), torch.tensor([[0.5]]), torch.tensor([0]))
    r = BoxDomain(net).bound(box_of([-1, -1], [1, 1]), spec)
    assert r.spec_lower.tolist() == [[0.5]] and r.spec_upper.tolist() == [[0.5]]
    assert r.proven.tolist() == [True]
    # a bare C matrix is accepted too
    assert BoxDomain(net).bound(box_of([-1, -1], [1, 1]), torch.tensor([[1.0, -1.0]])).spec_lower.tolist() == [[0.0]]


# ---------------------------------------------------------------- soundness and contract

@pytest.mark.parametrize("name", sorted(NETS))
def test_sound_at_every_node(name: str) -> None:
    net = NETS[name]
    box = random_box(net.input_shape)
    spec = Spec(torch.randn(3, 2, net.n_outputs, generator=torch.Generator().manual_seed(3)), torch.zeros(3, 2),
                torch.tensor([0, 1]))
    r = BoxDomain(net).bound(box, spec, keep=True)
    assert set(r.bounds) == {n.name for n in net}
    xs = samples(box)
    assert_sound(net, r.bounds, xs)
    ys = net.forward(xs.reshape(-1, *net.input_shape)).reshape(3, xs.shape[1], -1)
    assert (spec.values(ys) >= r.spec_lower.unsqueeze(1) - TOL).all()
    assert (spec.values(ys) <= r.spec_upper.unsqueeze(1) + TOL).all()


@pytest.mark.parametrize("name", sorted(NETS))
def test_zero_width_region_gives_forward(name: str) -> None:
    net = NETS[name]
    x = torch.randn(2, *net.input_shape, generator=torch.Generator().manual_seed(4))
    r = BoxDomain(net).bound(Box(x, x), keep=True)
    for node, value in net.forward_all(x).items():
        torch.testing.assert_close(r.bounds[node][0], value, atol=TOL, rtol=0)
        torch.testing.assert_close(r.bounds[node][1], value, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", sorted(NETS))
def test_monotone_in_eps(name: str) -> None:
    net = NETS[name]
    x = torch.randn(1, *net.input_shape, generator=torch.Generator().manual_seed(5))
    prev = None
    for eps in (0.0, 0.01, 0.1, 0.5):
        r = BoxDomain(net).bound(linf_ball(x, eps, None, None), keep=True)
        if prev is not None:
            for node, (lo, hi) in r.bounds.items():
                assert (lo <= prev.bounds[node][0] + 1e-6).all() and (hi >= prev.bounds[node][1] - 1e-6).all(), node
        prev = r


@pytest.mark.parametrize("name", sorted(NETS))
def test_batch_equals_single_runs_and_inputs_not_mutated(name: str) -> None:
    net = NETS[name]
    box = random_box(net.input_shape, batch=4)
    lower, upper = box.lower.clone(), box.upper.clone()
    spec = Spec(torch.randn(4, 2, net.n_outputs, generator=torch.Generator().manual_seed(6)), torch.rand(4, 2),
                torch.tensor([0, 0]))
    C, d = spec.C.clone(), spec.d.clone()
    r = BoxDomain(net).bound(box, spec, keep=True)
    assert torch.equal(box.lower, lower) and torch.equal(box.upper, upper)
    assert torch.equal(spec.C, C) and torch.equal(spec.d, d)
    for b in range(4):
        s = BoxDomain(net).bound(box[b], spec[b], keep=True)
        for node, (lo, hi) in s.bounds.items():
            torch.testing.assert_close(lo, r.bounds[node][0][b:b + 1], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(hi, r.bounds[node][1][b:b + 1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(s.spec_lower, r.spec_lower[b:b + 1], atol=1e-6, rtol=1e-6)
        assert s.proven.tolist() == r.proven[b:b + 1].tolist()


@dataclass(frozen=True, eq=False)
class _Mystery(Layer):
    def forward(self, x: Tensor) -> Tensor:
        return x.abs()


def test_unsupported_op_raises_at_construction() -> None:
    net = build((2,), [("m", _Mystery(), ("x",)), ("m2", _Mystery(), ("m",))])
    with pytest.raises(DomainError, match="'box' does not support op _Mystery \\(node 'm'\\)"):
        BoxDomain(net)
    with pytest.raises(DomainError, match="node 'm2'"):
        interval_bounds(net, torch.zeros(1, 2), torch.ones(1, 2))


def test_interval_bounds_matches_domain_and_is_differentiable() -> None:
    net = NETS["mlp"].to(torch.float64)
    box = random_box(net.input_shape)
    expected = BoxDomain(net).bound(box, keep=True).bounds
    lo, hi = box.lower.double().requires_grad_(), box.upper.double().requires_grad_()
    got = interval_bounds(net, lo, hi)
    for node, (l, u) in got.items():
        torch.testing.assert_close(l.detach(), expected[node][0])
        torch.testing.assert_close(u.detach(), expected[node][1])
    (got["out"][1] - got["out"][0]).sum().backward()
    assert torch.isfinite(hi.grad).all() and hi.grad.abs().sum() > 0
    # exact gradients through a smooth network (no kinks): finite differences agree
    f64 = {"dtype": torch.float64}
    smooth = build((3,), [("l", Linear(torch.randn(4, 3, **f64), torch.randn(4, **f64)), ("x",)), ("s", Sigmoid(), ("l",)),
                          ("a", Affine(-torch.ones(4, **f64), torch.zeros(4, **f64)), ("s",)), ("t", Tanh(), ("a",))])
    c = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    r = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, r: torch.stack(interval_bounds(smooth, c - r, c + r)["t"]), (c, r))


# ---------------------------------------------------------------- real networks

def _mnist(n: int) -> tuple[Tensor, Tensor]:
    data = np.loadtxt(SHARED / "data/mnist/mnist_test_first100.csv", delimiter=",", max_rows=n)
    return torch.tensor(data[:, 1:] / 255, dtype=torch.float32), torch.tensor(data[:, 0]).long()


def _cifar(n: int) -> tuple[Tensor, Tensor]:
    data = np.loadtxt(SHARED / "data/cifar10/cifar10_test_first100.csv", delimiter=",", max_rows=n)
    x = torch.tensor(data[:, 1:] / 255, dtype=torch.float32).reshape(n, 32, 32, 3).permute(0, 3, 1, 2)
    return x.contiguous(), torch.tensor(data[:, 0]).long()


REAL = [
    ("benchmarks/vnncomp2021/mnistfc/mnist-net_256x2.onnx", _mnist, 0.01),
    ("networks/profit/convSmallRELU__Point.onnx", _cifar, 2 / 255),
]


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared data not found at {SHARED}")
@pytest.mark.parametrize(("path", "load", "eps"), REAL, ids=["mnist-256x2", "cifar-convSmall"])
def test_sound_on_real_networks(path: str, load, eps: float) -> None:
    net = load_onnx(SHARED / path)
    x, y = load(3)
    x = net.prepare(x)
    box = linf_ball(x, eps)
    spec = robustness(y, 10)
    r = BoxDomain(net).bound(box, spec, keep=True)
    xs = samples(box, n=160)
    assert_sound(net, r.bounds, xs, rel=1e-6)
    ys = net.logits(xs.reshape(-1, *net.input_shape)).reshape(3, xs.shape[1], -1)
    assert (spec.values(ys) >= r.spec_lower.unsqueeze(1) - 1e-4).all()
