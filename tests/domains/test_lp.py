"""Tests of domains.lp (the LP reference): hand-computed triangle-relaxation optima, exact
linear maps for every linear op, the batch/point/option contract and unsupported ops.
Soundness by sampling and the orderings against the other domains are in
test_soundness.py and test_contract.py."""

from __future__ import annotations

import pytest
import torch

from domains import BoxDomain
from domains.base import DomainError
from domains.lp import LPOptions, LPReference
from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Linear, MaxPool, Pad, Relu, Reshape, Sigmoid, Tanh, Transpose,
)
from specs.regions import Box
from tests.domains.netgen import build, one_thread, region_for, zoo

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
MARGIN = 1e-5  # LP optima are widened by 1e-6 (1 + |v|); compare hand values to 1e-5


def two_two_one():
    """h = (x1 + x2, x1 - x2), y = relu(h1) + relu(h2) over x in [-1, 1]^2."""
    return build((2,), [("h", Linear(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.zeros(2)), ("x",)),
                        ("r", Relu(), ("h",)), ("y", Linear(torch.tensor([[1.0, 1.0]]), torch.zeros(1)), ("r",))])


def unit_box(n: int = 2) -> Box:
    return Box(-torch.ones(1, n), torch.ones(1, n))


@pytest.mark.parametrize("intermediate", ["lp", "crown"])
def test_two_two_one_net_hand_computed(intermediate: str) -> None:
    """h in [-2, 2]; the chords r_i <= (h_i + 2) / 2 give y <= x1 + 2 <= 3 (true max 2);
    r >= 0 gives y >= 0 (exact). Box gives [0, 4]."""
    r = LPReference(two_two_one(), LPOptions(intermediate=intermediate)).bound(unit_box(), keep=True)
    torch.testing.assert_close(r.lower, torch.tensor([[0.0]]), atol=MARGIN, rtol=0)
    torch.testing.assert_close(r.upper, torch.tensor([[3.0]]), atol=MARGIN, rtol=0)
    torch.testing.assert_close(r.bounds["h"][0], torch.tensor([[-2.0, -2.0]]), atol=MARGIN, rtol=0)
    torch.testing.assert_close(r.bounds["r"][1], torch.tensor([[2.0, 2.0]]), atol=MARGIN, rtol=0)
    assert (r.lower <= 0).all() and (r.upper >= 3).all()  # widened outward, never inward
    assert r.domain == "lp" and r.states == {}


def test_spec_rows_hand_computed() -> None:
    """min and max of y - 0.5 and of -y over the relaxation: [-0.5, 2.5] and [-3, 0]."""
    C = torch.tensor([[[1.0], [-1.0]]])
    r = LPReference(two_two_one()).bound(unit_box(), C)
    torch.testing.assert_close(r.spec_lower, torch.tensor([[0.0, -3.0]]), atol=MARGIN, rtol=0)
    torch.testing.assert_close(r.spec_upper, torch.tensor([[3.0, 0.0]]), atol=MARGIN, rtol=0)
    assert not r.proven.item()


def test_absolute_value_layer_is_exact() -> None:
    """|x| = relu(x) + relu(-x) on [-1, 1]: the triangles give exactly [0, 1]."""
    net = build((1,), [("h", Linear(torch.tensor([[1.0], [-1.0]]), torch.zeros(2)), ("x",)), ("r", Relu(), ("h",)),
                       ("y", Linear(torch.tensor([[1.0, 1.0]]), torch.zeros(1)), ("r",))])
    r = LPReference(net).bound(unit_box(1))
    torch.testing.assert_close(r.lower, torch.tensor([[0.0]]), atol=MARGIN, rtol=0)
    torch.testing.assert_close(r.upper, torch.tensor([[1.0]]), atol=MARGIN, rtol=0)


def every_linear_op():
    """A network using every linear op the LP supports (and one Relu)."""
    g = torch.Generator().manual_seed(0)
    return build((2, 4, 3), [
        ("aff", Affine(torch.randn(2, 4, 3, generator=g) * (torch.rand(2, 4, 3, generator=g) > 0.3),
                       torch.randn(2, 4, 3, generator=g)), ("x",)),
        ("conv", Conv(torch.randn(3, 2, 2, 2, generator=g), torch.randn(3, generator=g), (1, 2), (1, 0, 2, 1), (2, 1)),
         ("aff",)),
        ("pool", AvgPool((2, 2), (1, 1), (1, 1, 0, 1), count_include_pad=False), ("conv",)),
        ("pad", Pad((0, 1, 0, 1, 0, 2), 0.7), ("pool",)),
        ("tr", Transpose((2, 0, 1)), ("pad",)),
        ("relu", Relu(), ("tr",)),
        ("cat", Concat(1), ("tr", "relu")),
        ("add", Add(), ("cat", "cat")),
        ("flat", Reshape((-1,)), ("add",)),
        ("out", Linear(torch.randn(3, 240, generator=g), torch.randn(3, generator=g)), ("flat",)),
    ])


def test_every_linear_op_is_exact_at_a_point() -> None:
    """On a zero-width region every node's LP bounds are the forward values (the materialised
    affine maps are exact) and the widening is at most ~1e-6 (1 + |v|)."""
    net = every_linear_op()
    assert net.node("flat").shape == (240,)
    x = torch.rand(1, *net.input_shape, generator=torch.Generator().manual_seed(1))
    r = LPReference(net).bound(Box(x, x), keep=True)
    values = net.forward_all(x)
    for node in net.nodes:
        lo, hi = r.bounds[node.name]
        v = values[node.name]
        assert (lo <= v + 1e-5 * (1 + v.abs())).all() and (hi >= v - 1e-5 * (1 + v.abs())).all(), node.name
        assert ((hi - lo) <= 1e-5 * (1 + v.abs())).all(), node.name


def test_linear_layer_is_exact_interval() -> None:
    """For one Linear layer the LP optimum is the exact range, as interval arithmetic's."""
    g = torch.Generator().manual_seed(2)
    net = build((4,), [("y", Linear(torch.randn(3, 4, generator=g), torch.randn(3, generator=g)), ("x",))])
    region = Box.concat([region_for("box", (4,), g, 1.0) for _ in range(2)])
    lp, box = LPReference(net).bound(region), BoxDomain(net).bound(region)
    torch.testing.assert_close(lp.lower, box.lower, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp.upper, box.upper, atol=1e-5, rtol=1e-5)
    assert (lp.lower <= box.lower + 1e-6).all() and (lp.upper >= box.upper - 1e-6).all()


def test_batch_equals_single_runs_and_inputs_not_mutated() -> None:
    net = zoo()["reludag"]
    g = torch.Generator().manual_seed(3)
    region = Box.concat([region_for(k, net.input_shape, g, 0.5) for k in ("box", "patch")])
    C = torch.randn(2, net.n_outputs, generator=g)
    lower, upper = region.lower.clone(), region.upper.clone()
    batch = LPReference(net).bound(region, C)
    for b in range(2):
        single = LPReference(net).bound(region[b], C)
        torch.testing.assert_close(batch.spec_lower[b:b + 1], single.spec_lower, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch.lower[b:b + 1], single.lower, atol=1e-5, rtol=1e-5)
    assert torch.equal(region.lower, lower) and torch.equal(region.upper, upper)


def test_unsupported_ops_listed_at_construction() -> None:
    net = build((1, 4, 4), [("s", Sigmoid(), ("x",)), ("t", Tanh(), ("s",)), ("m", MaxPool((2, 2), (2, 2)), ("t",))])
    with pytest.raises(DomainError) as info:
        LPReference(net)
    message = str(info.value)
    for op, node in (("Sigmoid", "s"), ("Tanh", "t"), ("MaxPool", "m")):
        assert f"domain 'lp' does not support op {op} (node '{node}')" in message


def test_bad_options_and_unbounded_regions_are_rejected() -> None:
    with pytest.raises(ValueError, match="intermediate"):
        LPReference(two_two_one(), LPOptions(intermediate="alpha"))
    with pytest.raises(ValueError, match="bounded"):
        LPReference(two_two_one()).bound(Box(torch.full((1, 2), -torch.inf), torch.zeros(1, 2)))
