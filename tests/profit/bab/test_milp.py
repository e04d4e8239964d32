"""MILP tightening and the racing MILP (profit.bab.milp) against an independent exact MILP.

Reference: per-neuron min and max of each pre-activation over the box, by a cvxpy big-M
model with interval-arithmetic constants (a formulation of its own, solved to optimality).
Tightened bounds must contain the exact range (soundness) and lie within the bounds they
started from; neurons they call stable must be stable in the reference.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

from domains.crown import optimized_bounds
from networks import load_onnx
from networks.export import to_onnx
from profit.attacks import AttackOptions
from profit.bab import BabOptions, Counterexample, Proven, check
from profit.bab import milp
from profit.bab.milp import Chain, MilpOptions, MilpRace, tighten
from specs.properties import Spec
from specs.regions import Box


def _mlp(sizes: list[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _exact_ranges(model: nn.Sequential, lower: np.ndarray, upper: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact (min, max) of every pre-activation of every ReLU layer over the box."""
    ranges = []
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for k in range(len(linears) - 1):
        x = cp.Variable(len(lower))
        cons = [x >= lower, x <= upper]
        a, lo, hi = x, lower, upper
        for i, layer in enumerate(linears[:k + 1]):
            W = layer.weight.detach().double().numpy()
            b = layer.bias.detach().double().numpy()
            c, r = (lo + hi) / 2, (hi - lo) / 2
            z = W @ a + b
            lo, hi = W @ c + b - np.abs(W) @ r, W @ c + b + np.abs(W) @ r
            if i == k:
                break
            y, delta = cp.Variable(len(lo)), cp.Variable(len(lo), boolean=True)
            lo_c, hi_c = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            cons += [y >= 0, y >= z, y <= cp.multiply(hi_c, delta), y <= z - cp.multiply(lo_c, 1 - delta)]
            a, lo, hi = y, np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        w = cp.Parameter(len(lo))
        problem = cp.Problem(cp.Minimize(w @ z), cons)
        mins, maxs = [], []
        for j in range(len(lo)):
            for sign, out in ((1.0, mins), (-1.0, maxs)):
                w.value = sign * np.eye(len(lo))[j]
                problem.solve(solver=cp.HIGHS, warm_start=False)
                assert problem.status == cp.OPTIMAL
                out.append(sign * problem.value)
        ranges.append((np.array(mins), np.array(maxs)))
    return ranges


def _net(tmp_path: Path, model: nn.Sequential, n_in: int, name: str):
    to_onnx(model, (n_in,), tmp_path / f"{name}.onnx")
    return load_onnx(tmp_path / f"{name}.onnx")


def test_chain_reproduces_the_network(tmp_path: Path) -> None:
    model = _mlp([5, 7, 6, 3], seed=0)
    net = _net(tmp_path, model, 5, "mlp")
    chain = Chain.of(net)
    assert chain is not None and len(chain.names) == 2
    x = torch.randn(50, 5, dtype=torch.float64)
    a = x.numpy()
    for W, b in zip(chain.weights[:-1], chain.biases[:-1]):
        a = np.maximum(a @ W.T + b, 0.0)
    y = a @ chain.weights[-1].T + chain.biases[-1]
    np.testing.assert_allclose(y, model.double()(x).detach().numpy(), atol=1e-10)


def test_chain_refuses_other_ops(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2))
    assert Chain.of(_net(tmp_path, model, 3, "sig")) is None


@pytest.mark.parametrize("seed", range(3))
def test_tightened_bounds_contain_the_exact_range(tmp_path: Path, seed: int) -> None:
    """Random 3-hidden-layer MLPs: every tightened bound contains the exact min/max, lies within
    CROWN's, and at least one neuron overall is tightened (the test can tell tightening apart
    from returning the input)."""
    rng = np.random.default_rng(seed)
    model = _mlp([3, 10, 10, 10, 2], seed=seed)
    net = _net(tmp_path, model, 3, f"mlp{seed}")
    center, radius = rng.uniform(-1, 1, 3), rng.uniform(0.5, 1.0, 3)
    box = Box(torch.tensor(center - radius).float().reshape(1, 3), torch.tensor(center + radius).float().reshape(1, 3))
    chain = Chain.of(net)
    bounds = optimized_bounds(net, box)
    relus = {k: bounds[k] for k in chain.names}
    tightened, stats = tighten(net, chain, box, relus, MilpOptions(layers=2, far_sides=True),
                               until=time.perf_counter() + 60)
    exact = _exact_ranges(model, box.lower[0].double().numpy(), box.upper[0].double().numpy())
    gained = 0.0
    for name, (lo, hi) in zip(chain.names, exact):
        l, u = (t.reshape(-1).double().numpy() for t in tightened[name])
        l0, u0 = (t.reshape(-1).double().numpy() for t in relus[name])
        assert np.all(l <= lo + 1e-6) and np.all(u >= hi - 1e-6), name
        assert np.all(l >= l0) and np.all(u <= u0), name
        gained += float((l - l0).sum() + (u0 - u).sum())
    assert gained > 0, stats


def test_tiny_time_limit_still_gives_sound_bounds(tmp_path: Path) -> None:
    model = _mlp([3, 8, 8, 8, 2], seed=7)
    net = _net(tmp_path, model, 3, "tiny")
    box = Box(-torch.ones(1, 3), torch.ones(1, 3))
    chain = Chain.of(net)
    bounds = optimized_bounds(net, box)
    relus = {k: bounds[k] for k in chain.names}
    tightened, _ = tighten(net, chain, box, relus, MilpOptions(neuron_seconds=1e-3, far_sides=True),
                           until=time.perf_counter() + 0.2)
    exact = _exact_ranges(model, -np.ones(3), np.ones(3))
    for name, (lo, hi) in zip(chain.names, exact):
        l, u = (t.reshape(-1).double().numpy() for t in tightened[name])
        assert np.all(l <= lo + 1e-6) and np.all(u >= hi - 1e-6)


def _race_problem(tmp_path: Path, shift: float):
    model = _mlp([2, 8, 8, 3], seed=3)
    net = _net(tmp_path, model, 2, "race")
    box = Box(-torch.ones(1, 2), torch.ones(1, 2))
    x = box.sample(20000, torch.Generator().manual_seed(0))[0]
    with torch.no_grad():
        y = net(x)
    # rows y0 - y1 + d and y0 - y2 + d, one clause each, d moving the exact minimum to `shift`
    lowest = float((y[:, 0] - y[:, 1]).min())
    C = torch.tensor([[[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]])
    d = torch.tensor([[shift - lowest, 10.0 - float((y[:, 0] - y[:, 2]).min())]])
    return net, box, Spec(C, d, torch.arange(2))


@pytest.mark.parametrize("shift", [0.3, -0.3], ids=["holds", "violated"])
def test_race_alone_agrees_with_branch_and_bound(tmp_path: Path, shift: float) -> None:
    net, box, spec = _race_problem(tmp_path, shift)
    chain = Chain.of(net)
    bounds = optimized_bounds(net, box)
    race = MilpRace(chain, box, {k: bounds[k] for k in chain.names}, spec, [0, 1], MilpOptions(),
                    time.perf_counter() + 30)
    found = []

    def confirm(x: torch.Tensor):
        with torch.no_grad():
            margin = float(spec.margin(net(x))[0])
        found.append(margin)
        return "cex" if margin <= 0 else None

    try:
        answer = None
        for _ in range(3000):
            answer = race.poll(confirm)
            if answer is not None or race.given_up:
                break
            time.sleep(0.01)
    finally:
        race.close()
    expected = check(net, box, spec, timeout=30, options=BabOptions(mode="relu", milp=None))
    assert isinstance(expected, Proven if shift > 0 else Counterexample)
    assert answer == ("proven" if shift > 0 else "cex")


def test_race_is_stopped_and_leaves_no_process(tmp_path: Path) -> None:
    """A race that cannot finish (a 3x60 net, wide box, long timeout) is killed by close()."""
    model = _mlp([20, 60, 60, 60, 10], seed=1)
    net = _net(tmp_path, model, 20, "slow")
    box = Box(-torch.ones(1, 20), torch.ones(1, 20))
    chain = Chain.of(net)
    bounds = optimized_bounds(net, box)
    spec = Spec(torch.eye(10)[None, :9] - torch.eye(10)[None, 9:10], torch.zeros(1, 9), torch.zeros(9, dtype=torch.long))
    race = MilpRace(chain, box, {k: bounds[k] for k in chain.names}, spec, [0], MilpOptions(),
                    time.perf_counter() + 600)
    pid = race.process.pid
    time.sleep(0.5)
    assert race.process.is_alive()
    started = time.perf_counter()
    race.close()
    assert time.perf_counter() - started < 2.0
    assert not race.process.is_alive()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert pid not in [p.pid for p in mp.active_children()]


def test_check_with_milp_leaves_no_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full check that goes straight to tightening and the race (after=0): the right answer,
    both parts ran, and no child process is left behind."""
    net, box, spec = _race_problem(tmp_path, 0.02)
    ran = []
    tighten_ = milp.tighten
    race_ = milp.MilpRace.__init__
    monkeypatch.setattr(milp, "tighten", lambda *a, **k: ran.append("tighten") or tighten_(*a, **k))
    monkeypatch.setattr(milp.MilpRace, "__init__", lambda self, *a, **k: ran.append("race") or race_(self, *a, **k))
    before = {p.pid for p in mp.active_children()}
    options = BabOptions(mode="relu", attack=AttackOptions(steps=5, restarts=1), milp=MilpOptions(after=0.0))
    outcome = check(net, box, spec, timeout=30, options=options)
    assert isinstance(outcome, Proven)
    assert ran == ["tighten", "race"]
    assert {p.pid for p in mp.active_children()} <= before
    assert not milp._JOB
