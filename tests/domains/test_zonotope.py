"""Tests of domains.zonotope (DeepZ): the Zonotope element, hand-computed transformers,
generator alignment in DAGs, soundness by sampling at every node, the contract (batching,
chunking, zero width, no mutation, unsupported ops) and real networks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from domains.base import DomainError
from domains.zonotope import DeepZ, DeepZOptions, Zonotope
from networks import load_onnx
from networks.ir import Add, Affine, Concat, Layer, Linear, MaxPool, Pad, Relu, Sigmoid, Tanh
from specs.properties import Spec, robustness
from specs.regions import Box, linf_ball
from tests.domains.test_box import (
    NETS, REAL, SHARED, TOL, assert_sound, box_of, build, one_node, random_box, samples,
)


def run(net, box: Box, spec=None, **options):
    return DeepZ(net, DeepZOptions(**options)).bound(box, spec, keep=True)


def output_state(net, box: Box) -> Zonotope:
    return run(net, box).states[net.output.name]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- the element

def test_zonotope_bounds_and_concretize_linear_hand_computed() -> None:
    z = Zonotope(torch.tensor([[1.0, 2.0]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]))
    assert z.lower.tolist() == [[-1.0, 0.0]] and z.upper.tolist() == [[3.0, 4.0]]
    assert z.n_generators == 3 and z.batch_size == 1 and z.shape == (2,)
    lo, hi = z.concretize_linear(torch.tensor([[[1.0, -1.0], [1.0, 1.0]]]))
    assert lo.tolist() == [[-3.0, -1.0]] and hi.tolist() == [[1.0, 7.0]]
    y = z.linear_map(torch.tensor([[1.0, -1.0]]), torch.tensor([0.5]))
    assert y.center.tolist() == [[-0.5]] and y.generators.tolist() == [[[1.0], [-1.0], [0.0]]]
    padded = z.pad_generators(5)
    assert padded.n_generators == 5 and padded.lower.tolist() == z.lower.tolist()


def test_from_box_has_one_generator_per_nonzero_width_coordinate() -> None:
    lower = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    z = Zonotope.from_box(lower, torch.tensor([[1.0, 1.0, 3.0], [0.0, 1.0, 2.5]]))
    assert z.n_generators == 2
    assert z.center.tolist() == [[0.5, 1.0, 2.5], [0.0, 1.0, 2.25]]
    assert z.generators.tolist() == [[[0.5, 0.0, 0.0], [0.0, 0.0, 0.5]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.25]]]


# ---------------------------------------------------------------- hand-computed transformers

def test_relu_minimal_area_on_minus_one_three() -> None:
    # x = 1 + 2 e0; lambda = 3/4, mu = 3/8: y = 1.125 + 1.5 e0 + 0.375 e1, in [-0.75, 3]
    z = output_state(one_node(Relu(), (1,)), box_of([-1], [3]))
    assert z.center.tolist() == [[1.125]]
    assert z.generators.tolist() == [[[1.5], [0.375]]]
    assert z.lower.tolist() == [[-0.75]] and z.upper.tolist() == [[3.0]]


def test_relu_stable_neurons_are_exact_without_new_generators() -> None:
    z = output_state(one_node(Relu(), (2,)), box_of([1, -2], [2, -1]))
    assert z.n_generators == 2
    assert z.center.tolist() == [[1.5, 0.0]] and z.generators.tolist() == [[[0.5, 0.0], [0.0, 0.0]]]


def test_relu_two_two_one_net_hand_computed() -> None:
    # h = (x1 + x2, x1 - x2) in [-2, 2]^2; each relu: h/2 + 1/2 + 1/2 e; sum = x1 + 1 + e2/2 + e3/2
    net = build((2,), [("h", Linear(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.zeros(2)), ("x",)),
                       ("r", Relu(), ("h",)), ("y", Linear(torch.tensor([[1.0, 1.0]]), torch.zeros(1)), ("r",))])
    r = run(net, box_of([-1, -1], [1, 1]))
    assert r.bounds["r"][0].tolist() == [[-1.0, -1.0]] and r.bounds["r"][1].tolist() == [[2.0, 2.0]]
    assert r.lower.tolist() == [[-1.0]] and r.upper.tolist() == [[3.0]]
    assert r.states["y"].generators.tolist() == [[[1.0], [0.0], [0.5], [0.5]]]
    assert r.domain == "deepz"


def test_sigmoid_degenerate_interval_is_exact() -> None:
    z = output_state(one_node(Sigmoid(), (1,)), box_of([0], [0]))
    assert z.center.tolist() == [[0.5]] and z.n_generators == 0
    assert z.lower.tolist() == [[0.5]] and z.upper.tolist() == [[0.5]]


def test_sigmoid_on_minus_one_one_hand_computed() -> None:
    # lambda = s'(1), mu1 = 1/2, mu2 = (s(1) - s(-1) - 2 lambda) / 2: the bounds are exactly [s(-1), s(1)]
    lam = sigmoid(1) * (1 - sigmoid(1))
    mu2 = (sigmoid(1) - sigmoid(-1) - 2 * lam) / 2
    z = output_state(one_node(Sigmoid(), (1,)), box_of([-1], [1]))
    torch.testing.assert_close(z.center, torch.tensor([[0.5]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.generators, torch.tensor([[[lam], [mu2]]]), atol=1e-5, rtol=0)
    assert z.generators[0, 1, 0] >= mu2  # widened, never narrowed
    torch.testing.assert_close(z.lower, torch.tensor([[sigmoid(-1)]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.upper, torch.tensor([[sigmoid(1)]]), atol=1e-5, rtol=0)


def test_tanh_on_zero_two_hand_computed() -> None:
    # x = 1 + e0; lambda = 1 - tanh(2)^2; f(x) - lambda x in [0, tanh 2 - 2 lambda]
    lam = 1 - math.tanh(2) ** 2
    mu = (math.tanh(2) - 2 * lam) / 2
    z = output_state(one_node(Tanh(), (1,)), box_of([0], [2]))
    torch.testing.assert_close(z.center, torch.tensor([[lam + mu]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.generators, torch.tensor([[[lam], [mu]]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.lower, torch.tensor([[0.0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.upper, torch.tensor([[math.tanh(2)]]), atol=1e-5, rtol=0)


def test_add_and_spec_keep_correlations() -> None:
    # a = x, b = 1 - x: a + b = 1 exactly (the box domain gives [0, 2])
    z = output_state(one_node(Add(), (1,), n_inputs=2), box_of([0], [1]))
    assert z.lower.tolist() == [[1.0]] and z.upper.tolist() == [[1.0]]
    # y = (x, x): y1 - y2 = 0 exactly
    net = one_node(Linear(torch.ones(2, 1), torch.zeros(2)), (1,))
    r = run(net, box_of([-1], [1]), torch.tensor([[1.0, -1.0]]))
    assert r.spec_lower.tolist() == [[0.0]] and r.spec_upper.tolist() == [[0.0]]


def _branches(join: Layer):
    """x in [-1, 1]; a = relu(x), nb = -relu(-x), joined: each branch appends its own symbol."""
    neg = Affine(-torch.ones(1), torch.zeros(1))
    return build((1,), [("a", Relu(), ("x",)), ("n", neg, ("x",)), ("b", Relu(), ("n",)), ("nb", neg, ("b",)),
                        ("j", join, ("a", "nb"))])


def test_dag_branches_get_distinct_generators() -> None:
    # x = e0; a = 1/4 + e0/2 + e1/4; nb = -1/4 + e0/2 - e2/4 (e2, not e1: the second branch's own symbol)
    r = run(_branches(Add()), box_of([-1], [1]))
    assert r.states["a"].generators.tolist() == [[[0.5], [0.25]]]
    assert r.states["nb"].generators.tolist() == [[[0.5], [0.0], [-0.25]]]
    assert r.states["j"].center.tolist() == [[0.0]]
    assert r.states["j"].generators.tolist() == [[[1.0], [0.25], [-0.25]]]
    assert r.lower.tolist() == [[-1.5]] and r.upper.tolist() == [[1.5]]
    r = run(_branches(Concat(0)), box_of([-1], [1]), torch.tensor([[1.0, 1.0]]))
    assert r.states["j"].generators.tolist() == [[[0.5, 0.5], [0.25, 0.0], [0.0, -0.25]]]
    assert r.spec_lower.tolist() == [[-1.5]] and r.spec_upper.tolist() == [[1.5]]


def test_maxpool_dominated_window_is_exact() -> None:
    z = output_state(one_node(MaxPool((1, 2), (1, 2)), (1, 1, 2)),
                     Box(torch.tensor([[[[2.0, 0.0]]]]), torch.tensor([[[[3.0, 1.0]]]])))
    assert z.center.flatten().tolist() == [2.5]
    assert z.generators.flatten().tolist() == [0.5, 0.0]


def test_maxpool_overlapping_window_is_a_fresh_box() -> None:
    z = output_state(one_node(MaxPool((1, 2), (1, 2)), (1, 1, 2)),
                     Box(torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[2.0, 3.0]]]])))
    assert z.center.flatten().tolist() == [2.0]
    assert z.generators.flatten().tolist() == [0.0, 0.0, 1.0]


def test_maxpool_padding_never_wins() -> None:
    z = output_state(one_node(MaxPool((2, 2), (1, 1), (1, 1, 0, 0)), (1, 1, 1)),
                     Box(torch.full((1, 1, 1, 1), -3.0), torch.full((1, 1, 1, 1), -2.0)))
    assert z.lower.flatten().tolist() == [-3.0] and z.upper.flatten().tolist() == [-2.0]


def test_pad_pads_center_with_value_and_generators_with_zero() -> None:
    z = output_state(one_node(Pad((1, 0), 7.0), (1,)), box_of([0], [1]))
    assert z.center.tolist() == [[7.0, 0.5]] and z.generators.tolist() == [[[0.0, 0.5]]]


# ---------------------------------------------------------------- soundness and contract

@pytest.mark.parametrize("name", sorted(NETS))
def test_sound_at_every_node(name: str) -> None:
    net = NETS[name]
    box = random_box(net.input_shape)
    spec = Spec(torch.randn(3, 2, net.n_outputs, generator=torch.Generator().manual_seed(3)), torch.zeros(3, 2),
                torch.tensor([0, 1]))
    r = run(net, box, spec)
    assert set(r.bounds) == set(r.states) == {n.name for n in net}
    xs = samples(box)
    assert_sound(net, r.bounds, xs)
    ys = net.forward(xs.reshape(-1, *net.input_shape)).reshape(3, xs.shape[1], -1)
    assert (spec.values(ys) >= r.spec_lower.unsqueeze(1) - TOL).all()
    assert (spec.values(ys) <= r.spec_upper.unsqueeze(1) + TOL).all()


@pytest.mark.parametrize("layer", [Sigmoid(), Tanh()], ids=["sigmoid", "tanh"])
def test_s_shaped_sound_on_wide_tiny_and_one_sided_intervals(layer: Layer) -> None:
    lower = torch.tensor([[-30.0, -1e-3, 5.0, -8.0, 0.3, 17.0]])
    upper = torch.tensor([[30.0, 1e-3, 5.0 + 1e-6, -7.0, 0.3000001, 17.5]])
    box = Box(lower, upper)
    r = run(one_node(layer, (6,)), box)
    assert_sound(one_node(layer, (6,)), r.bounds, samples(box, n=2000))


@pytest.mark.parametrize("name", sorted(NETS))
def test_zero_width_region_gives_forward(name: str) -> None:
    net = NETS[name]
    x = torch.randn(2, *net.input_shape, generator=torch.Generator().manual_seed(4))
    r = run(net, Box(x, x))
    for node, value in net.forward_all(x).items():
        assert r.states[node].n_generators == 0
        torch.testing.assert_close(r.bounds[node][0], value, atol=TOL, rtol=0)
        torch.testing.assert_close(r.bounds[node][1], value, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", sorted(NETS))
def test_batch_equals_single_runs_chunking_and_inputs_not_mutated(name: str) -> None:
    net = NETS[name]
    box = random_box(net.input_shape, batch=4)
    lower, upper = box.lower.clone(), box.upper.clone()
    spec = Spec(torch.randn(4, 2, net.n_outputs, generator=torch.Generator().manual_seed(6)), torch.rand(4, 2),
                torch.tensor([0, 0]))
    C, d = spec.C.clone(), spec.d.clone()
    whole = run(net, box, spec)
    chunked = run(net, box, spec, max_elements=1)  # one batch element per chunk
    assert torch.equal(box.lower, lower) and torch.equal(box.upper, upper)
    assert torch.equal(spec.C, C) and torch.equal(spec.d, d)
    runs = [(slice(None), chunked)] + [(slice(b, b + 1), run(net, box[b], spec[b])) for b in range(4)]
    for b, other in runs:
        for node, (lo, hi) in other.bounds.items():
            torch.testing.assert_close(lo, whole.bounds[node][0][b], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(hi, whole.bounds[node][1][b], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(other.states[node].lower, lo, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(other.spec_lower, whole.spec_lower[b], atol=1e-6, rtol=1e-6)
        assert other.proven.tolist() == whole.proven[b].tolist()


def test_chunk_size_follows_the_memory_budget() -> None:
    net = NETS["mlp"]
    assert DeepZ(net, DeepZOptions(max_elements=1)).chunk_size(4) == 1
    assert DeepZ(net, DeepZOptions(max_elements=10**9)).chunk_size(4) > 1000


@dataclass(frozen=True, eq=False)
class _Mystery(Layer):
    def forward(self, x: Tensor) -> Tensor:
        return x.abs()


def test_unsupported_op_raises_at_construction() -> None:
    net = build((2,), [("l", Linear(torch.eye(2), torch.zeros(2)), ("x",)), ("m", _Mystery(), ("l",))])
    with pytest.raises(DomainError, match="'deepz' does not support op _Mystery \\(node 'm'\\)"):
        DeepZ(net)


# ---------------------------------------------------------------- real networks

@pytest.mark.skipif(not SHARED.exists(), reason=f"shared data not found at {SHARED}")
@pytest.mark.parametrize(("path", "load", "eps"), REAL, ids=["mnist-256x2", "cifar-convSmall"])
def test_sound_on_real_networks(path: str, load, eps: float) -> None:
    net = load_onnx(SHARED / path)
    x, y = load(2)
    x = net.prepare(x)
    box = linf_ball(x, eps)
    spec = robustness(y, 10)
    r = run(net, box, spec)
    xs = samples(box, n=160)
    assert_sound(net, r.bounds, xs, rel=1e-6)
    ys = net.logits(xs.reshape(-1, *net.input_shape)).reshape(2, xs.shape[1], -1)
    assert (spec.values(ys) >= r.spec_lower.unsqueeze(1) - 1e-4).all()
    # the zonotope at the last ReLU composed with the last layer reproduces the output bounds
    last = net.output
    z = r.states[last.inputs[0]].linear_map(last.layer.weight, last.layer.bias)
    torch.testing.assert_close(z.lower, r.lower.reshape(2, -1), atol=1e-5, rtol=1e-5)
