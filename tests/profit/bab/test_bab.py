"""Complete verification (profit.bab) against an exact MILP, the VNN-COMP consensus,
and its contract: determinism, the timeout, the memory cap; plus soundness by
sampling of the domain machinery it adds (beta-CROWN on split subdomains, forward-mode
and optimised pre-activation bounds, per-region back-substitution rows).

Ground truth on small random networks (<= 3 inputs, <= 20 ReLUs): the exact minimum
over the box of each clause's max row, v_k = min_x max_{i in k} C_i y(x), by a big-M
MILP (cvxpy + HiGHS, ReLU bounds by interval arithmetic in float64). Because
min_x max_i (C_i y + d_i) = v_k + delta when every row of the clause gets d_i = delta,
the properties are built with known margins: d = -v_k + target_k with |target_k| kept
away from 0, so the right verdict is known without a second solve.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from domains import backsub
from domains.crown import (
    BetaOptions, Subdomains, beta_crown, forward_bounds, optimized_bounds, relu_inputs, root_subdomains,
)
from networks import MODELS_DIR, Network, load_onnx
from networks.export import to_onnx
from profit.bab import relu_split as bab_relu
from profit.attacks import AttackOptions
from profit.bab import BabOptions, Counterexample, Proven, Unknown, check, check_problems
from profit.bab.input_split import _clause_alpha, _clause_bounds, with_averages
from profit.data import load_sample
from profit.outcomes import Verdict
from specs.properties import Spec, robustness
from specs.regions import Box, linf_ball, strictly_inside
from specs.vnnlib import parse_vnnlib

ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks" / "vnncomp2021"
RESULTS = ROOT / "results_2021.csv"
FAST = BabOptions(attack=AttackOptions(steps=10, restarts=2), root=BetaOptions(iterations=20))


# ------------------------------------------------------------------- exact MILP

class _Milp:
    """min_x max_i (C_i y(x)) over a box for a Linear/ReLU nn.Sequential, C a Parameter (2, n_out)."""

    def __init__(self, model: nn.Sequential, lower: np.ndarray, upper: np.ndarray) -> None:
        x = cp.Variable(len(lower))
        cons = [x >= lower, x <= upper]
        a, lo, hi = x, lower, upper
        for layer in model:
            if isinstance(layer, nn.Linear):
                W = layer.weight.detach().double().numpy()
                b = layer.bias.detach().double().numpy()
                center, radius = (lo + hi) / 2, (hi - lo) / 2
                a = W @ a + b
                lo, hi = W @ center + b - np.abs(W) @ radius, W @ center + b + np.abs(W) @ radius
            else:
                z, n = a, len(lo)
                y = cp.Variable(n)
                delta = cp.Variable(n, boolean=True)
                lo_c, hi_c = np.minimum(lo, 0.0), np.maximum(hi, 0.0)  # big-M constants
                cons += [y >= 0, y >= z, y <= cp.multiply(hi_c, delta), y <= z - cp.multiply(lo_c, 1 - delta)]
                a, lo, hi = y, np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        self.C = cp.Parameter((2, len(lo)))
        t = cp.Variable()
        self.problem = cp.Problem(cp.Minimize(t), cons + [t >= self.C @ a])

    def min_max(self, rows: np.ndarray) -> float:
        """min over the box of max over `rows` (r <= 2, n_out) of rows . y."""
        self.C.value = np.vstack([rows, rows])[:2]
        self.problem.solve(solver=cp.HIGHS, warm_start=False)  # warm starts re-return stale MILP optima
        assert self.problem.status == cp.OPTIMAL
        return float(self.problem.value)


HIDDEN = ([8, 8], [10, 10], [6, 6, 6], [20], [5, 7, 5])


def _cases(tmp_path: Path, n_nets: int, per_net: int, seed: int = 0, hidden_sizes=HIDDEN):
    """(net, box, spec, true margin, name) for random nets and properties with known margins."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    for i in range(n_nets):
        n_in = int(rng.integers(1, 4))
        hidden = hidden_sizes[i % len(hidden_sizes)]
        n_out = int(rng.integers(2, 4))
        sizes = [n_in] + hidden + [n_out]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers[:-1])
        path = tmp_path / f"net{i}.onnx"
        to_onnx(model, (n_in,), path)
        net = load_onnx(path)
        center = rng.uniform(-1, 1, n_in)
        radius = rng.uniform(0.1, 1.0, n_in)
        box = Box(torch.tensor(center - radius).reshape(1, -1), torch.tensor(center + radius).reshape(1, -1))
        lower, upper = box.lower[0].double().numpy(), box.upper[0].double().numpy()
        milp = _Milp(model, lower, upper)
        with torch.no_grad():
            scale = float(net(box.sample(256)[0]).std()) + 1e-3
        for j in range(per_net):
            n_clauses = int(rng.integers(1, 3))
            rows = [rng.normal(size=(int(rng.integers(1, 3)), n_out)).astype(np.float32) for _ in range(n_clauses)]
            values = [milp.min_max(r.astype(np.float64)) for r in rows]
            unsafe = rng.random() < 0.5
            targets = rng.uniform(0.02, 0.3, n_clauses) * scale
            if unsafe:
                targets[int(rng.integers(n_clauses))] *= -1
            C = torch.tensor(np.concatenate(rows))[None]
            d = torch.tensor(np.concatenate([np.full(len(r), t - v) for r, v, t in zip(rows, values, targets)]))
            clause = torch.cat([torch.full((len(r),), k) for k, r in enumerate(rows)])
            spec = Spec(C, d[None].float(), clause)
            # the rounding of d to float32 moves each margin by at most one ulp of d
            yield net, box, spec, float(targets.min()), f"net{i}/prop{j}"


def _check_verdict(outcome, net, box: Box, spec: Spec, margin: float, name: str) -> None:
    assert not isinstance(outcome, Unknown), (name, outcome)
    if margin > 0:
        assert isinstance(outcome, Proven), (name, margin, outcome)
    else:
        assert isinstance(outcome, Counterexample), (name, margin, outcome)
        assert bool(box.contains(outcome.x.reshape(box.lower.shape))[0])
        with torch.no_grad():
            assert float(spec.margin(net(outcome.x.reshape(1, *net.input_shape)).reshape(1, -1))[0]) <= 0


def test_random_networks_match_exact_milp(tmp_path: Path) -> None:
    """>= 200 random properties: input splitting (auto mode) decides all, never wrongly;
    ReLU splitting (with LP leaves and learned conflicts) on every third, the same."""
    n = 0
    for k, (net, box, spec, margin, name) in enumerate(_cases(tmp_path, n_nets=42, per_net=5)):
        _check_verdict(check(net, box, spec, timeout=30, options=FAST), net, box, spec, margin, name)
        if k % 3 == 0:
            relu = BabOptions(mode="relu", attack=FAST.attack, root=FAST.root, conflicts=True)
            _check_verdict(check(net, box, spec, timeout=30, options=relu), net, box, spec, margin, name + "/relu")
        n += 1
    assert n >= 200


@pytest.mark.parametrize("refine", [False, True], ids=["fixed-bounds", "refined-bounds"])
def test_relu_splitting_decides_fully_split_subdomains_by_lp(tmp_path: Path, monkeypatch, refine: bool) -> None:
    """Without attacks and with plain BaBSR branching, ReLU splitting on small nets reaches
    subdomains with every ReLU fixed (decided by the LP) and still answers correctly."""
    leaves = []
    original = bab_relu._leaf
    monkeypatch.setattr(bab_relu, "_leaf", lambda *args: leaves.append(1) or original(*args))
    options = BabOptions(mode="relu", attack=AttackOptions(steps=0, restarts=1), candidates=1, refine=refine,
                         milp=None)  # no racing MILP: it would decide these before any leaf
    for net, box, spec, margin, name in _cases(tmp_path, 12, 3, seed=1, hidden_sizes=([4, 4], [3, 3, 3])):
        _check_verdict(check(net, box, spec, timeout=30, options=options), net, box, spec, margin, name)
    assert leaves


# ------------------------------------------- the domain machinery BaB relies on

def _random_mlp(sizes: list[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_beta_crown_is_sound_on_split_subdomains(tmp_path: Path) -> None:
    """Random phase constraints on a random MLP: every sampled point satisfying a
    subdomain's splits has C y + d >= beta-CROWN's bound (after optimising alpha, beta)."""
    model = _random_mlp([3, 12, 12, 4], seed=5)
    to_onnx(model, (3,), tmp_path / "mlp.onnx")
    net = load_onnx(tmp_path / "mlp.onnx")
    box = Box(-torch.ones(1, 3), torch.ones(1, 3))
    spec = Spec(torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(1, 3),
                torch.arange(3))
    root = root_subdomains(net, box, spec.n_rows)
    g = torch.Generator().manual_seed(2)
    B = 16
    splits = {k: torch.randint(-1, 2, (B, *v.shape[1:]), generator=g).to(torch.int8)
              * (torch.rand(B, *v.shape[1:], generator=g) < 0.3) for k, v in root.splits.items()}
    bounds = {k: (torch.where(splits[k] > 0, l.clamp(min=0), l).expand(B, -1),
                  torch.where(splits[k] < 0, u.clamp(max=0), u).expand(B, -1)) for k, (l, u) in root.bounds.items()}
    sub = Subdomains(root.lower, root.upper, bounds, splits,
                     {k: a.expand(B, -1, -1).clone() for k, a in root.alpha.items()},
                     {k: b.expand(B, -1, -1).clone() for k, b in root.beta.items()})
    lower = beta_crown(net, sub, spec, BetaOptions(iterations=30)).spec_lower  # (B, m)
    x = box.sample(20000, g)[0]
    values = net.forward_all(x)
    rows = spec.values(values[net.output.name].unsqueeze(0))[0]  # (N, m)
    for b in range(B):
        inside = torch.ones(len(x), dtype=torch.bool)
        for k, s in splits.items():
            z = values[k]
            inside &= ((s[b] > 0) & (z < 0) | (s[b] < 0) & (z > 0)).sum(1) == 0
        if inside.any():
            assert (rows[inside] >= lower[b] - 1e-4).all()


def test_forward_and_optimized_bounds_contain_every_sample(tmp_path: Path) -> None:
    model = _random_mlp([4, 16, 16, 16, 3], seed=6)
    to_onnx(model, (4,), tmp_path / "mlp.onnx")
    net = load_onnx(tmp_path / "mlp.onnx")
    g = torch.Generator().manual_seed(3)
    center = torch.rand(3, 4, generator=g)
    box = Box(center - 0.3, center + 0.3)
    x = box.sample(5000, g)
    for bounds in (forward_bounds(net, box.lower, box.upper), optimized_bounds(net, box, BetaOptions(iterations=10))):
        for k, (l, u) in bounds.items():
            z = net.forward_all(x.reshape(-1, 4))[k].reshape(3, 5000, -1)
            assert (z >= l.unsqueeze(1) - 1e-5).all() and (z <= u.unsqueeze(1) + 1e-5).all(), k
    crown = root_subdomains(net, box, 1).bounds
    tight = optimized_bounds(net, box, BetaOptions(iterations=10))
    for k, (l, u) in tight.items():
        assert (l >= crown[k][0] - 1e-6).all() and (u <= crown[k][1] + 1e-6).all()


def test_per_region_rows_give_the_batch_rows_bounds(tmp_path: Path, monkeypatch) -> None:
    """Many small boxes (input splitting's batches) take the per-region row path of
    back-substitution; each box's bounds equal those of the box bounded alone."""
    calls = []
    original = backsub.node_bounds_per_sample
    monkeypatch.setattr(backsub, "node_bounds_per_sample", lambda *args: calls.append(1) or original(*args))
    model = _random_mlp([5, 30, 30, 30, 5], seed=7)
    to_onnx(model, (5,), tmp_path / "mlp.onnx")
    net = load_onnx(tmp_path / "mlp.onnx")
    g = torch.Generator().manual_seed(4)
    center = torch.rand(64, 5, generator=g) * 2 - 1
    box = Box(center - 0.02, center + 0.02)
    batch = root_subdomains(net, box, 1).bounds
    for b in range(0, 64, 9):
        alone = root_subdomains(net, box[b], 1).bounds
        for k in alone:
            torch.testing.assert_close(batch[k][0][b:b + 1], alone[k][0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch[k][1][b:b + 1], alone[k][1], atol=1e-5, rtol=1e-5)
    assert calls


def test_averaged_rows_keep_the_margin_sign() -> None:
    """Input splitting bounds the spec with averaged rows added to each OR clause: a derived
    row never exceeds the best row of its clause, so the margin's sign is unchanged."""
    g = torch.Generator().manual_seed(8)
    C = torch.randint(-2, 3, (1, 5, 4), generator=g).float() / 2
    spec = Spec(C, torch.randn(1, 5, generator=g), torch.tensor([0, 0, 0, 1, 1]))
    augmented = with_averages(spec)
    assert augmented.n_rows == 5 + 4 and augmented.n_clauses == 2
    y = torch.randn(1, 10000, 4, generator=g)
    original, derived = spec.margin(y), augmented.margin(y)
    assert torch.equal(original > 0, derived > 0)
    torch.testing.assert_close(derived, original, atol=1e-5, rtol=0)  # max_i r_i >= every average
    odd = Spec(torch.tensor([[[1.0, 0.1], [0.3, 1.0]]]), torch.zeros(1, 2), torch.tensor([0, 0]))
    assert with_averages(odd).n_rows == 2  # (0.1 + 1) / 2 is not a float32: no derived row


def test_clause_bounds_are_sound_and_beat_the_best_row() -> None:
    """The weighted combination of an OR clause's linear row bounds never exceeds the exact
    min over the box of max_i (a_i . x + c_i) (an LP), never falls below the best row's
    bound, and proves a clause where each row alone fails in some corner of the box."""
    g = torch.Generator().manual_seed(9)
    k, n = 40, 5
    A = torch.randn(k, 4, n, generator=g)
    lower = torch.rand(k, n, generator=g) - 1
    upper = lower + torch.rand(k, n, generator=g)
    c = torch.randn(k, 4, generator=g) * 0.5
    center, radius = ((lower + upper) / 2).unsqueeze(1), ((upper - lower) / 2).unsqueeze(1)
    rows = (A * center).sum(-1) - (A.abs() * radius).sum(-1) + c
    spec = Spec(torch.randn(k, 4, 3, generator=g), torch.zeros(k, 4), torch.tensor([0, 0, 0, 1]))
    bound = _clause_bounds(spec, rows, A, lower, upper)
    best_row = torch.stack([rows[:, :3].amax(1), rows[:, 3]], 1).double()
    assert (bound >= best_row - 1e-6).all()
    torch.testing.assert_close(bound[:, 1], best_row[:, 1], atol=1e-6, rtol=0)  # one row: nothing to combine
    for i in range(k):
        a, b = A[i, :3].double().numpy(), c[i, :3].double().numpy()
        lp = linprog(np.r_[np.zeros(n), 1.0], A_ub=np.c_[a, -np.ones(3)], b_ub=-b, method="highs",
                     bounds=list(zip(lower[i].tolist(), upper[i].tolist())) + [(None, None)])
        assert float(bound[i, 0]) <= lp.fun + 1e-6
    one = Spec(torch.eye(2).unsqueeze(0), torch.zeros(1, 2), torch.tensor([0, 0]))
    A1 = torch.tensor([[[1.0], [-1.0]]])  # rows x + 0.1 and -x + 0.1 on [-1, 1]: max >= 0.1
    rows1 = torch.tensor([[-0.9, -0.9]])
    assert float(_clause_bounds(one, rows1, A1, -torch.ones(1, 1), torch.ones(1, 1))[0, 0]) > 0.09


def _triangle_lp(model: nn.Sequential, pre: list[tuple[np.ndarray, np.ndarray]], lower: np.ndarray,
                 upper: np.ndarray, C: np.ndarray, d: np.ndarray) -> float:
    """min t s.t. t >= C_i y + d_i over the triangle relaxation of a Linear/ReLU MLP on a
    box, with the given pre-activation bounds pre (l, u) per hidden layer (scipy HiGHS)."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    sizes = [lower.size] + [lin.out_features for lin in linears[:-1]]
    offsets = np.cumsum([0] + sizes)
    n_var = offsets[-1] + 1
    rows, rhs = [], []
    for layer, (lin, (l, u)) in enumerate(zip(linears, pre)):
        W, b = lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()
        unstable, active = (l < 0) & (u > 0), l >= 0
        slope = np.where(unstable, u / np.where(unstable, u - l, 1.0), active.astype(float))
        shift = np.where(unstable, -l * slope, 0.0)
        for sign, scale, extra in ((-1.0, np.ones_like(b), np.zeros_like(b)), (1.0, slope, shift)):
            block = np.zeros((len(b), n_var))  # sign * a - scale * (W a_prev) <= scale * b + extra, or a >= z
            block[:, offsets[layer]:offsets[layer + 1]] = -sign * scale[:, None] * W if sign > 0 else W
            block[np.arange(len(b)), offsets[layer + 1] + np.arange(len(b))] = sign
            rows.append(block)
            rhs.append(scale * b + extra if sign > 0 else -b)
    W, b = linears[-1].weight.detach().double().numpy(), linears[-1].bias.detach().double().numpy()
    block = np.zeros((len(d), n_var))
    block[:, offsets[-2]:offsets[-1]] = C @ W
    block[:, -1] = -1.0
    rows.append(block)
    rhs.append(-(C @ b + d))
    cost = np.zeros(n_var)
    cost[-1] = 1.0
    bounds = list(zip(lower, upper)) + [(0.0, max(float(hi), 0.0)) for _, u in pre for hi in u] + [(None, None)]
    result = linprog(cost, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=bounds, method="highs")
    assert result.status == 0
    return float(result.fun)


def test_clause_alpha_is_sound_and_below_the_triangle_lp(tmp_path: Path) -> None:
    """The jointly optimised (row weights, slopes) bound of each OR clause never exceeds
    the min over sampled points of the clause's max row, nor the LP over the triangle
    relaxation with the same pre-activation bounds (its optimum), and comes close to
    that LP (the offsets d put clause 0's margins near 0, where it keeps optimising;
    clause 1 counts as already proven)."""
    model = _random_mlp([4, 16, 16, 5], seed=10)
    to_onnx(model, (4,), tmp_path / "mlp.onnx")
    net = load_onnx(tmp_path / "mlp.onnx")
    g = torch.Generator().manual_seed(11)
    k = 8
    center = torch.rand(k, 4, generator=g) * 2 - 1
    box = Box(center - 0.2, center + 0.2)
    spec = Spec(torch.randn(1, 4, 5, generator=g), torch.tensor([[0.3, 0.3, 0.3, 0.0]]),
                torch.tensor([0, 0, 0, 1])).expand(k)
    pre = root_subdomains(net, box, spec.n_rows).bounds
    known = torch.tensor([[float("-inf"), float("inf")]]).expand(k, -1)
    bound = _clause_alpha(net, spec, box.lower, box.upper, pre, known, 100, torch.float32)
    x = box.sample(4000, g)
    rows = spec.values(net.logits(x.reshape(-1, 4)).reshape(k, 4000, -1))  # (k, N, m)
    exact = torch.stack([rows[..., :3].amax(-1), rows[..., 3]], -1).amin(1)  # (k, 2) sampled minima
    assert (bound <= exact.double() + 1e-5).all()
    layers = [pre[name] for name in relu_inputs(net)]
    for i in range(k):
        lp = _triangle_lp(model, [(l[i].double().numpy(), u[i].double().numpy()) for l, u in layers],
                          box.lower[i].double().numpy(), box.upper[i].double().numpy(),
                          spec.C[i, :3].double().numpy(), spec.d[i, :3].double().numpy())
        assert float(bound[i, 0]) <= lp + 1e-4
        assert float(bound[i, 0]) >= lp - 5e-3


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    cases = list(_cases(tmp_path, n_nets=3, per_net=2, seed=2))
    for mode in ("input", "relu"):
        options = BabOptions(mode=mode, attack=AttackOptions(steps=5, restarts=2), seed=3)
        for net, box, spec, _, _ in cases:
            a, b = (check(net, box, spec, timeout=30, options=options) for _ in range(2))
            assert type(a) is type(b)
            assert (a.stats.domains, a.stats.batches) == (b.stats.domains, b.stats.batches)
            if isinstance(a, Counterexample):
                assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def _hard_mnist() -> tuple:
    """The shipped MNIST MLP on a wide eps-ball: far more subdomains than seconds allow."""
    net = load_onnx(MODELS_DIR / "mnist_mlp.onnx")
    x, label = load_sample(0, net)
    return net, linf_ball(x, 0.05), robustness(torch.tensor([label]), net.n_outputs)


@pytest.mark.parametrize("timeout", [2.0, 6.0])
def test_timeout_is_respected(timeout: float) -> None:
    net, box, spec = _hard_mnist()
    options = BabOptions(mode="relu", attack=AttackOptions(steps=5, restarts=1))
    start = time.perf_counter()
    outcome = check(net, box, spec, timeout=timeout, options=options)
    elapsed = time.perf_counter() - start
    assert isinstance(outcome, Unknown) and outcome.reason == "timeout", outcome
    assert outcome.verdict is Verdict.TIMEOUT
    assert elapsed <= 1.1 * timeout + 1.5, elapsed


def test_timeout_is_respected_among_lp_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of subdomains with every ReLU fixed goes to one LP pair each, at up to
    0.1 s apiece on mnistfc (a 30 s run once took 42 s): the deadline is checked between
    leaves. Here every child of the root is made a leaf and each leaf takes the whole
    timeout, so without the check the run would take twice as long."""
    net, box, spec = _hard_mnist()
    timeout = 2.0
    decide = bab_relu._Clause.decide
    calls = []

    def leaves_after_root(self, rows, *args):
        calls.append(1)
        picks = decide(self, rows, *args)
        return picks if len(calls) == 1 else torch.full_like(picks, -1)

    def slow_leaf(*args) -> str:
        time.sleep(timeout)
        return "undecided"

    monkeypatch.setattr(bab_relu._Clause, "decide", leaves_after_root)
    monkeypatch.setattr(bab_relu, "_leaf", slow_leaf)
    options = BabOptions(mode="relu", attack=AttackOptions(steps=5, restarts=1), milp=None)
    start = time.perf_counter()
    outcome = check(net, box, spec, timeout=timeout, options=options)
    elapsed = time.perf_counter() - start
    assert isinstance(outcome, Unknown) and outcome.reason == "timeout", outcome
    assert elapsed <= 1.1 * timeout + 1.5, elapsed


def test_memory_cap_gives_unknown_memory() -> None:
    net, box, spec = _hard_mnist()
    for options in (BabOptions(mode="relu", max_domains=4, attack=AttackOptions(steps=5, restarts=1), milp=None),
                    BabOptions(mode="input", max_domains=4, attack=AttackOptions(steps=5, restarts=1))):
        outcome = check(net, box, spec, timeout=120, options=options)
        assert isinstance(outcome, Unknown) and outcome.reason.startswith("memory: "), outcome
        live = int(outcome.reason.split()[1])
        assert outcome.stats.max_live >= live, (outcome.stats, live)  # the last batch's children count too


def test_bad_arguments() -> None:
    net, box, spec = _hard_mnist()
    from profit.errors import ProfitError
    with pytest.raises(ProfitError, match="one region"):
        check(net, Box.concat([box, box]), spec, timeout=1)
    with pytest.raises(ProfitError, match="timeout"):
        check(net, box, spec, timeout=0)
    with pytest.raises(ProfitError, match="mode"):
        BabOptions(mode="sideways")


# ---------------------------------------------------------- VNN-COMP consensus

def _consensus(benchmark: str) -> dict[tuple[str, str], str]:
    with RESULTS.open(newline="") as f:
        return {(r["onnx"], r["vnnlib"]): r["consensus"] for r in csv.DictReader(f) if r["benchmark"] == benchmark}


def _decide(benchmark: str, onnx: str, vnnlib: str, timeout: float):
    net = load_onnx(ROOT / benchmark / onnx)
    n_in = int(np.prod(net.input_shape))
    problems = [(Box(p.box.lower.reshape(1, *net.input_shape), p.box.upper.reshape(1, *net.input_shape)), p.spec)
                for p in parse_vnnlib(ROOT / benchmark / vnnlib, n_inputs=n_in, n_outputs=net.n_outputs)]
    outcome = check_problems(net, problems, timeout=timeout)
    if isinstance(outcome, Counterexample):  # inside a box as written (one float32 step inward)
        x = outcome.x.reshape(1, *net.input_shape)
        assert any(bool(strictly_inside(box)[0].contains(x)[0]) for box, _ in problems)
    return {Proven: "UNSAT", Counterexample: "SAT"}.get(type(outcome), "UNKNOWN")


SAMPLE = [
    ("test", "test_nano.onnx", "test_nano.vnnlib"),
    ("test", "test_tiny.onnx", "test_tiny.vnnlib"),
    ("test", "test_small.onnx", "test_small.vnnlib"),
    ("test", "test_sat.onnx", "test_prop.vnnlib"),
    ("test", "test_unsat.onnx", "test_prop.vnnlib"),
    ("acasxu", "ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"),
    ("acasxu", "ACASXU_run2a_1_2_batch_2000.onnx", "prop_2.vnnlib"),
    ("acasxu", "ACASXU_run2a_2_2_batch_2000.onnx", "prop_2.vnnlib"),
    ("acasxu", "ACASXU_run2a_1_1_batch_2000.onnx", "prop_2.vnnlib"),
    ("acasxu", "ACASXU_run2a_1_6_batch_2000.onnx", "prop_4.vnnlib"),
    ("mnistfc", "mnist-net_256x2.onnx", "prop_0_0.03.vnnlib"),
    ("mnistfc", "mnist-net_256x2.onnx", "prop_2_0.03.vnnlib"),
    ("mnistfc", "mnist-net_256x2.onnx", "prop_0_0.05.vnnlib"),
]


@pytest.mark.skipif(not RESULTS.exists(), reason=f"{RESULTS} not found (shared benchmarks absent)")
@pytest.mark.parametrize("benchmark,onnx,vnnlib", SAMPLE)
def test_vnncomp_sample_matches_consensus(benchmark: str, onnx: str, vnnlib: str) -> None:
    assert _decide(benchmark, onnx, vnnlib, timeout=60) == _consensus(benchmark)[(onnx, vnnlib)]


def _half_vs_last(tmp_path: Path, n_in: int) -> Network:
    """A linear net with logits (0.5, x[-1]): class 0 holds exactly where x[-1] < 0.5."""
    model = nn.Sequential(nn.Linear(n_in, 2))
    with torch.no_grad():
        model[0].weight.zero_()[1, -1] = 1.0
        model[0].bias.copy_(torch.tensor([0.5, 0.0]))
    to_onnx(model, (n_in,), tmp_path / "lin.onnx")
    return load_onnx(tmp_path / "lin.onnx")


def test_one_step_wide_coordinate_keeps_the_other_coordinates_attackable(tmp_path: Path) -> None:
    """x0 is one float32 step wide (a decimal point bound rounded outward), x1 in [0, 1]; the
    counterexamples need x1 > 0.5. The attack region keeps x1's room and puts x0 at one end
    of its step, so the counterexample is found (collapsing the whole box to its lower
    corner left only x1 = 0, which is no counterexample)."""
    net = _half_vs_last(tmp_path, 2)
    tenth = torch.tensor(0.1, dtype=torch.float32)
    lower = torch.tensor([[torch.nextafter(tenth, torch.tensor(0.0)).item(), 0.0]])
    box = Box(lower, torch.tensor([[tenth.item(), 1.0]]))
    outcome = check_problems(net, [(box, robustness(torch.tensor([0]), 2))], timeout=20)
    assert isinstance(outcome, Counterexample), outcome
    assert bool(box.contains(outcome.x.reshape(1, 2))[0]) and float(outcome.x.flatten()[1]) > 0.5


def test_input_splitting_ends_when_no_open_box_can_be_halved(tmp_path: Path) -> None:
    """Every point of a 32-float32-step box violates the spec, but the attack region (one safe
    point outside it) confirms none, so the open boxes are halved down to single floats:
    Unknown, not a crash (the memory cap was computed from the first of zero children)."""
    net = _half_vs_last(tmp_path, 1)
    box = Box(torch.full((1, 1), 0.75), torch.full((1, 1), 0.75 + 32 * 2.0 ** -24))  # float32 steps are 2^-24 here
    safe = torch.full((1, 1), 0.25)
    outcome = check(net, box, robustness(torch.tensor([0]), 2), timeout=30, options=BabOptions(mode="input"),
                    attack_region=Box(safe, safe))
    assert isinstance(outcome, Unknown) and outcome.reason.startswith("precision: 32 boxes"), outcome
