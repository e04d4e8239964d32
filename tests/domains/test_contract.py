"""The contract every domain in DOMAINS keeps (scikit-learn's check_estimator idea): a new
domain is done when it passes this file and test_soundness.py without new test code.

- a batch of B regions gives the same bounds as B single runs;
- the region, the spec and the network's weights are never mutated;
- a zero-width region (or an eps = 0 ball) gives lower == upper == forward(x) at every node;
- an unknown layer raises DomainError naming the op, the node and the domain, at construction;
- BoundResult has the documented fields, shapes and dtypes; keep=True only adds bounds;
- proven == spec.proven(spec_lower); a bare C matrix works as a spec;
- bounds are monotone in eps (a theorem for box; checked, xfail where not a theorem).

Plus the orderings that are theorems of our implementations: alpha-CROWN's spec bound is
never below CROWN's (it keeps the best), and on ReLU networks the LP reference (the exact
triangle relaxation) is inside every domain's bounds at every node, and over CROWN's
intermediate bounds its spec bound is at least CROWN's.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import Tensor

from domains import DOMAINS, AlphaCrown, AlphaOptions, Crown, DeepPoly, LinearBoundOptions
from domains.base import BoundResult, DomainError, checked_proofs
from domains.lp import LPOptions, LPReference
from networks.ir import Layer, Linear, Network, Relu
from specs.properties import Spec
from specs.regions import Box, linf_ball
from tests.domains.netgen import (
    RELU_OPS, TOL, Case, build, cases, make_domain, one_thread, region_for, relu_only, zoo,
)

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
DOMAIN_ITEMS = list(DOMAINS.items())
DOMAIN_IDS = list(DOMAINS)
ZOO = zoo()
FEW = settings(max_examples=10, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_close(a: Tensor, b: Tensor, what: str, tol: float = TOL) -> None:
    """|a - b| <= tol (1 + |b|) elementwise (infinities must match)."""
    a, b = a.double(), b.double()
    same_inf = torch.isinf(a) & (a == b)
    bad = ~same_inf & ((a - b).abs() > tol * (1 + b.abs()))
    if bad.any():
        worst = (a - b)[bad].abs().max().item()
        raise AssertionError(f"{what}: max difference {worst:.3g} at {int(bad.sum())} entries")


def assert_within(inner: tuple[Tensor, Tensor], outer: tuple[Tensor, Tensor], what: str, tol: float = TOL) -> None:
    """outer.lower <= inner.lower and inner.upper <= outer.upper, up to tol (1 + |v|)."""
    (il, iu), (ol, ou) = [(t[0].double(), t[1].double()) for t in (inner, outer)]
    low = il < ol - tol * (1 + ol.abs())
    high = iu > ou + tol * (1 + ou.abs())
    assert not low.any(), f"{what}: lower bound below the outer one by {(ol - il)[low].max().item():.3g}"
    assert not high.any(), f"{what}: upper bound above the outer one by {(iu - ou)[high].max().item():.3g}"


def zoo_case(net_name: str, seed: int = 0, kinds: tuple[str, ...] = ("box", "ball", "patch")) -> Case:
    """A zoo network with one region of each kind and a random 3-row, 2-clause spec."""
    net = ZOO[net_name]
    g = torch.Generator().manual_seed(seed)
    region = Box.concat([region_for(k, net.input_shape, g, 0.5) for k in kinds])
    B = region.batch_size
    return Case(net, region, Spec(torch.randn(B, 3, net.n_outputs, generator=g), torch.randn(B, 3, generator=g),
                                  torch.tensor([0, 1, 1])))


# ------------------------------------------------------------------ batching

def check_batch_equals_single_runs(domain, case: Case, kept: bool) -> None:
    """Outputs, spec bounds and proven (kept=False), or every kept node's bounds (kept=True),
    of the batch run equal those of the single runs."""
    batch = domain.bound(case.region, case.spec, keep=True)
    for b in range(case.region.batch_size):
        single = domain.bound(case.region[b], case.spec[b], keep=True)
        label = f"{domain.name}, region {b}"
        if kept:
            for name, (lo, hi) in single.bounds.items():
                assert_close(batch.bounds[name][0][b:b + 1], lo, f"{label}: node {name} lower")
                assert_close(batch.bounds[name][1][b:b + 1], hi, f"{label}: node {name} upper")
            continue
        assert_close(batch.lower[b:b + 1], single.lower, f"{label}: lower")
        assert_close(batch.upper[b:b + 1], single.upper, f"{label}: upper")
        assert_close(batch.spec_lower[b:b + 1], single.spec_lower, f"{label}: spec_lower")
        assert bool(batch.proven[b]) == bool(single.proven[0]) or \
            abs(float(single.spec_margin[0])) <= TOL, f"{label}: proven differs"


@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
@FEW
@given(case=cases(max_batch=3))
def test_batch_equals_single_runs(name: str, cls, case: Case) -> None:
    check_batch_equals_single_runs(make_domain(cls, case.net), case, kept=False)


@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_batch_equals_single_runs_on_zoo(name: str, cls, net_name: str) -> None:
    check_batch_equals_single_runs(make_domain(cls, ZOO[net_name]), zoo_case(net_name), kept=False)


@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_batch_equals_single_runs_at_every_kept_node(name: str, cls, net_name: str) -> None:
    check_batch_equals_single_runs(make_domain(cls, ZOO[net_name]), zoo_case(net_name), kept=True)


# ------------------------------------------------------------------ no mutation

def snapshot(net: Network, region: Box, spec: Spec) -> list[Tensor]:
    """Copies of the region, the spec and every weight."""
    weights = [t for n in net.nodes for t in n.layer.tensors().values()]
    return [t.clone() for t in [region.lower, region.upper, spec.C, spec.d, spec.clause, *weights]]


@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_inputs_never_mutated(name: str, cls, net_name: str) -> None:
    case = zoo_case(net_name)
    before = snapshot(case.net, case.region, case.spec)
    domain = make_domain(cls, case.net)
    domain.bound(case.region, case.spec, keep=True)
    domain.bound(case.region, case.spec.C[0], keep=False)
    after = snapshot(case.net, case.region, case.spec)
    for i, (x, y) in enumerate(zip(before, after)):
        assert torch.equal(x, y), f"{name} mutated input tensor #{i} (0-1 region, 2-4 spec, then weights)"


# ------------------------------------------------------------------ points collapse to forward

COLLAPSE_TOL = 1e-4  # how loose a point's bounds may be: relaxations are widened against rounding


def assert_collapsed(lower: Tensor, upper: Tensor | None, v: Tensor, what: str) -> None:
    """lower == v (== upper): never on the wrong side by more than TOL (1 + |v|) (soundness),
    never looser than COLLAPSE_TOL (1 + |v|). Domains widen relaxations by ~1e-6 per neuron
    against float rounding (e.g. DeepPoly's sigmoid/tanh slack), which adds up through the
    layers: DeepPoly loses ~2e-5 that way on the 'conv' zoo network."""
    v = v.double()
    scale = 1 + v.abs()
    for bound, sign, side in ((lower, 1, "lower"), (upper, -1, "upper")):
        if bound is None:
            continue
        gap = sign * (v - bound.double())  # >= 0 when sound
        assert not (gap < -TOL * scale).any(), f"{what} {side}: unsound by {(-gap).max().item():.3g}"
        assert not (gap > COLLAPSE_TOL * scale).any(), f"{what} {side}: loose by {gap.max().item():.3g} at a point"


def check_point(domain, net: Network, region: Box, spec: Spec) -> BoundResult:
    """At a zero-width region every node's bounds equal the forward values and the spec rows
    their values at the point; proven agrees with the property where the margin is clear."""
    result = domain.bound(region, spec, keep=True)
    values = net.forward_all(region.lower)
    for node in net.nodes:
        lo, hi = result.bounds[node.name]
        assert_collapsed(lo, hi, values[node.name], f"{domain.name}: node {node.name} ({node.layer.op})")
    y = values[net.output.name]
    assert_collapsed(result.lower, result.upper, y, f"{domain.name}: output")
    rows = spec.values(y.reshape(len(y), -1))
    assert_collapsed(result.spec_lower, None, rows, f"{domain.name}: spec_lower")
    margin = spec.margin(y.reshape(len(y), -1))
    clear = margin.abs() > 1e-3
    assert torch.equal(result.proven[clear], margin[clear] > 0), f"{domain.name}: proven disagrees at a point"
    return result


@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
@FEW
@given(case=cases(kinds=("point",)))
def test_zero_width_region_gives_forward(name: str, cls, case: Case) -> None:
    check_point(make_domain(cls, case.net), case.net, case.region, case.spec)


@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_eps_zero_ball_collapses_to_forward(name: str, cls, net_name: str) -> None:
    case = zoo_case(net_name, kinds=("point", "point"))
    check_point(make_domain(cls, case.net), case.net, linf_ball(case.region.lower, 0.0), case.spec)


# ------------------------------------------------------------------ unsupported ops

@dataclasses.dataclass(frozen=True, eq=False)
class _Mystery(Layer):
    """A layer no domain knows."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 2


@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS + [("lp", LPReference)], ids=DOMAIN_IDS + ["lp"])
def test_unknown_op_raises_domain_error_at_construction(name: str, cls) -> None:
    net = build((2,), [("lin", Linear(torch.eye(2), torch.zeros(2)), ("x",)), ("odd", _Mystery(), ("lin",)),
                       ("r", Relu(), ("odd",))])
    with pytest.raises(DomainError) as info:
        cls(net)
    message = str(info.value)
    assert "_Mystery" in message and f"'{name}'" in message and "'odd'" in message, message


# ------------------------------------------------------------------ the result's fields

@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_result_fields_shapes_and_dtypes(name: str, cls, net_name: str) -> None:
    case = zoo_case(net_name)
    net, B, m = case.net, case.region.batch_size, case.spec.n_rows
    domain = make_domain(cls, net)
    result = domain.bound(case.region, case.spec, keep=True)
    assert isinstance(result, BoundResult) and result.domain == name
    for field in ("lower", "upper"):
        t = getattr(result, field)
        assert t.shape == (B, *net.output_shape) and t.dtype == torch.float32, (field, t.shape, t.dtype)
    assert (result.lower <= result.upper + TOL * (1 + result.upper.abs())).all()
    assert result.spec_lower.shape == (B, m) and result.spec_lower.dtype == torch.float32
    if result.spec_upper is not None:
        assert result.spec_upper.shape == (B, m) and (result.spec_lower <= result.spec_upper + TOL).all()
    assert result.proven.shape == (B,) and result.proven.dtype == torch.bool
    assert torch.equal(result.proven, case.spec.proven(result.spec_lower))
    assert result.spec_margin.shape == (B,)
    assert torch.equal(result.spec_margin, case.spec.spec_margin(result.spec_lower))
    assert set(result.bounds) == {n.name for n in net.nodes}
    for node in net.nodes:
        lo, hi = result.bounds[node.name]
        assert lo.shape == hi.shape == (B, *node.shape), (node.name, lo.shape, node.shape)
        assert lo.is_floating_point() and (lo <= hi + TOL * (1 + hi.abs())).all(), node.name
    bare = domain.bound(case.region)
    assert bare.spec_lower is None and bare.proven is None and bare.spec_margin is None
    assert bare.bounds == {}


@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_keep_only_adds_bounds(name: str, cls, net_name: str) -> None:
    """keep=True reports the hidden nodes; it does not change the outputs' or the spec's
    bounds (so neither whether the spec is proven), and neither does leaving the spec out."""
    case = zoo_case(net_name)
    domain = make_domain(cls, case.net)
    kept = domain.bound(case.region, case.spec, keep=True)
    lean = domain.bound(case.region, case.spec)
    assert_close(lean.lower, kept.lower, f"{name}: keep=False lower")
    assert_close(lean.upper, kept.upper, f"{name}: keep=False upper")
    assert_close(lean.spec_lower, kept.spec_lower, f"{name}: keep=False spec_lower")
    bare = domain.bound(case.region)
    assert_close(bare.lower, lean.lower, f"{name}: no-spec lower")
    assert_close(bare.upper, lean.upper, f"{name}: no-spec upper")


@pytest.mark.parametrize("net_name", list(ZOO))
@pytest.mark.parametrize(("name", "cls"), DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_bare_C_matrix_spec(name: str, cls, net_name: str) -> None:
    case = zoo_case(net_name)
    B, C = case.region.batch_size, case.spec.C[0]  # (m, n_out)
    domain = make_domain(cls, case.net)
    as_spec = domain.bound(case.region, Spec(C.expand(B, -1, -1), torch.zeros(B, len(C)), torch.arange(len(C))))
    for spec in (C, C.expand(B, -1, -1)):
        bare = domain.bound(case.region, spec)
        assert_close(bare.spec_lower, as_spec.spec_lower, f"{name}: bare C {tuple(spec.shape)}")
        assert torch.equal(bare.proven, as_spec.proven)


# ------------------------------------------------------------------ monotone in eps

_CROWN_NOT_MONOTONE = ("CROWN back-substitutes only the neurons interval arithmetic cannot show stable and "
                       "reports interval bounds for the others, so a neuron that turns unstable at the larger "
                       "eps can get a tighter (back-substituted) bound there than at the smaller eps")
NOT_MONOTONE = {  # (domain, zoo network) -> why nested regions give non-nested kept bounds
    (name, net_name): _CROWN_NOT_MONOTONE
    for name in ("crown", "alpha-crown") for net_name in ("mlp", "convdag", "reludag")
}
MONOTONE_PARAMS = [
    pytest.param(name, cls, net_name, id=f"{name}-{net_name}",
                 marks=[pytest.mark.xfail(strict=False, reason=NOT_MONOTONE[name, net_name])]
                 if (name, net_name) in NOT_MONOTONE else [])
    for name, cls in DOMAIN_ITEMS for net_name in ZOO
]


@pytest.mark.parametrize(("name", "cls", "net_name"), MONOTONE_PARAMS)
def test_bounds_monotone_in_eps(name: str, cls, net_name: str) -> None:
    net = ZOO[net_name]
    x = torch.rand(3, *net.input_shape, generator=torch.Generator().manual_seed(5))
    C = torch.randn(4, net.n_outputs, generator=torch.Generator().manual_seed(6))
    domain = make_domain(cls, net)
    previous = None
    for eps in (0.0, 0.01, 0.05, 0.2, 0.6):
        result = domain.bound(linf_ball(x, eps), C, keep=True)
        if previous is not None:
            for node in net.nodes:
                assert_within(previous.bounds[node.name], result.bounds[node.name],
                              f"{name}: node {node.name} ({node.layer.op}) at eps {eps}")
            assert (result.spec_lower <= previous.spec_lower + TOL * (1 + previous.spec_lower.abs())).all(), \
                f"{name}: spec_lower grew with eps {eps}"
        previous = result


# ------------------------------------------------------------------ orderings that are theorems

@FEW
@given(case=cases())
def test_alpha_crown_never_looser_than_crown(case: Case) -> None:
    crown = Crown(case.net).bound(case.region, case.spec)
    alpha = make_domain(DOMAINS["alpha-crown"], case.net).bound(case.region, case.spec)
    assert (alpha.spec_lower >= crown.spec_lower - TOL * (1 + crown.spec_lower.abs())).all()
    assert torch.equal(alpha.lower, crown.lower) and torch.equal(alpha.upper, crown.upper)


@FEW
@given(case=cases())
def test_alpha_crown_optimized_intermediates_never_looser_than_crown(case: Case) -> None:
    """Optimised intermediate bounds keep the best seen, starting from CROWN's: every kept
    node's bounds lie within CROWN's and the spec bound is at least CROWN's."""
    crown = Crown(case.net).bound(case.region, case.spec, keep=True)
    options = AlphaOptions(iterations=5, optimize_intermediate=True)
    alpha = AlphaCrown(case.net, alpha=options).bound(case.region, case.spec, keep=True)
    assert (alpha.spec_lower >= crown.spec_lower - TOL * (1 + crown.spec_lower.abs())).all()
    for node in case.net.nodes:
        assert_within(alpha.bounds[node.name], crown.bounds[node.name], f"node {node.name} ({node.layer.op})", tol=0)


LP_CASES = dict(ops=RELU_OPS, max_blocks=3, max_width=6, max_side=4, max_batch=2)
TIGHTER_THAN_LP = ("box", "deepz", "deeppoly", "crown", "alpha-crown")  # theorem for these five


def check_lp_inside(case: Case) -> None:
    """The LP with its own intermediate bounds is inside every other domain's bounds at every
    node (induction: each of their relaxations contains the triangle over their own, looser,
    bounds) and its spec bound is at least theirs. It is also at least the LP over CROWN's
    intermediate bounds, which in turn is at least CROWN's (CROWN's bound is a dual feasible
    point of that LP). Not asserted: 'LP over CROWN's bounds >= DeepPoly's', since with
    keep=True DeepPoly back-substitutes every node and on DAGs those bounds can tighten the
    intervals its ReLU inputs are intersected with."""
    lp = LPReference(case.net).bound(case.region, case.spec, keep=True)
    lp_crown = LPReference(case.net, LPOptions(intermediate="crown")).bound(case.region, case.spec)
    for name in TIGHTER_THAN_LP:
        other = make_domain(DOMAINS[name], case.net).bound(case.region, case.spec, keep=True)
        for node in case.net.nodes:
            assert_within(lp.bounds[node.name], other.bounds[node.name], f"lp vs {name}: node {node.name}")
        assert (lp.spec_lower >= other.spec_lower - TOL * (1 + other.spec_lower.abs())).all(), \
            f"lp spec_lower below {name}'s: {lp.spec_lower} < {other.spec_lower}"
        if name == "crown":
            assert (lp_crown.spec_lower >= other.spec_lower - TOL * (1 + other.spec_lower.abs())).all(), \
                f"lp over CROWN's bounds below CROWN's: {lp_crown.spec_lower} < {other.spec_lower}"
    assert (lp.spec_lower >= lp_crown.spec_lower - TOL * (1 + lp_crown.spec_lower.abs())).all()


@FEW
@given(case=cases(**LP_CASES))
def test_lp_inside_every_domain_on_random_relu_networks(case: Case) -> None:
    check_lp_inside(case)


@pytest.mark.parametrize("net_name", [k for k, net in ZOO.items() if relu_only(net)])
def test_lp_inside_every_domain_on_zoo(net_name: str) -> None:
    check_lp_inside(zoo_case(net_name))


def test_lp_strictly_tighter_on_an_unstable_mlp() -> None:
    """A case where the orderings are strict (LP > LP over CROWN's bounds > CROWN on the two
    wider boxes), so the tests above are not vacuous."""
    net = ZOO["mlp"]
    g = torch.Generator().manual_seed(0)
    region = Box.concat([region_for("box", net.input_shape, g, scale) for scale in (0.3, 1.0, 2.0)])
    C = torch.eye(3)[:1] - torch.eye(3)[1:]
    lp = LPReference(net).bound(region, C).spec_lower
    lp_crown = LPReference(net, LPOptions(intermediate="crown")).bound(region, C).spec_lower
    crown = Crown(net).bound(region, C).spec_lower
    assert (lp[1:] > lp_crown[1:] + 1e-3).all() and (lp_crown[1:] > crown[1:] + 1e-3).all()


@pytest.mark.parametrize("cls", [DeepPoly, Crown], ids=["deeppoly", "crown"])
def test_back_substitution_in_float64_on_a_float32_network(cls) -> None:
    """LinearBoundOptions(dtype=float64) is documented as 'tighter rounding'; the networks are
    float32, so the domain must cast the weights. The result agrees with float32's."""
    case = zoo_case("mlp")
    r32 = cls(case.net).bound(case.region, case.spec, keep=True)
    r64 = cls(case.net, LinearBoundOptions(dtype=torch.float64)).bound(case.region, case.spec, keep=True)
    assert_close(r64.spec_lower, r32.spec_lower, f"{cls.name}: float64 spec_lower", tol=1e-4)


@pytest.mark.parametrize("name, cls", DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_float64_is_the_same_domain_in_float64(name, cls):
    net = ZOO["mlp"]
    domain = make_domain(cls, net)
    twin = domain.float64()
    assert type(twin) is type(domain) and twin.net.dtype == torch.float64
    assert getattr(twin, "alpha", None) == getattr(domain, "alpha", None)
    region = region_for("ball", net.input_shape, torch.Generator().manual_seed(3), 0.2)
    a, b = domain.bound(region), twin.bound(Box(region.lower.double(), region.upper.double()))
    assert_close(a.lower, b.lower, "lower")
    assert_close(a.upper, b.upper, "upper")


@pytest.mark.parametrize("name, cls", DOMAIN_ITEMS, ids=DOMAIN_IDS)
def test_checked_proofs_keep_only_float32_proofs_that_float64_confirms(name, cls):
    """Spec offsets between the float32 and the float64 bound of each row (where the float32
    one is higher), or just below the float32 bound: rows that float32 proves and float64
    refutes must be dropped, rows that both prove must stand."""
    net = ZOO["mlp"]
    domain = make_domain(cls, net)
    g = torch.Generator().manual_seed(0)
    B = 64
    one = region_for("ball", net.input_shape, g, 0.2)
    region = Box(one.lower.expand(B, *one.lower.shape[1:]), one.upper.expand(B, *one.upper.shape[1:]))
    n_out = net.output.shape[-1]
    C = torch.randn(B, 1, n_out, generator=g) * 100
    zero = Spec(C, torch.zeros(B, 1), torch.zeros(1, dtype=torch.long))
    low32 = domain.bound(region, zero).spec_lower[:, 0].double()
    low64 = domain.float64().bound(Box(region.lower.double(), region.upper.double()), zero).spec_lower[:, 0].double()
    assert ((low32 - low64).abs() < 1e-4).all(), "float32 and float64 bounds should differ by rounding only"
    d = torch.where(low32 > low64, -(low32 + low64) / 2, -low32 + 1e-6 * (1 + low32.abs())).float()
    result, proven, margin = checked_proofs(domain, region, Spec(C, d.unsqueeze(1), zero.clause))
    exact = low64 + d.double()
    refuted, confirmed = result.proven & (exact < -1e-9), result.proven & (exact > 1e-9)
    assert refuted.any() and confirmed.any()
    assert not proven[refuted].any() and (margin[refuted] <= 0).all()
    assert proven[confirmed].all() and (margin[confirmed] > 0).all()
