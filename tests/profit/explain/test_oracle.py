"""The explanation oracle, its pieces and the hitting-set wrapper, against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domains.backsub import input_linear_bounds
from profit.errors import ProfitError
from profit.explain import (
    BruteForceOracle, CascadeOracle, OracleOptions, PixelDomain, Problem, Query,
)
from profit.explain.hitting import HittingSets
from profit.outcomes import Verdict
from tests.profit.explain.test_explainer import tiny_net

CONFIGS = {
    "default": OracleOptions(),
    "bounds-and-splitting": OracleOptions(table=0, exhaustive=8),
    "splitting-only": OracleOptions(stages=("search",), table=0, exhaustive=1),
    "bounds-only": OracleOptions(stages=("linear", "box", "crown", "alpha-crown"), table=0),
}


def _problem(tmp_path: Path, seed: int, levels: int, conv: bool = False, margin: float = 0.0) -> Problem:
    net = tiny_net(tmp_path / f"o{seed}.onnx", seed, 8, (8, 6), 3, conv=conv)
    domain = PixelDomain("levels", levels)
    x = domain.values[np.random.default_rng(seed).integers(0, levels, 8)]
    return Problem(net, x, (0, 1, 2, 3, 5, 6, 7), domain, int(seed % 3), margin, net.source)


def _queries(problem: Problem, count: int, seed: int) -> list[Query]:
    rng = np.random.default_rng(seed)
    values = problem.domain.values
    out = []
    for _ in range(count):
        fixed = tuple(float(values[rng.integers(len(values))]) if rng.random() < 0.4 else None
                      for _ in range(problem.n))
        out.append(Query(fixed, bool(rng.random() < 0.5)))
    return out


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("levels,conv", [(2, False), (3, False), (2, True)])
def test_cascade_agrees_with_brute_force(tmp_path: Path, config: str, levels: int, conv: bool) -> None:
    problem = _problem(tmp_path, 3 + levels + conv, levels, conv=conv, margin=0.25)
    truth = BruteForceOracle(problem)
    oracle = CascadeOracle(problem, CONFIGS[config])
    queries = _queries(problem, 60, levels)
    expected = truth.decide(queries)
    got = oracle.decide(queries[:30]) + [oracle.decide([q])[0] for q in queries[30:]]
    for q, want, answer in zip(queries, expected, got):
        if config != "bounds-only":
            assert answer.verdict == want.verdict, (q, answer.stage)
        assert answer.verdict in (want.verdict, Verdict.UNKNOWN)
        if answer.verdict == Verdict.FALSIFIED:
            assert problem.confirm(answer.witness, q.array, q.negate)[0]
            assert answer.stage in ("cache", "enumerate", "attack", "search")
        if answer.verdict == Verdict.VERIFIED:
            assert answer.stage != "attack"
    assert sum(oracle.calls.values()) == len(queries)


def test_stages_and_reuse(tmp_path: Path) -> None:
    """Repeated and weakened queries come from the cache; the all-free linear bound proves
    sub-boxes without propagation."""
    problem = _problem(tmp_path, 7, 2)
    oracle = CascadeOracle(problem, OracleOptions(table=0, exhaustive=1))
    free = Query((None,) * problem.n)
    first = oracle.decide([free, Query(free.fixed, True)])
    again = oracle.decide([free, Query(free.fixed, True)])
    assert [a.verdict for a in again] == [a.verdict for a in first]
    assert {a.stage for a in again} == {"cache"}
    verified = [q for q, a in zip(_queries(problem, 80, 1), oracle.decide(_queries(problem, 80, 1)))
                if a.verdict == Verdict.VERIFIED]
    assert verified
    stronger = [Query(tuple(float(problem.domain.values[0]) if v is None and i == 0 else v
                            for i, v in enumerate(q.fixed)), q.negate) for q in verified]
    assert all(a.verdict == Verdict.VERIFIED for a in oracle.decide(stronger))


def test_input_linear_bounds_are_sound_on_sub_boxes(tmp_path: Path) -> None:
    for conv in (False, True):
        net = tiny_net(tmp_path / f"l{conv}.onnx", 5, 8, (8, 6), 3, conv=conv).to(torch.float64)
        g = torch.Generator().manual_seed(0)
        shape = net.input_shape
        lower = torch.rand(2, *shape, generator=g, dtype=torch.float64) - 1
        upper = lower + torch.rand(2, *shape, generator=g, dtype=torch.float64) * 2
        C = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
        A, b = input_linear_bounds(net, lower, upper, C)
        assert A.shape == (2, 4, *shape) and b.shape == (2, 4)
        u = torch.rand(2, 500, *shape, generator=g, dtype=torch.float64)
        x = lower.unsqueeze(1) + (upper - lower).unsqueeze(1) * u  # points of the box, hence of every sub-box
        y = net.logits(x.reshape(-1, *shape)).reshape(2, 500, 3)
        rows = torch.einsum("bmo,bso->bsm", C, y)
        linear = torch.einsum("bmi,bsi->bsm", A.reshape(2, 4, -1), x.reshape(2, 500, -1)) + b[:, None]
        assert (rows >= linear - 1e-9).all()


def test_keeps_ties_and_margin(tmp_path: Path) -> None:
    net = tiny_net(tmp_path / "t.onnx", 1, 4, (3,), 3)
    x = np.zeros(4)
    make = (lambda c, m: Problem(net, x, (0,), PixelDomain(), c, m))
    y = np.array([[1.0, 1.0, 0.0], [0.0, 0.5, 0.0]])
    assert make(0, 0.0).keeps(y).tolist() == [True, False]  # tie: class 0 (lower index) keeps it
    assert make(1, 0.0).keeps(y).tolist() == [False, True]  # tie lost to class 0
    assert make(0, 0.5).keeps(y).tolist() == [True, True]  # class 1 wins by exactly the margin: not enough
    assert make(0, 0.4).keeps(y).tolist() == [True, False]
    assert make(2, 0.5).keeps(y).tolist() == [False, False]  # 1 - 0 > 0.5; class 1 < 2 wins the tie at 0.5
    C, d, conj = make(0, 0.5).rows(False)
    assert conj and C.tolist() == [[1, -1, 0], [1, 0, -1]] and d.tolist() == [0.5, 0.5]
    C, d, conj = make(0, 0.5).rows(True)
    assert not conj and C.tolist() == [[-1, 1, 0], [-1, 0, 1]] and d.tolist() == [-0.5, -0.5]


def test_folding_and_domains(tmp_path: Path) -> None:
    problem = _problem(tmp_path, 8, 3)
    assert problem.folded and problem.model.input_shape == (problem.n,)
    values = problem.domain.values[np.random.default_rng(0).integers(0, 3, (50, problem.n))]
    full = problem.net.to(torch.float64).logits(torch.from_numpy(problem.inputs(values)))
    assert np.allclose(problem.logits(values), full.numpy(), atol=1e-12)
    assert not _problem(tmp_path, 9, 2, conv=True).folded
    assert PixelDomain.parse("binary").values.tolist() == [0.0, 1.0]
    assert PixelDomain.parse("levels:3").values.tolist() == [0.0, np.float32(0.5), 1.0]
    assert str(PixelDomain.parse("linf:0.1")) == "linf:0.1" and not PixelDomain.parse("box").discrete
    lo, hi = PixelDomain.parse("linf:0.1").bounds(np.array([0.05, 0.5, 0.95]))
    assert lo[0] == 0 and hi[2] == 1 and lo[1] <= 0.4 and hi[1] >= 0.6  # clipped, rounded outward
    assert np.float32(lo[1]) == lo[1] and np.float32(hi[1]) == hi[1]
    for bad in ("levels:1", "linf:0", "ternary", "levels:x"):
        with pytest.raises(ProfitError):
            PixelDomain.parse(bad)
    with pytest.raises(ProfitError):
        BruteForceOracle(Problem(problem.net, problem.instance, problem.patch, PixelDomain.parse("box"), 0))


@pytest.mark.parametrize("htype", ["rc2", "lbx", "mcsls"])
def test_hitting_sets(htype: str) -> None:
    with HittingSets([1, 2, 3, 4], htype, conflicts=[(1, 4)]) as sets:
        assert sets.get() == frozenset()
        sets.hit({1, 2})
        sets.hit({2, 3})
        assert sets.get() == frozenset({2})
        sets.exclude({2})  # exactly {2}: supersets stay allowed
        found = sets.get()
        assert found in ({1, 3}, {1, 2}, {2, 3}, {2, 4}, {3, 4}) and found != {2}
        sets.block({1, 3})
        seen = []
        while (h := sets.get()) is not None:
            assert not {1, 3} <= h and not {1, 4} <= h and h != {2} and h & {1, 2} and h & {2, 3}
            seen.append(h)
            sets.block(h)
        assert len(seen) == len(set(seen)) >= 2


def test_confirm_after_the_memo_is_cleared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Witness checks are remembered per point up to `memo_limit`; clearing the memo
    mid-stream (points seen before and new ones in one call) changes no answer."""
    reference = _problem(tmp_path, 4, 3)
    rng = np.random.default_rng(4)
    batches = [reference.domain.values[rng.integers(0, 3, (6, 7))] for _ in range(8)]
    batches = [np.concatenate([b, batches[i - 1][:3]]) if i else b for i, b in enumerate(batches)]
    free = np.full(7, np.nan)
    expected = [(reference.confirm(b, free, False), reference.confirm(b, free, True)) for b in batches]
    monkeypatch.setattr(Problem, "memo_limit", 4)
    small = _problem(tmp_path, 4, 3)
    for b, (keeps, flips) in zip(batches, expected):
        assert np.array_equal(small.confirm(b, free, False), keeps)
        assert np.array_equal(small.confirm(b, free, True), flips)
        assert len(small._checked) <= 4 + len(b)
