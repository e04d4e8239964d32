"""Learned conflicts (profit.bab.conflicts) in ReLU-splitting BaB: the matching and the
store's policy, and soundness: learned conflicts are proven on their own (exact MILP with
the conflict's phases fixed; every sampled point of their regions satisfies the spec),
and BaB with conflicts gives the exact MILP's verdict while pruning subdomains (the
>= 200 random properties of test_bab.py also run ReLU splitting with conflicts on).
"""

from __future__ import annotations

from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

from domains.crown import relu_inputs
from networks import load_onnx
from networks.export import to_onnx
from profit.attacks import AttackOptions
from profit.bab import BabOptions, Proven, check
from profit.bab import conflicts as conflicts_module
from profit.bab.conflicts import Conflicts, budgeted, drop_each, phase_slopes
from specs.properties import robustness
from specs.regions import Box, linf_ball


def _int8(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int8)


def test_a_superset_of_a_conflict_is_pruned_a_contradiction_is_not() -> None:
    store = Conflicts(5, capacity=8)
    store.add(_int8([[1, 0, -1, 0, 0]]))
    children = _int8([
        [1, 0, -1, 0, 0],  # the conflict itself
        [1, 1, -1, -1, 0],  # a superset
        [1, 0, 1, 0, 0],  # contradicts the conflict's second split
        [1, 0, 0, 0, 0],  # a strict subset: not implied
        [0, 0, 0, 0, 0],
        [-1, 0, -1, 0, 1],  # contradicts the first
    ])
    assert store.matches(children).tolist() == [True, True, False, False, False, False]
    assert store.prune(children).tolist() == [2, 3, 4, 5]
    assert store.hits == 2


def test_the_store_keeps_only_minimal_conflicts_and_the_smallest_over_capacity() -> None:
    store = Conflicts(4, capacity=2)
    assert store.add(_int8([[1, -1, 0, 0], [1, -1, 0, 0], [1, -1, 1, 0]])) == 1  # duplicate and superset dropped
    assert store.clauses.tolist() == [[1, -1, 0, 0]]
    assert store.add(_int8([[1, 0, 0, 0]])) == 1  # a subset replaces its superset
    assert store.clauses.tolist() == [[1, 0, 0, 0]]
    assert store.add(_int8([[-1, 1, 1, 0], [-1, 1, 0, 0], [0, 0, -1, 1]])) == 1
    assert store.clauses.tolist() == [[1, 0, 0, 0], [0, 0, -1, 1]]  # capacity 2: the smallest, newest first
    assert store.add(_int8([[0, -1, 0, 0]])) == 1  # a size tie: the newest is kept
    assert store.clauses.tolist() == [[1, 0, 0, 0], [0, -1, 0, 0]]
    assert store.add(_int8([[1, 1, 1, 1]])) == 0  # contains a stored conflict
    assert store.learned == 4


def test_candidate_helpers() -> None:
    splits = _int8([[1, -1, 0, 1], [0, 0, -1, 0]])
    variants, owner, dropped = drop_each(splits)
    assert variants.tolist() == [[0, -1, 0, 1], [1, 0, 0, 1], [1, -1, 0, 0], [0, 0, 0, 0]]
    assert owner.tolist() == [0, 0, 0, 1] and dropped.tolist() == [0, 1, 3, 2]
    inf = float("inf")
    loss = torch.tensor([[0.3, -0.1, inf, 0.2], [inf, inf, 0.5, inf]])
    out = budgeted(splits, loss, torch.tensor([0.25, 0.4]))
    assert out.tolist() == [[1, 0, 0, 0], [0, 0, -1, 0]]  # -0.1 (counted 0) and 0.2 fit in 0.25
    alpha = torch.full((1, 2, 4), 0.5)
    slopes = phase_slopes(alpha, splits[:1], _int8([[1, 0, 0, 0]]))
    assert slopes[0, 0].tolist() == [0.5, 0.0, 0.5, 1.0]  # freed inactive -> 0, freed active -> 1


# ------------------------------------------------------------- soundness, end to end

def _net(tmp_path: Path, seed: int) -> tuple[nn.Sequential, object]:
    torch.manual_seed(seed)
    sizes = [6, 16, 16, 16, 3]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    to_onnx(model, (6,), tmp_path / f"net{seed}.onnx")
    return model, load_onnx(tmp_path / f"net{seed}.onnx")


def _milp_min(model: nn.Sequential, box: Box, row: np.ndarray, phases: np.ndarray) -> float:
    """Exact min over the box of row . y(x) with ReLU input j fixed active (phases_j = 1)
    or inactive (-1) where phases_j != 0 (big-M, HiGHS); +inf when that set is empty."""
    lower, upper = box.lower[0].double().numpy(), box.upper[0].double().numpy()
    x = cp.Variable(len(lower))
    cons = [x >= lower, x <= upper]
    a, lo, hi, offset = x, lower, upper, 0
    for layer in model:
        if isinstance(layer, nn.Linear):
            W, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
            center, radius = (lo + hi) / 2, (hi - lo) / 2
            a = W @ a + b
            lo, hi = W @ center + b - np.abs(W) @ radius, W @ center + b + np.abs(W) @ radius
            continue
        n = len(lo)
        y, delta = cp.Variable(n), cp.Variable(n, boolean=True)
        lo_c, hi_c = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        cons += [y >= 0, y >= a, y <= cp.multiply(hi_c, delta), y <= a - cp.multiply(lo_c, 1 - delta)]
        fixed = phases[offset:offset + n]
        for j in np.nonzero(fixed)[0]:
            cons.append(delta[j] == (1 if fixed[j] > 0 else 0))
        offset += n
        a, lo, hi = y, np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    problem = cp.Problem(cp.Minimize(row @ a), cons)
    problem.solve(solver=cp.HIGHS)
    if problem.status == cp.INFEASIBLE:
        return float("inf")
    assert problem.status == cp.OPTIMAL, problem.status
    return float(problem.value)


CASES = [(1, 0.7), (9, 0.5)]


@pytest.mark.parametrize("seed,eps", CASES)
def test_learned_conflicts_are_proven_alone_and_bab_stays_exact(tmp_path: Path, monkeypatch, seed: int,
                                                                eps: float) -> None:
    """Random 6-16-16-16-3 nets on eps-balls that ReLU splitting needs tens to hundreds of
    subdomains for: every conflict it learns is proven on its own region by an exact MILP
    and by sampling; the verdict matches the exact MILP on the whole region; conflicts
    prune subdomains, and the verdict is the same without them."""
    model, net = _net(tmp_path, seed)
    x = torch.rand(1, 6)  # the generator goes on from the weights' seed
    with torch.no_grad():
        label = int(net(x).argmax())
    spec = robustness(torch.tensor([label]), 3)
    box = linf_ball(x, eps)
    learned: list[torch.Tensor] = []
    original = conflicts_module.Conflicts.add
    monkeypatch.setattr(conflicts_module.Conflicts, "add",
                        lambda self, new: learned.append(new.clone()) or original(self, new))
    options = BabOptions(mode="relu", conflicts=True, attack=AttackOptions(steps=10, restarts=2))
    outcome = check(net, box, spec, timeout=60, options=options)
    rows = spec.C[0].double().numpy()
    exact = min(_milp_min(model, box, r, np.zeros(48)) for r in rows)
    assert exact > 0 and isinstance(outcome, Proven), (exact, outcome)
    assert outcome.stats.conflicts > 0 and outcome.stats.pruned > 0, outcome.stats
    without = check(net, box, spec, timeout=60, options=BabOptions(mode="relu", attack=options.attack))
    assert isinstance(without, Proven)
    conflicts = torch.cat(learned)
    assert bool(((conflicts != 0).sum(1) > 0).all())
    g = torch.Generator().manual_seed(seed)
    points = box.sample(20000, g)[0]
    values = net.forward_all(points)
    pre = torch.cat([values[name] for name in relu_inputs(net)], dim=1)
    margin = spec.expand(len(points)).margin(values[net.output.name])
    order = (conflicts != 0).sum(1).argsort(stable=True)
    for k in order[:2].tolist():  # the smallest: the most general claims (an exact MILP takes seconds)
        c = conflicts[k].double().numpy()
        assert min(_milp_min(model, box, r, c) for r in rows) > 0, (k, c)
    inside = ((conflicts.float() @ torch.sign(pre).T) == (conflicts != 0).sum(1, keepdim=True)).T  # (points, K)
    assert bool((margin[inside.any(1)] > 0).all())


def test_deterministic_with_conflicts(tmp_path: Path) -> None:
    """Two runs with conflicts on bound, learn and prune the same."""
    _, net = _net(tmp_path, 1)
    x = torch.rand(1, 6)
    with torch.no_grad():
        label = int(net(x).argmax())
    spec = robustness(torch.tensor([label]), 3)
    options = BabOptions(mode="relu", conflicts=True, attack=AttackOptions(steps=10, restarts=2))
    runs = [check(net, linf_ball(x, 0.7), spec, timeout=60, options=options).stats for _ in range(2)]
    assert [(s.domains, s.batches, s.conflicts, s.pruned) for s in runs[:1]] == \
        [(s.domains, s.batches, s.conflicts, s.pruned) for s in runs[1:]]
    assert runs[0].conflicts > 0
