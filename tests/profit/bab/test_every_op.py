"""Branch and bound over every IR op: no crash, no contradiction, every answer backed.

On the domain zoo (every op and option: Conv, BatchNorm-like Affine, MaxPool, AvgPool, Pad,
Sigmoid, Tanh, Transpose, Concat, residual Add) and on pure Sigmoid/Tanh MLPs and a MaxPool
conv net, `check` runs in each mode (input splitting, ReLU splitting, auto) on eps-balls:

- it never raises (the KeyError of issue 14 came from ReLU splitting on such nets);
- a Counterexample lies in the region and violates the spec in float64;
- Proven survives 2,000 sampled points and a PGD run (float64, no violation);
- the modes never disagree (one Proven and another Counterexample on the same problem).
"""

from __future__ import annotations

import pytest
import torch

from networks.ir import MaxPool, Network, Relu, Reshape, Sigmoid, Tanh
from profit.attacks import AttackOptions, pgd
from profit.bab import BabOptions, Counterexample, Proven, Unknown, check
from specs.properties import Spec, robustness
from specs.regions import Box
from tests.domains.netgen import _Builder, zoo

MODES = ("input", "relu", "auto")
TIMEOUT = 1.5


def _mlp(seed: int, activation: type, n_in: int = 6) -> Network:
    b = _Builder(torch.Generator().manual_seed(seed), (n_in,))
    for width in (10, 10):
        b.add(b.linear(width))
        b.add(activation())
    b.add(b.linear(3))
    return b.network()


def _maxpool_conv(seed: int) -> Network:
    b = _Builder(torch.Generator().manual_seed(seed), (1, 6, 6))
    b.add(b.conv(3, 3, pads=(1, 1, 1, 1)))
    b.add(MaxPool((2, 2), (2, 2), (0, 0, 0, 0)))
    b.add(b.conv(2, 2))
    b.add(Relu())
    b.add(Reshape((-1,)))
    b.add(b.linear(3))
    return b.network()


def _nets() -> dict[str, Network]:
    nets = dict(zoo())
    nets.update(sigmoid=_mlp(5, Sigmoid), tanh=_mlp(6, Tanh), maxpool=_maxpool_conv(7),
                sigmoid40=_mlp(3, Sigmoid, n_in=40))
    return nets


NETS = _nets()


def _problem(net: Network, seed: int, eps: float) -> tuple[Box, Spec]:
    x = torch.rand(1, *net.input_shape, generator=torch.Generator().manual_seed(seed))
    label = int(net(x).argmax())
    return Box(x - eps, x + eps), robustness(torch.tensor([label]), net.n_outputs)


def _violated(net: Network, spec: Spec, points: torch.Tensor) -> torch.Tensor:
    """Whether the float64 outputs at each point violate the spec (batch 1), bool (N,)."""
    y = net.to(torch.float64)(points.double()).reshape(len(points), -1)
    rows = y @ spec.C[0].double().T + spec.d[0].double()  # (N, m)
    per_clause = torch.full((len(points), spec.n_clauses), -torch.inf, dtype=torch.float64)
    per_clause = per_clause.scatter_reduce(1, spec.clause.expand_as(rows), rows, "amax", include_self=False)
    return per_clause.amin(1) <= 0


def _sample(region: Box, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *region.lower.shape[1:], generator=g, dtype=torch.float64)
    return region.lower.double() + u * (region.upper - region.lower).double()


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_every_mode_answers_soundly(name: str, eps: float) -> None:
    net = NETS[name]
    region, spec = _problem(net, seed=len(name), eps=eps)
    answers = {}
    for mode in MODES:
        outcome = check(net, region, spec, timeout=TIMEOUT, options=BabOptions(mode=mode))
        assert isinstance(outcome, (Proven, Counterexample, Unknown)), (mode, outcome)
        answers[mode] = type(outcome).__name__
        if isinstance(outcome, Counterexample):
            x = outcome.x.reshape(region.lower.shape).double()
            assert bool(((x >= region.lower - 1e-6) & (x <= region.upper + 1e-6)).all()), mode
            assert bool(_violated(net, spec, x).all()), f"{mode}: the counterexample satisfies the spec"
        if isinstance(outcome, Proven):
            points = _sample(region, 2000, seed=1)
            assert not bool(_violated(net, spec, points).any()), f"{mode}: proven, but a sample violates"
            found, _ = pgd(net, region, spec, AttackOptions(steps=50, restarts=5, seed=3))
            assert not bool(_violated(net, spec, found.double()).any()), f"{mode}: proven, but PGD violates"
        if isinstance(outcome, Unknown):
            assert outcome.reason, mode
    assert not {"Proven", "Counterexample"} <= set(answers.values()), answers


def test_relu_free_network_splits_inputs() -> None:
    """A pure Sigmoid MLP with 40 inputs (auto would pick ReLU splitting by input size) splits
    inputs; asked for ReLU splitting, it answers with a reason instead of failing."""
    net = NETS["sigmoid40"]
    region, spec = _problem(net, seed=1, eps=0.2)
    auto = check(net, region, spec, timeout=TIMEOUT)
    relu = check(net, region, spec, timeout=TIMEOUT, options=BabOptions(mode="relu"))
    assert auto.stats.mode in ("input", "attack")
    assert isinstance(relu, (Proven, Counterexample)) or "relaxed" in relu.reason, relu
