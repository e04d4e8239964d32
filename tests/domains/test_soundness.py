"""Soundness by sampling, for every domain in DOMAINS (a new domain is covered without new
test code) and for the LP reference: at >= 1,000 points per region (uniform, vertices, the
center and points within 1e-4 of ReLU kinks) every node's value lies within the kept
bounds, the outputs within lower/upper, and C y + d >= spec_lower, up to 1e-5 (1 + |v|).

Networks: random small IR networks over every op (hypothesis, derandomized), a fixed zoo
using every op, the shipped MNIST networks and the shared reference networks (MNIST
eps 0.02, CIFAR eps 2/255, ACAS Xu boxes from VNN-LIB). Every domain must support every
IR op: a DomainError here is a bug, not a skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import Tensor

from domains import DOMAINS, AlphaCrown, AlphaOptions
from domains.lp import LPOptions, LPReference
from networks import load_onnx, shipped
from networks.datasets import load_samples
from networks.ir import Network
from specs.properties import Spec, robustness
from specs.regions import Box, linf_ball
from specs.vnnlib import parse_vnnlib
from tests.domains.netgen import (
    RELU_OPS, Case, assert_sound, cases, make_domain, one_thread, region_for, relu_only, sample_points, zoo,
)

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
DOMAIN_ITEMS = list(DOMAINS.items())
DOMAIN_IDS = list(DOMAINS)
ZOO = zoo()
RANDOM = settings(max_examples=25, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_case(domain, case: Case, label: str, n_uniform: int = 800, n_vertices: int = 200) -> None:
    """Bound the case with keep=True and check every node at sampled points."""
    result = domain.bound(case.region, case.spec, keep=True)
    points = sample_points(case.net, case.region, n_uniform, n_vertices)
    assert_sound(case.net, result, case.spec, points, label=label)


# ------------------------------------------------------------------ random and zoo networks

@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
@RANDOM
@given(case=cases())
def test_sound_on_random_networks(name: str, cls, case: Case) -> None:
    check_case(make_domain(cls, case.net), case, name)


OPTIMIZED_INTERMEDIATES = AlphaOptions(iterations=5, optimize_intermediate=True)


@RANDOM
@given(case=cases())
def test_alpha_crown_optimized_intermediates_sound_on_random_networks(case: Case) -> None:
    check_case(AlphaCrown(case.net, alpha=OPTIMIZED_INTERMEDIATES), case, "alpha-crown, optimized intermediates")


def zoo_case(net_name: str, kind: str, seed: int = 0) -> Case:
    """A zoo network with a batch of three regions of one kind and a random spec."""
    net = ZOO[net_name]
    g = torch.Generator().manual_seed(seed)
    region = Box.concat([region_for(kind, net.input_shape, g, scale) for scale in (0.05, 0.5, 2.0)])
    C = torch.randn(3, 4, net.n_outputs, generator=g)
    return Case(net, region, Spec(C, torch.randn(3, 4, generator=g), torch.tensor([0, 0, 1, 2])))


@pytest.mark.parametrize("kind", ["box", "ball", "patch"])
@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_sound_on_zoo(name: str, cls, net_name: str, kind: str) -> None:
    case = zoo_case(net_name, kind)
    check_case(make_domain(cls, case.net), case, f"{name} on {net_name}/{kind}")


# ------------------------------------------------------------------ the LP reference

LP_CASES = dict(ops=RELU_OPS, max_blocks=3, max_width=6, max_side=4, max_batch=2)


@pytest.mark.parametrize("intermediate", ["lp", "crown"])
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(**LP_CASES))
def test_lp_sound_on_random_relu_networks(intermediate: str, case: Case) -> None:
    check_case(LPReference(case.net, LPOptions(intermediate=intermediate)), case, f"lp/{intermediate}")


@pytest.mark.parametrize("intermediate", ["lp", "crown"])
@pytest.mark.parametrize("net_name", [k for k, net in ZOO.items() if relu_only(net)])
def test_lp_sound_on_zoo(net_name: str, intermediate: str) -> None:
    case = zoo_case(net_name, "box")
    check_case(LPReference(case.net, LPOptions(intermediate=intermediate)), case, f"lp/{intermediate} on {net_name}")


# ------------------------------------------------------------------ real networks

def mnist(n: int) -> tuple[Tensor, Tensor]:
    """The first n shipped MNIST test images (n, 1, 28, 28) in [0, 1] and their labels."""
    images, labels = load_samples()
    return torch.from_numpy(images[:n]), torch.from_numpy(labels[:n])


def cifar(n: int) -> tuple[Tensor, Tensor]:
    """The first n CIFAR-10 test images from the shared CSV, (n, 3, 32, 32) in [0, 1]."""
    data = np.loadtxt(SHARED / "data/cifar10/cifar10_test_first100.csv", delimiter=",", max_rows=n)
    x = torch.tensor(data[:, 1:], dtype=torch.float32).reshape(n, 32, 32, 3).permute(0, 3, 1, 2) / 255
    return x.contiguous(), torch.tensor(data[:, 0], dtype=torch.long)


def ball_case(net: Network, load: Callable[[int], tuple[Tensor, Tensor]], n: int, eps: float) -> Case:
    """eps-balls (clipped to [0, 1]) around n real images, robustness spec on the true labels."""
    x, y = load(n)
    x = net.prepare(x.reshape(n, -1) if tuple(x.shape[1:]) != net.input_shape else x)
    return Case(net, linf_ball(x, eps), robustness(y, net.n_outputs))


MNISTFC = SHARED / "benchmarks/vnncomp2021/mnistfc"
ACASXU = SHARED / "benchmarks/vnncomp2021/acasxu"
REAL_BALLS = [  # (id, path, loader, images, eps, shared?)
    ("mnist_mlp", lambda: shipped("mnist_mlp"), mnist, 3, 0.02, False),
    ("mnist_conv", lambda: shipped("mnist_conv"), mnist, 2, 0.02, False),
    ("mnist_5v6", lambda: shipped("mnist_5v6"), mnist, 3, 0.02, False),
    ("mnistfc-256x2", lambda: MNISTFC / "mnist-net_256x2.onnx", mnist, 3, 0.02, True),
    ("mnistfc-256x4", lambda: MNISTFC / "mnist-net_256x4.onnx", mnist, 3, 0.02, True),
    ("mnistfc-256x6", lambda: MNISTFC / "mnist-net_256x6.onnx", mnist, 3, 0.02, True),
    ("profit-mnist_0.1", lambda: SHARED / "networks/profit/mnist_0.1.onnx", mnist, 2, 0.02, True),
    ("cifar-convSmallRELU", lambda: SHARED / "networks/profit/convSmallRELU__Point.onnx", cifar, 2, 2 / 255, True),
]


@pytest.mark.parametrize(("net_id", "path", "load", "n", "eps", "shared"), REAL_BALLS, ids=[r[0] for r in REAL_BALLS])
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_sound_on_real_networks(name: str, cls, net_id: str, path, load, n: int, eps: float, shared: bool) -> None:
    if shared and not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    net = load_onnx(path())
    if net.n_outputs == 2:  # mnist_5v6: a 5-vs-6 classifier, images of those digits only
        x, y = mnist(100)
        keep = (y == 5) | (y == 6)
        x, y = x[keep][:n], (y[keep][:n] == 6).long()
        case = Case(net, linf_ball(net.prepare(x), eps), robustness(y, 2))
    else:
        case = ball_case(net, load, n, eps)
    check_case(make_domain(cls, net), case, f"{name} on {net_id}", n_uniform=1000, n_vertices=250)


@needs_shared
def test_alpha_crown_optimized_intermediates_sound_on_deep_mlp() -> None:
    net = load_onnx(MNISTFC / "mnist-net_256x6.onnx")
    case = ball_case(net, mnist, 3, 0.02)
    check_case(AlphaCrown(net, alpha=OPTIMIZED_INTERMEDIATES), case, "alpha-crown, optimized intermediates",
               n_uniform=1000, n_vertices=250)


ACAS_NETS = ["1_1", "2_3", "4_5", "5_9"]


@needs_shared
@pytest.mark.parametrize("acas", ACAS_NETS)
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_sound_on_acasxu_vnnlib_boxes(name: str, cls, acas: str) -> None:
    net = load_onnx(ACASXU / f"ACASXU_run2a_{acas}_batch_2000.onnx")
    boxes = [p.box for prop in range(1, 5) for p in parse_vnnlib(ACASXU / f"prop_{prop}.vnnlib", 5, 5)]
    region = Box(net.prepare(torch.cat([b.lower for b in boxes])), net.prepare(torch.cat([b.upper for b in boxes])))
    C = torch.eye(5)[:1] - torch.eye(5)[1:]  # y_0 - y_j, a bare C matrix
    spec = Spec(C.expand(region.batch_size, -1, -1), torch.zeros(region.batch_size, 4), torch.arange(4))
    check_case(make_domain(cls, net), Case(net, region, spec), f"{name} on ACAS Xu {acas}",
               n_uniform=1000, n_vertices=250)
