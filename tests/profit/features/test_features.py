"""Proof features (profit.features): hand-computed priorities and kept sets, the quirk cases of
ProFIt's search, the batched sufficiency checks against literal pruned networks, top-k,
determinism, gradient maps, and the `profit features` CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import domains.base as domains_base
import profit.features.proof as features_module
from domains import DOMAINS, get_domain
from networks import MODELS_DIR, load_onnx
from networks.ir import Input, Linear, Network, Node, Relu
from profit.cli import main
from profit.features import (
    CSV_COLUMNS, FeatureError, ProofFeatures, PruneOptions, masked_network, resolve_layer, summarize,
)
from specs.regions import linf_ball

MNIST_CONV = MODELS_DIR / "mnist_conv.onnx"


def two_layer(W1: list[list[float]], b1: list[float], W2: list[list[float]], b2: list[float]) -> Network:
    """Input -> Linear -> Relu -> Linear, from nested lists."""
    W1t, b1t, W2t, b2t = (torch.tensor(v, dtype=torch.float32) for v in (W1, b1, W2, b2))
    n_in, hidden, n_out = W1t.shape[1], W1t.shape[0], W2t.shape[0]
    return Network((
        Node("x", Input(), (), (n_in,)),
        Node("fc1", Linear(W1t, b1t), ("x",), (hidden,)),
        Node("relu", Relu(), ("fc1",), (hidden,)),
        Node("fc2", Linear(W2t, b2t), ("relu",), (n_out,)),
    ))


# The hand-computed example. x in [0, 1] (the ball around 0.5 with eps 0.5). Hidden neurons:
#   A, B, C, D, F: h = x + 1 in [1, 2]; E: h = relu(-x - 1) = 0 (dead).
# Margin y0 - y1 = C W h + C b with C W = (0.2, 0.3, -0.35, 1.2, 5.0, 0.0), C b = -0.6.
# Priorities max(|l|, |u|) * |C W| = 2 * |C W| = (0.4, 0.6, 0.7, 2.4, 0 (dead), 0 (zero weight)).
# Box (interval arithmetic) lower bound with a kept set S: sum_{i in S} term_i - 0.6 with
# terms A +0.2, B +0.3, C -0.7 (= -0.35 * 2), D +1.2: full 0.4 (proven); removing the lowest-
# priority prefix: A -> 0.2 ok, A,B -> -0.1 fails, A,B,C -> 0.6 ok, all -> -0.6 fails.
HAND = two_layer([[1], [1], [1], [1], [-1], [1]], [1, 1, 1, 1, -1, 1],
                 [[0.2, 0.3, -0.35, 1.2, 5.0, 0.0], [0, 0, 0, 0, 0, 0]], [-0.6, 0.0])
X_HALF = torch.tensor([[0.5]])
LABEL0 = torch.tensor([0])


def _features(net: Network, domain: str = "box", x: torch.Tensor = X_HALF, eps: float = 0.5,
              labels: torch.Tensor = LABEL0, layer: int | str = -1) -> ProofFeatures:
    return ProofFeatures.compute(net, x, labels, eps, domain, layer)


def test_hand_computed_priorities_and_bounds() -> None:
    pf = _features(HAND)
    assert torch.allclose(pf.lower[0], torch.tensor([1, 1, 1, 1, 0, 1.0]))
    assert torch.allclose(pf.upper[0], torch.tensor([2, 2, 2, 2, 0, 2.0]))
    assert torch.allclose(pf.priority("profit")[0], torch.tensor([0.4, 0.6, 0.7, 2.4, 0, 0]))
    assert torch.allclose(pf.priority("weight")[0], torch.tensor([0.2, 0.3, 0.35, 1.2, 5.0, 0]))
    assert pf.margin[0].item() == pytest.approx(0.4, abs=1e-6)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0],
                         [0, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0]], dtype=torch.bool)
    expected = torch.tensor([0.4, 0.2, -0.1, 0.6, -0.6, 0.9])
    assert torch.allclose(pf.checker(0).margins(keep), expected, atol=1e-6)


def test_hand_computed_binary_search_then_greedy() -> None:
    """fanout 1 (binary search): mid 2 fails, mid 1 holds -> suffix {B, C, D}; greedy then drops
    C (B, D: 0.3 + 1.2 - 0.6 > 0) but not D."""
    (p,) = _features(HAND).prune(PruneOptions(fanout=1))
    assert p.proven and p.width == 6 and p.nonzero == 4
    assert p.kept_suffix.tolist() == [3, 2, 1]  # highest priority first
    assert p.kept_greedy.tolist() == [3, 1]
    assert p.kept_margin == pytest.approx(0.9, abs=1e-6)


def test_hand_computed_scan_finds_largest_prefix() -> None:
    """fanout >= n_nz checks every prefix in one call: the largest removable prefix is 3 -> {D}."""
    (p,) = _features(HAND).prune(PruneOptions(fanout=8, confirm=True))
    assert p.kept_suffix.tolist() == [3] and p.kept_greedy.tolist() == [3]
    assert p.kept_margin == pytest.approx(0.6, abs=1e-6)


@pytest.mark.parametrize("domain", ["crown", "deepz", "deeppoly"])
def test_hand_computed_correlated_domains(domain: str) -> None:
    """Relational domains see h = x + 1 in every active neuron, so the margin is min over x of
    s (x + 1) - 0.6 with s the kept sum of C W: every prefix but the last holds, kept {D}."""
    pf = _features(HAND, domain)
    assert pf.margin[0].item() == pytest.approx(1.35 - 0.6, abs=1e-5)
    (p,) = pf.prune(PruneOptions(fanout=1, confirm=True))
    assert p.kept_suffix.tolist() == [3] and p.kept_greedy.tolist() == [3]


def test_quirk_no_nonzero_feature_bias_proves() -> None:
    """n_nz = 0: every feature dead or weightless; the bias alone proves, nothing is kept
    (ProFIt's slicing `[:-0]` mishandled this)."""
    net = two_layer([[-1], [1]], [-2, 0], [[5.0, 0.0], [0.0, 0.0]], [1.0, 0.0])
    (p,) = _features(net).prune(PruneOptions(confirm=True))
    assert p.proven and p.nonzero == 0 and p.kept_greedy.tolist() == [] and p.kept_suffix.tolist() == []


@pytest.mark.parametrize("fanout", [1, 4])
def test_quirk_one_nonzero_feature(fanout: int) -> None:
    """n_nz = 1, needed (ProFIt's loop breaks at mid 0 and never tests it) and not needed."""
    needed = two_layer([[1], [-1]], [1, -2], [[1.0, 0.0], [0.0, 0.0]], [-0.5, 0.0])
    (p,) = _features(needed).prune(PruneOptions(fanout=fanout))
    assert p.nonzero == 1 and p.kept_greedy.tolist() == [0]
    spare = two_layer([[1], [-1]], [1, -2], [[1.0, 0.0], [0.0, 0.0]], [0.5, 0.0])
    (p,) = _features(spare).prune(PruneOptions(fanout=fanout))
    assert p.nonzero == 1 and p.kept_greedy.tolist() == []


@pytest.mark.parametrize("fanout", [1, 4])
def test_quirk_two_features_remove_exactly_one(fanout: int) -> None:
    """n_nz = 2 where exactly one feature can be removed (ProFIt never tests removing 1)."""
    net = two_layer([[1], [1]], [1, 1], [[0.1, 1.0], [0.0, 0.0]], [-0.5, 0.0])
    (p,) = _features(net).prune(PruneOptions(fanout=fanout, confirm=True))
    assert p.nonzero == 2 and p.kept_suffix.tolist() == [1] and p.kept_greedy.tolist() == [1]


def test_quirk_topk_beyond_nonzero_keeps_all() -> None:
    """k > n_nz keeps every non-zero feature (the full proof), for every priority."""
    pf = _features(HAND)
    curves = pf.topk(ks=(1, 2, 4, 5, 20))
    success = curves.proven[:, :, 0]
    assert torch.equal(success[:, 2:], torch.ones(3, 3))
    assert torch.allclose(curves.rel_change[:, 2:, 0], torch.zeros(3, 3), atol=1e-6)
    # profit and weight order D > C > B > A here: top-1 {D}: 1.2 - 0.6 > 0; top-2 {D, C}: -0.1
    assert success[0, 0] == success[1, 0] == 1 and success[0, 1] == success[1, 1] == 0
    assert curves.rel_change[0, 0, 0].item() == pytest.approx(abs(0.4 - 0.6) / 0.4, abs=1e-5)


def test_unproven_property_is_reported_unproven() -> None:
    net = two_layer([[1]], [0], [[-1.0], [0.0]], [0.0, 0.0])
    (p,) = _features(net).prune()
    assert not p.proven and p.calls == 0 and p.kept_greedy.numel() == 0


@pytest.fixture(scope="module")
def conv_features() -> dict[str, ProofFeatures]:
    net = load_onnx(MNIST_CONV)
    from networks.datasets import load_samples
    x, y = load_samples()
    x, y = torch.from_numpy(x[:3]), torch.from_numpy(y[:3])
    return {d: ProofFeatures.compute(net, x, y, 0.02, d) for d in ("box", "deepz", "crown")}


@pytest.mark.parametrize("domain", ["box", "deepz", "crown"])
def test_batched_checks_equal_literal_pruned_networks(conv_features: dict[str, ProofFeatures], domain: str) -> None:
    """The last-layer fast path (interval arithmetic / zonotope composition / augmented
    back-substitution of K candidates at once) gives the margins of a fresh domain run on each
    literally pruned network."""
    pf = conv_features[domain]
    gen = torch.Generator().manual_seed(1)
    keep = torch.rand(6, pf.width, generator=gen) < 0.5
    keep[0] = True
    fast = pf.checker(1).margins(keep)
    region, spec = linf_ball(pf.x[1:2], 0.02), pf.spec[1]
    literal = torch.stack([get_domain(domain)(masked_network(pf.net, pf.node, k)).bound(region, spec).spec_margin[0]
                           for k in keep])
    assert torch.allclose(fast, literal.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("domain", ["box", "deepz", "crown"])
def test_every_kept_set_reverifies(conv_features: dict[str, ProofFeatures], domain: str) -> None:
    pf = conv_features[domain]
    pruned = pf.prune()
    for p in pruned:
        if not p.proven:
            continue
        keep = torch.zeros(p.width, dtype=torch.bool)
        keep[p.kept_greedy] = True
        result = get_domain(domain)(masked_network(pf.net, pf.node, keep)).bound(
            linf_ball(pf.x[p.index:p.index + 1], 0.02), pf.spec[p.index])
        assert bool(result.proven[0])
        assert set(p.kept_greedy.tolist()) <= set(p.kept_suffix.tolist())
        assert bool((pf.priority()[p.index][p.kept_greedy] > 0).all())
    assert summarize(pruned).proven == sum(p.proven for p in pruned)


def test_alpha_crown_batched_check_matches_literal() -> None:
    net = two_layer([[1.0, -1.0], [0.5, 1.0], [-1.0, 0.3]], [0.1, -0.2, 0.3],
                    [[1.0, -0.5, 0.7], [-0.3, 0.4, 0.2]], [0.2, -0.1])
    pf = _features(net, "alpha-crown", x=torch.tensor([[0.5, 0.5]]), eps=0.3)
    keep = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    fast = pf.checker(0).margins(keep)
    literal = torch.stack([DOMAINS["alpha-crown"](masked_network(net, "relu", k)).bound(
        linf_ball(torch.tensor([[0.5, 0.5]]), 0.3), pf.spec[0]).spec_margin[0] for k in keep])
    assert torch.allclose(fast, literal.float(), atol=1e-4)


def test_hidden_layer_pruning_reverifies() -> None:
    """Features at a hidden ReLU before a Conv: the mask is an inserted 0/1 Affine node."""
    net = load_onnx(MNIST_CONV)
    from networks.datasets import load_samples
    x, y = load_samples()
    pf = ProofFeatures.compute(net, torch.from_numpy(x[:1]), torch.from_numpy(y[:1]), 0.01, "deepz", layer=0)
    assert pf.node == resolve_layer(net, 0) and pf.width == 16 * 14 * 14 and not pf.is_last
    (p,) = pf.prune(PruneOptions(max_greedy=4, confirm=True))
    assert p.proven and 0 < len(p.kept_greedy) < p.nonzero


def test_layer_errors() -> None:
    with pytest.raises(FeatureError, match="out of range"):
        resolve_layer(HAND, 3)
    with pytest.raises(FeatureError, match="not a ReLU"):
        resolve_layer(HAND, "fc1")
    with pytest.raises(FeatureError, match="unknown priority"):
        PruneOptions(priority="bogus")


def test_determinism_random_priority() -> None:
    net = two_layer([[1], [1], [1], [1], [1]], [1, 1, 1, 1, 1], [[0.1, 0.2, 0.3, 0.4, 0.5], [0] * 5], [-0.1, 0])
    pf = _features(net)
    assert torch.equal(pf._order(0, "random", 3), pf._order(0, "random", 3))
    orders = {tuple(pf._order(0, "random", s).tolist()) for s in range(6)}
    assert len(orders) > 1
    a = pf.prune(PruneOptions(priority="random", seed=3))[0]
    b = pf.prune(PruneOptions(priority="random", seed=3))[0]
    assert a.kept_greedy.tolist() == b.kept_greedy.tolist() and a.checks == b.checks


@pytest.mark.parametrize("domain", ["box", "crown", "deepz"])
def test_gradient_maps_match_finite_differences(domain: str) -> None:
    """d((l + u) / 2) / dx through the domain, against central differences of the bounds."""
    net = two_layer([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.3]], [0.1, -0.2, 0.3],
                    [[1.0, -0.5, 0.7], [-0.3, 0.4, 0.2]], [0.2, -0.1])
    x = torch.tensor([[0.4, 0.6]])
    pf = _features(net, domain, x=x, eps=0.05)
    features = torch.tensor([0, 1, 2])
    grads = pf.gradients(0, features)
    h = 1e-3

    def mid(z: torch.Tensor) -> torch.Tensor:
        lo, hi = DOMAINS[domain](net).bound(linf_ball(z, 0.05), keep=True).bounds["relu"]
        return ((lo + hi) / 2)[0, features]

    fd = torch.stack([(mid(x + h * e) - mid(x - h * e)) / (2 * h) for e in torch.eye(2)], 1)
    assert torch.allclose(grads, fd, atol=2e-2)


def test_visualize_aggregate_is_priority_weighted_sum() -> None:
    net = load_onnx(MNIST_CONV)
    from networks.datasets import load_samples
    x, y = load_samples()
    pf = ProofFeatures.compute(net, torch.from_numpy(x[:1]), torch.from_numpy(y[:1]), 0.02, "deepz")
    (p,) = pf.prune()
    (maps,) = pf.visualize([p]) if p.proven else pytest.skip("not proven by deepz")
    assert maps.maps.shape == (len(p.kept_greedy), 1, 28, 28)
    assert torch.allclose(maps.aggregate, (maps.priorities.view(-1, 1, 1, 1) * maps.maps).sum(0), atol=1e-6)


def test_features_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, pngs = tmp_path / "rows.csv", tmp_path / "maps"
    code = main(["features", "mnist_conv", "--count", "3", "--domain", "deepz", "--topk", "3",
                 "--out", str(out), "--save-dir", str(pngs)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "proven 3/3" in stdout and "top-k" in stdout
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == 3
    for row in table:
        kept = [int(k) for k in row["kept_indices"].split()]
        assert len(kept) == int(row["kept_greedy"]) <= int(row["kept_suffix"]) <= int(row["nonzero"]) <= 100
    assert (pngs / "img0_aggregate.png").is_file() and (pngs / "img0_overview.png").is_file()


def test_features_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["features", "mnist_conv", "--count", "1", "--layer", "7"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("profit: error:") and "out of range" in err and len(err.splitlines()) == 1


def test_features_cli_defaults_to_the_shipped_network(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "--count", "2"]) == 0
    assert "proven 2/2" in capsys.readouterr().out


@pytest.mark.parametrize("domain", ["box", "deepz", "crown"])
def test_kept_sets_near_zero_are_reproven_in_float64(conv_features: dict[str, ProofFeatures], domain: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With every margin counted as near zero, each kept set is proven afresh in float64 on the
    literal pruned network (and the proofs themselves re-checked): the same sets stand, with
    margins equal to the float32 ones up to rounding."""
    pf = conv_features[domain]
    plain = pf.prune()
    monkeypatch.setattr(features_module, "NEAR_ZERO", float("inf"))
    monkeypatch.setattr(domains_base, "NEAR_ZERO", float("inf"))
    calls = []
    float64 = type(pf.domain).float64
    monkeypatch.setattr(type(pf.domain), "float64", lambda self: calls.append(1) or float64(self))
    again = ProofFeatures(pf.domain, pf.region, pf.spec, pf.result, pf.node, pf.x, pf.eps)
    assert torch.equal(again.proven, pf.proven)
    checked = again.prune()
    for p, q in zip(plain, checked):
        assert p.proven == q.proven and torch.equal(p.kept_greedy, q.kept_greedy)
        if p.proven:
            assert q.kept_margin > 0 and abs(q.kept_margin - p.kept_margin) <= 1e-4 * (1 + abs(p.kept_margin))
    n = sum(p.proven for p in plain)
    assert len(calls) >= (n > 0) + n  # one batched run for the proofs, at least one per kept set
