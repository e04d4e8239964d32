"""Brute-force ground truth for the explanation tests: tiny random ReLU nets and every
explanation / counterexample of a small patch by exhaustive enumeration.

Local mode: subsets of patch positions as bit masks. Absolute mode: partial assignments as
arrays of value indices with -1 for free. Sets are compared as frozensets of
(pixel, value) literals, the form `Explanation.literals` takes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from networks import load_onnx
from networks.export import to_onnx
from networks.ir import Network
from profit.explain import Explainer

Literals = frozenset  # of (pixel, value)


def tiny_net(path: Path, seed: int, n_in: int, hidden: tuple[int, ...], n_classes: int,
             conv: bool = False) -> Network:
    """A random ReLU net (written to ONNX at `path` and loaded back): Linear layers of `hidden`
    widths, or with conv=True a 2x2 convolution over a (1, 2, n_in/2) image first."""
    g = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    if conv:
        layers += [torch.nn.Conv2d(1, 2, 2), torch.nn.ReLU(), torch.nn.Flatten()]
        width = 2 * (n_in // 2 - 1)
        shape: tuple[int, ...] = (1, 2, n_in // 2)
    else:
        width, shape = n_in, (n_in,)
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, n_classes))
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    to_onnx(model, shape, path)
    return load_onnx(path)


def truth(ex: Explainer) -> tuple[np.ndarray, np.ndarray]:
    """Every completion of the patch as value indices (P, n) and whether it satisfies the target."""
    problem = ex.problem
    values = problem.domain.values
    index = np.array(list(itertools.product(range(len(values)), repeat=problem.n)), dtype=np.int64)
    keeps = problem.evaluate(values[index])
    return index, keeps != ex.negate


def _minimal(masks: list[int]) -> set[int]:
    ms = set(masks)
    return {m for m in ms if not any((o & m) == o and o != m for o in ms)}


def local_sets(ex: Explainer) -> tuple[set[Literals], set[Literals]]:
    """(AXps, CXps) of a local-mode explainer, by enumerating every subset of the patch."""
    problem = ex.problem
    index, sat = truth(ex)
    center = np.abs(problem.center[:, None] - problem.domain.values).argmin(1)
    n = problem.n
    agree = index == center  # (P, n)
    sufficient = {}
    for mask in range(1 << n):
        fixed = [i for i in range(n) if mask >> i & 1]
        consistent = agree[:, fixed].all(axis=1)
        sufficient[mask] = bool(sat[consistent].all())
    full = (1 << n) - 1
    axps = [m for m in sufficient if sufficient[m] and all(not sufficient[m & ~(1 << i)]
                                                            for i in range(n) if m >> i & 1)]
    weak_cxps = [m for m in range(1 << n) if not sufficient[full & ~m]]
    cxps = _minimal(weak_cxps)
    return {_lits_local(ex, m) for m in axps}, {_lits_local(ex, m) for m in cxps}


def _lits_local(ex: Explainer, mask: int) -> Literals:
    p = ex.problem
    return frozenset((p.patch[i], float(p.center[i])) for i in range(p.n) if mask >> i & 1)


def absolute_sets(ex: Explainer) -> tuple[set[Literals], set[Literals]]:
    """(explanations, counterexamples) of an absolute-mode explainer, over every partial assignment."""
    problem = ex.problem
    index, sat = truth(ex)
    K, n = len(problem.domain.values), problem.n
    assignments = np.array(list(itertools.product(range(-1, K), repeat=n)), dtype=np.int64)
    consistent = ((index[None] == assignments[:, None]) | (assignments[:, None] == -1)).all(-1)
    all_sat = ~(consistent & ~sat).any(axis=1)
    all_unsat = ~(consistent & sat).any(axis=1)
    code = {tuple(a): k for k, a in enumerate(assignments)}

    def minimal(table: np.ndarray) -> set[Literals]:
        out = set()
        for k in np.flatnonzero(table):
            a = assignments[k]
            weaker = [code[tuple(np.where(np.arange(n) == i, -1, a))] for i in range(n) if a[i] >= 0]
            if not any(table[w] for w in weaker):
                out.add(to_literals(ex, a))
        return out
    return minimal(all_sat), minimal(all_unsat)


def to_literals(ex: Explainer, assignment: np.ndarray) -> Literals:
    p = ex.problem
    return frozenset((p.patch[i], float(p.domain.values[k])) for i, k in enumerate(assignment) if k >= 0)


def minimal_hitting_sets(sets: set[Literals], universe: list[int]) -> set[frozenset[int]]:
    """Subset-minimal sets of pixels hitting every set's pixels (brute force over subsets)."""
    pixels = [frozenset(p for p, _ in s) for s in sets]
    hitting = []
    for r in range(len(universe) + 1):
        for combo in itertools.combinations(universe, r):
            c = frozenset(combo)
            if all(c & s for s in pixels) and not any(h <= c for h in hitting):
                hitting.append(c)
    return set(hitting)


def breaks(a: Literals, b: Literals) -> bool:
    """Whether a assigns some pixel of b another value."""
    bd = dict(b)
    return any(p in bd and bd[p] != v for p, v in a)


def sufficient(ex: Explainer, literals: Literals, negate_target: bool) -> bool:
    """Every completion of the literals satisfies the target (its negation if negate_target)."""
    problem = ex.problem
    index, sat = truth(ex)
    values = problem.domain.values
    pos = {p: i for i, p in enumerate(problem.patch)}
    consistent = np.ones(len(index), dtype=bool)
    for p, v in literals:
        consistent &= values[index[:, pos[p]]] == v
    want = ~sat if negate_target else sat
    return bool(want[consistent].all())


def freed_admits_violation(ex: Explainer, pixels: frozenset[int]) -> bool:
    """Local mode: freeing `pixels` (the rest fixed to the instance) admits a violation."""
    problem = ex.problem
    fixed = frozenset((p, float(problem.center[i])) for i, p in enumerate(problem.patch) if p not in pixels)
    return not sufficient(ex, fixed, False)


# ============================================================================ the tests

import pytest  # noqa: E402

from profit.errors import ProfitError  # noqa: E402
from profit.explain import CERTIFIED, ExplainOptions  # noqa: E402
from profit.explain import (  # noqa: E402
    Answer, BruteForceOracle, CascadeOracle, Oracle, OracleOptions, PixelDomain,
)
from profit.explain.hitting import HTYPES  # noqa: E402
from profit.outcomes import Verdict  # noqa: E402

BOUNDS_ONLY = OracleOptions(table=0, exhaustive=8)  # forces attack, bounds and input splitting


def make(tmp_path: Path, seed: int, n_in: int, hidden: tuple[int, ...], n_classes: int, levels: int,
         patch: list[int] | None = None, mode: str = "local", target: int | str = "true",
         htype: str = "rc2", oracle=None, conv: bool = False, instance_seed: int = 0) -> Explainer:
    """An explainer for a random tiny net and a random instance of the domain."""
    net = tiny_net(tmp_path / f"net{seed}.onnx", seed, n_in, hidden, n_classes, conv=conv)
    domain = PixelDomain("levels", levels)
    rng = np.random.default_rng(seed * 101 + instance_seed)
    x = domain.values[rng.integers(0, levels, size=n_in)]
    patch = list(range(n_in)) if patch is None else patch
    return Explainer(net, x, patch, domain, oracle=oracle, mode=mode,
                     options=ExplainOptions(target=target, htype=htype))


def as_sets(items) -> set[Literals]:
    return {frozenset(e.literals) for e in items}


# Seeds picked (by brute force) so that every case has many items of both kinds.
LOCAL_CASES = {  # name: (seed, n_in, hidden, classes, levels, patch, instance seed) -> #AXps, #CXps
    "bin8": (156, 8, (6,), 2, 2, None, 2),  # 21, 19
    "bin10-3cls": (105, 10, (8, 8), 3, 2, list(range(1, 10)), 1),  # 31, 19 (input 0 fixed)
    "ter6": (136, 6, (5, 4), 2, 3, None, 2),  # 7, 9
    "ter7-3cls": (124, 8, (8,), 3, 3, [0, 1, 2, 3, 4, 5, 6], 1),  # 19, 17
}
ABSOLUTE_CASES = {  # name: (seed, n_in, hidden, classes, levels, patch, target, instance seed)
    "bin8": (155, 8, (6,), 2, 2, None, "true", 2),  # 56 explanations, 38 counterexamples
    "bin7-opposite": (120, 7, (6, 6), 3, 2, None, "opposite", 2),  # 28, 27
    "ter5-opposite": (130, 5, (6, 4), 3, 3, None, "opposite", 2),  # 40, 44
    "ter5-class": (128, 5, (8,), 3, 3, None, 2, 2),  # 37, 56
}


@pytest.mark.parametrize("htype", HTYPES)
@pytest.mark.parametrize("case", list(LOCAL_CASES))
def test_local_enumeration_equals_brute_force(tmp_path: Path, case: str, htype: str) -> None:
    seed, n_in, hidden, classes, levels, patch, inst = LOCAL_CASES[case]
    ex = make(tmp_path, seed, n_in, hidden, classes, levels, patch, htype=htype, instance_seed=inst)
    axps, cxps = local_sets(ex)
    run = ex.enumerate("axp").run()
    assert run.status == "complete"
    assert as_sets(run.explanations) == axps
    assert as_sets(run.counterexamples) == cxps  # all CXps, by duality, when the AXps are complete
    assert all(e.minimality == CERTIFIED for e in run.items)
    run = ex.enumerate("cxp").run()
    assert run.status == "complete" and as_sets(run.counterexamples) == cxps and as_sets(run.explanations) == axps


@pytest.mark.parametrize("htype", HTYPES)
@pytest.mark.parametrize("case", list(ABSOLUTE_CASES))
def test_absolute_enumeration_equals_brute_force(tmp_path: Path, case: str, htype: str) -> None:
    seed, n_in, hidden, classes, levels, patch, target, inst = ABSOLUTE_CASES[case]
    ex = make(tmp_path, seed, n_in, hidden, classes, levels, patch, mode="absolute", target=target, htype=htype,
              instance_seed=inst)
    expls, cexs = absolute_sets(ex)
    run = ex.enumerate("both").run()
    assert run.status == "complete"
    assert as_sets(run.explanations) == expls
    assert as_sets(run.counterexamples) == cexs
    assert all(e.minimality == CERTIFIED for e in run.items)


@pytest.mark.parametrize("case", ["bin10-3cls", "ter7-3cls"])
def test_local_enumeration_through_attack_bounds_and_splitting(tmp_path: Path, case: str) -> None:
    """Without the completion table and with tiny exhaustive leaves, every answer comes from the
    cache, attacks, bounds or input splitting; the sets are still exact."""
    seed, n_in, hidden, classes, levels, patch, inst = LOCAL_CASES[case]
    ex = make(tmp_path, seed, n_in, hidden, classes, levels, patch,
              oracle=lambda p: CascadeOracle(p, BOUNDS_ONLY), instance_seed=inst)
    axps, cxps = local_sets(ex)
    run = ex.enumerate("both").run()
    assert run.status == "complete"
    assert as_sets(run.explanations) == axps and as_sets(run.counterexamples) == cxps
    used = set(run.stats()["oracle_calls"])
    assert used & {"attack", "linear", "box", "crown", "alpha-crown", "search"}


def test_absolute_enumeration_through_bounds_and_conv_net(tmp_path: Path) -> None:
    """A conv net (its first layer cannot be folded into the patch) through the bounds path."""
    ex = make(tmp_path, 107, 8, (6,), 2, 2, None, mode="absolute", conv=True,
              oracle=lambda p: CascadeOracle(p, BOUNDS_ONLY))
    assert not ex.problem.folded
    expls, cexs = absolute_sets(ex)
    run = ex.enumerate("both").run()
    assert run.status == "complete"
    assert as_sets(run.explanations) == expls and as_sets(run.counterexamples) == cexs


@pytest.mark.parametrize("mode", ["local", "absolute"])
def test_injected_brute_force_oracle(tmp_path: Path, mode: str) -> None:
    ex = make(tmp_path, 126, 7, (6,), 3, 2, None, mode=mode, oracle=BruteForceOracle, htype="lbx")
    truth_sets = local_sets(ex) if mode == "local" else absolute_sets(ex)
    run = ex.enumerate("both").run()
    assert run.status == "complete"
    assert (as_sets(run.explanations), as_sets(run.counterexamples)) == truth_sets
    assert set(run.stats()["oracle_calls"]) == {"brute-force"}


def test_duality(tmp_path: Path) -> None:
    """Brute force: the AXps are the minimal hitting sets of the CXps and vice versa; in absolute
    mode every explanation breaks every counterexample; the enumerated sets agree."""
    for seed, inst in ((121, 0), (109, 0), (113, 2)):
        ex = make(tmp_path, seed, 7, (6, 5), 3, 2, None, instance_seed=inst)
        axps, cxps = local_sets(ex)
        assert len(axps) > 5 and len(cxps) > 5
        pixels = list(ex.problem.patch)
        assert minimal_hitting_sets(cxps, pixels) == {frozenset(p for p, _ in a) for a in axps}
        assert minimal_hitting_sets(axps, pixels) == {frozenset(p for p, _ in c) for c in cxps}
        absolute = make(tmp_path, seed, 7, (6, 5), 3, 2, None, mode="absolute", instance_seed=inst)
        run = absolute.enumerate("both").run()
        assert len(run.explanations) > 5 and len(run.counterexamples) > 5
        for e in run.explanations:
            for c in run.counterexamples:
                assert breaks(frozenset(e.literals), frozenset(c.literals))


class Flaky(Oracle):
    """Answers UNKNOWN instead of the inner oracle's answer with probability `rate`."""

    def __init__(self, inner: Oracle, rate: float, seed: int) -> None:
        super().__init__(inner.problem)
        self.inner, self.rate = inner, rate
        self.rng = np.random.default_rng(seed)
        self.unknowns = 0

    def decide(self, queries, effort="full", deadline=None):
        answers = []
        for a in self.inner.decide(queries, effort, deadline):
            if self.rng.random() < self.rate:
                a = Answer(Verdict.UNKNOWN, None, "unknown")
                self.unknowns += 1
            self.calls[a.stage] += 1
            answers.append(a)
        return answers


class Liar(Oracle):
    """Claims FALSIFIED with a made-up witness for every query."""

    def decide(self, queries, effort="full", deadline=None):
        return [Answer(Verdict.FALSIFIED, np.full(self.problem.n, 0.5), "liar") for _ in queries]


def _check_sound(ex: Explainer, run) -> None:
    """Every reported item is sufficient, certified ones are minimal, witnesses are checked."""
    truth_sets = local_sets(ex) if ex.mode == "local" else absolute_sets(ex)
    for kind, items, true in (("axp", run.explanations, truth_sets[0]), ("cxp", run.counterexamples, truth_sets[1])):
        for e in items:
            lits = frozenset(e.literals)
            if ex.mode == "local" and kind == "cxp":
                assert freed_admits_violation(ex, frozenset(e.pixels))
            else:
                assert sufficient(ex, lits, negate_target=(kind == "cxp") != ex.negate)
            if e.minimality == CERTIFIED:
                assert lits in true
            else:
                assert any(t <= lits for t in true)
            if kind == "cxp":
                fixed = ex._query("cxp", _key(ex, e)).array
                values = e.witness[ex.problem.patch_index]
                assert ex.problem.confirm(values, fixed, ex.negate)[0]


def _key(ex: Explainer, e) -> frozenset:
    pos = {p: i for i, p in enumerate(ex.problem.patch)}
    if ex.mode == "local":
        return frozenset(pos[p] for p in e.pixels)
    return frozenset((pos[p], ex._value_index(v)) for p, v in e.literals)


FLAKY_CASES = {"local": [(126, 0), (121, 1), (116, 1)], "absolute": [(125, 2), (125, 0), (143, 0)]}


@pytest.mark.parametrize("mode", ["local", "absolute"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unknown_injection_never_reports_false_items(tmp_path: Path, mode: str, seed: int) -> None:
    net_seed, inst = FLAKY_CASES[mode][seed]
    ex = make(tmp_path, net_seed, 7, (6,), 3, 2, None, mode=mode, instance_seed=inst,
              oracle=lambda p: Flaky(BruteForceOracle(p), 0.25, seed), htype=HTYPES[seed])
    run = ex.enumerate("both").run()
    _check_sound(ex, run)
    assert ex.oracle.unknowns > 0
    assert run.status == "partial" and "unknown" in run.reasons


def test_unknown_injection_into_the_cascade(tmp_path: Path) -> None:
    ex = make(tmp_path, 121, 8, (6,), 2, 2, None, instance_seed=2,
              oracle=lambda p: Flaky(CascadeOracle(p, BOUNDS_ONLY), 0.3, 5))
    run = ex.enumerate("both").run()
    _check_sound(ex, run)
    assert run.status == "partial"


def test_false_witnesses_are_never_reported(tmp_path: Path) -> None:
    ex = make(tmp_path, 156, 8, (6,), 2, 2, None, oracle=Liar, instance_seed=2)
    run = ex.enumerate("both", limit=5).run()
    assert run.counterexamples == [] and run.explanations == []
    assert run.status == "partial"


@pytest.mark.parametrize("method", ["deletion", "quickxplain"])
@pytest.mark.parametrize("order", ["index", "sensitivity", "random"])
def test_single_axp(tmp_path: Path, order: str, method: str) -> None:
    for mode in ("local", "absolute"):
        ex = make(tmp_path, 105, 9, (8,), 3, 2, None, mode=mode)
        axps = local_sets(ex)[0] if mode == "local" else \
            {e for e in absolute_sets(ex)[0] if all(dict(zip(ex.problem.patch, ex.problem.center))[p] == v
                                                   for p, v in e)}
        e = ex.axp(order=order, method=method, seed=3)
        assert e.kind == "axp" and e.minimality == CERTIFIED
        assert frozenset(e.literals) in axps


def test_sensitivity_order_frees_insensitive_pixels_first(tmp_path: Path) -> None:
    ex = make(tmp_path, 156, 8, (6,), 2, 2, None, instance_seed=2)
    s = ex.sensitivity()
    order = ex._order("sensitivity")
    assert np.all(np.diff(s[order]) >= 0)


@pytest.mark.parametrize("mode", ["local", "absolute"])
def test_cxp_from_witness(tmp_path: Path, mode: str) -> None:
    ex = make(tmp_path, 156, 8, (6,), 2, 2, None, mode=mode, instance_seed=2)
    index, sat = truth(ex)
    bad = ex.problem.domain.values[index[np.flatnonzero(~sat)[0]]]
    true_cxps = local_sets(ex)[1] if mode == "local" else absolute_sets(ex)[1]
    for method in ("deletion", "quickxplain"):
        e = ex.cxp(ex.problem.inputs(bad[None])[0], method=method)
        assert e.kind == "cxp" and frozenset(e.literals) in true_cxps and e.minimality == CERTIFIED
        assert ex.problem.confirm(e.witness[ex.problem.patch_index], np.full(ex.problem.n, np.nan), ex.negate)[0]
    with pytest.raises(ProfitError):
        ex.cxp(ex.problem.center)  # satisfies the target: not a witness


def test_limit_and_timeout_make_the_run_partial(tmp_path: Path) -> None:
    ex = make(tmp_path, 156, 8, (6,), 2, 2, None, instance_seed=2)
    assert len(local_sets(ex)[0]) > 1
    run = ex.enumerate("axp", limit=1).run()
    assert run.status == "partial" and "limit" in run.reasons and len(run.explanations) == 1
    run = ex.enumerate("axp", timeout=1e-9).run()
    assert run.status == "partial" and "timeout" in run.reasons


def test_bad_inputs(tmp_path: Path) -> None:
    net = tiny_net(tmp_path / "n.onnx", 1, 6, (4,), 2)
    x = np.zeros(6)
    with pytest.raises(ProfitError):
        Explainer(net, x, [0, 9], "binary")  # pixel out of range
    with pytest.raises(ProfitError):
        Explainer(net, x, [0, 0], "binary")  # duplicate
    with pytest.raises(ProfitError):
        Explainer(net, x + 0.3, [0, 1], "binary")  # instance not in the domain
    with pytest.raises(ProfitError):
        Explainer(net, x, [0, 1], "box", mode="absolute")  # absolute mode needs a discrete domain
    with pytest.raises(ProfitError):
        Explainer(net, x, [0, 1], "levels:1")
    with pytest.raises(ProfitError):
        Explainer(net, x, [0, 1], "binary", options=ExplainOptions(target="opposite"))  # local: v violates it
    with pytest.raises(ProfitError):
        ExplainOptions(htype="minisat")
