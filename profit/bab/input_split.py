"""Input splitting: branch and bound over sub-boxes of a low-dimensional input region.

Each batch pops the live boxes whose centres have the lowest spec margins (an upper
bound of the box's minimum: the likeliest counterexamples first; a proof visits every
box anyway) and bounds them in two stages (`_bound`): forward-mode linear bounds
(`domains.crown.forward_bounds`, cost O(inputs) per neuron) with one CROWN pass for
the spec, then, for the boxes still open, CROWN's back-substituted pre-activation
bounds (intersected with the forward ones; each box back-substitutes only its own
unstable neurons). Both stages intersect with the parent box's pre-activation
bounds, which every child inherits (valid on any sub-box). The spec is bounded with
averaged rows added to its OR clauses (`with_averages`): near a switch between two
rows neither row's bound is positive, their average's often is; and each OR clause
is also bounded by the best weighted combination of its rows' linear lower bounds
(`_clause_bounds`, a small concave maximisation per box). A clause of several rows
that a box still leaves unproven after both stages gets a third (`_clause_alpha`):
the row weights and the ReLU lower slopes optimised jointly over one combined row,
which approaches the LP over the triangle relaxation and proves most boxes on the
thin surface where the property's margin is small (the weighted separate row bounds
left about half of them open). Per box this gives the rows' lower bounds and their
input coefficients lA (C y + d >= lA . x + c). Then:

- proven boxes (spec margin > 0; float32 margins in (0, near_zero] only after a
  float64 re-bound agrees) are dropped;
- the others are tried as counterexamples at their centres and at the vertices
  minimising a . x, a = the sum of lA over the rows that decide the margin (the best
  row of each unproven clause); PGD runs in the few with the lowest centre margins;
- the rest are halved along the coordinate with the largest smear (ReluVal, Wang et
  al., USENIX Security 2018): an interval bound of |d(c . y)/dx_i| over the box, with
  each unstable ReLU's derivative in [0, 1], times width_i, c the decisive rows; or,
  with input_branching="sb", |a_i| * width_i (halving coordinate i raises
  min_x a . x by |a_i| * width_i / 2 with the linear bound unchanged).

Complete in the limit for properties whose violations (if any) have interior:
bounds of ever smaller boxes converge to the network's values. A box too small to
halve in float32 and still undecided makes the answer Unknown("precision: ...").
"""

from __future__ import annotations

import itertools
import time

import torch
from torch import Tensor

from domains.backsub import backward, fixed_context
from domains.crown import (
    Adam, BetaOptions, beta_crown, forward_bounds, relu_inputs, root_subdomains, subdomains_from_bounds,
)
from domains.deeppoly import LinearBoundOptions
from networks.ir import Affine, Linear, Network, Relu, Reshape
from profit.bab.search import Pool, Search, focus_rows
from profit.outcomes import Outcome, Proven, Unknown
from specs.properties import Spec
from specs.regions import Box

_PGD_BOXES = 16  # open boxes of a batch (lowest centre margins) that PGD runs in
_CLAUSE_STEPS = 10  # Adam steps of `_clause_alpha` on the boxes CROWN leaves open


def _bound(net: Network, spec: Spec, lower: Tensor, upper: Tensor, shape: tuple[int, ...],
           iterations: int, dtype: torch.dtype, prior: dict[str, tuple[Tensor, Tensor]] | None = None
           ) -> tuple[Tensor, Tensor, Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """Spec margin lower bounds (k,), row lower bounds (k, m), input coefficients
    (k, m, n) and the bounds (k, ...) of the nodes the relaxations read (the smear
    reads them), for k flat boxes. The margin is the min over clauses of the largest of
    the clause's best row, its `_clause_bounds` combination (either stage) and its
    `_clause_alpha` bound.

    Two stages: forward-mode intermediate bounds (cheap with few inputs) with a CROWN
    pass for the spec; the boxes this leaves unproven are re-bounded with CROWN's
    back-substituted intermediate bounds (intersected with the forward ones), and
    alpha-CROWN if `iterations` > 0. Networks outside forward mode's ops: CROWN only.
    Then, if some clause has several rows, `_clause_alpha` on the boxes still open,
    over the second stage's intermediate bounds.
    prior: node bounds valid on each box (its parent's), intersected at every stage."""
    k, m = lower.shape[0], spec.n_rows
    lower, upper = lower.reshape(k, *shape).to(dtype), upper.reshape(k, *shape).to(dtype)
    record = (net.input.name,)
    rows = torch.full((k, m), float("-inf"), dtype=dtype)
    coeff = torch.zeros(k, m, *shape, dtype=dtype)
    clauses = torch.full((k, spec.n_clauses), float("-inf"), dtype=torch.float64)
    open_ = torch.arange(k)
    fwd = forward_bounds(net, lower, upper, prior)
    if fwd is not None:
        first = beta_crown(net, subdomains_from_bounds(net, lower, upper, fwd, m), spec,
                           BetaOptions(iterations=0), dtype, record)
        rows = first.spec_lower
        coeff = first.coefficients.get(net.input.name, coeff)
        if net.input.name in first.coefficients:
            clauses = _clause_bounds(spec, rows, coeff.reshape(k, m, -1), lower.reshape(k, -1), upper.reshape(k, -1))
        open_ = (clauses.amin(1) <= 0).nonzero().flatten()
    if len(open_):
        known = fwd if fwd is not None else prior
        known = None if known is None else {name: (l[open_], u[open_]) for name, (l, u) in known.items()}
        domains = root_subdomains(net, Box(lower[open_], upper[open_]), m, LinearBoundOptions(dtype=dtype), known)
        second = beta_crown(net, domains, spec[open_], BetaOptions(iterations=iterations), dtype, record)
        rows = rows.clone()
        rows[open_] = torch.maximum(rows[open_], second.spec_lower)
        clauses[open_] = torch.maximum(clauses[open_], _clause_bounds(spec[open_], second.spec_lower))
        if net.input.name in second.coefficients:
            coeff = coeff.clone()
            coeff[open_] = second.coefficients[net.input.name]
            if iterations == 0:  # the recorded pass is the one that gave spec_lower
                clauses[open_] = torch.maximum(clauses[open_], _clause_bounds(
                    spec[open_], second.spec_lower, coeff[open_].reshape(len(open_), m, -1),
                    lower[open_].reshape(len(open_), -1), upper[open_].reshape(len(open_), -1)))
        still = (clauses[open_].amin(1) <= 0).nonzero().flatten()
        if len(still) and _CLAUSE_STEPS and _has_joint_clause(spec):
            boxes = open_[still]
            clauses[boxes] = torch.maximum(clauses[boxes], _clause_alpha(
                net, spec[boxes], lower[boxes], upper[boxes],
                {name: (l[still], u[still]) for name, (l, u) in domains.bounds.items()},
                clauses[boxes], _CLAUSE_STEPS, dtype))
    margin = clauses.amin(1) if spec.n_clauses else torch.full((k,), float("inf"), dtype=torch.float64)
    if fwd is None:
        return margin, rows, coeff.reshape(k, m, -1), domains.bounds
    bounds = {name: (l.clone(), u.clone()) for name, (l, u) in fwd.items()}
    if len(open_):
        for name, (l, u) in domains.bounds.items():
            if name in bounds:
                bounds[name][0][open_] = l
                bounds[name][1][open_] = u
    return margin, rows, coeff.reshape(k, m, -1), bounds


def _has_joint_clause(spec: Spec) -> bool:
    """Whether some OR clause of the spec has several rows (only then can combining rows help)."""
    return bool((torch.bincount(spec.clause, minlength=spec.n_clauses) > 1).any())


def _clause_bounds(spec: Spec, rows: Tensor, coeff: Tensor | None = None, lower: Tensor | None = None,
                   upper: Tensor | None = None, steps: int = 20) -> Tensor:
    """Lower bounds (k, K) of each clause's max over its rows, float64, on k boxes.

    Without coefficients: the best row's lower bound. With the rows' linear lower
    bounds a_i . x + c_i over the box (coefficients coeff (k, m, n) of the pass that
    gave `rows`, box lower / upper (k, n)), also g(lam) = min over the box of
    sum_i lam_i (a_i . x + c_i) for weights lam on the clause's rows (lam >= 0, sum 1):
    max_i r_i(x) >= sum_i lam_i r_i(x), so any lam gives a sound bound, and the best
    one proves boxes where different rows win in different corners and no single
    row's bound is positive. lam is found by mirror ascent on the simplex (g is
    concave; its supergradient in lam_i is a_i . x* + c_i at the minimising vertex x*);
    the best g seen is kept."""
    k, m = rows.shape
    rows64 = rows.double()
    index = spec.clause.expand(k, -1)
    best = torch.full((k, spec.n_clauses), float("-inf"), dtype=torch.float64)
    best = best.scatter_reduce(1, index, rows64, "amax", include_self=False)
    if coeff is None or not _has_joint_clause(spec):
        return best
    A = coeff.double()
    center = ((lower.double() + upper.double()) / 2).unsqueeze(1)  # (k, 1, n)
    radius = ((upper.double() - lower.double()) / 2).unsqueeze(1)
    c = rows64 - (A * center).sum(-1) + (A.abs() * radius).sum(-1)  # (k, m)
    member = spec.clause.unsqueeze(0) == torch.arange(spec.n_clauses).unsqueeze(1)  # (K, m)
    usable = member.unsqueeze(0) & torch.isfinite(c).unsqueeze(1)  # (k, K, m)
    c = torch.where(torch.isfinite(c), c, 0.0)
    logits = torch.zeros(k, spec.n_clauses, m, dtype=torch.float64)
    for step in range(steps):
        lam = torch.where(usable, logits, float("-inf")).softmax(-1).nan_to_num(0.0)
        w = torch.einsum("kcm,kmn->kcn", lam, A)
        value = (lam * c.unsqueeze(1)).sum(-1) + (w * center).sum(-1) - (w.abs() * radius).sum(-1)
        best = torch.maximum(best, torch.where(usable.any(-1), value, float("-inf")))
        vertex = center - torch.sign(w) * radius  # (k, K, n): a minimiser of w . x over the box
        grad = torch.einsum("kmn,kcn->kcm", A, vertex) + c.unsqueeze(1)
        spread = torch.where(usable, grad, float("-inf")).amax(-1) - torch.where(usable, grad, float("inf")).amin(-1)
        logits = logits + 2.0 / (step + 1) ** 0.5 * grad / spread.clamp(min=1e-12).unsqueeze(-1)
    return best


def _clause_alpha(net: Network, spec: Spec, lower: Tensor, upper: Tensor, bounds: dict[str, tuple[Tensor, Tensor]],
                  known: Tensor, steps: int, dtype: torch.dtype) -> Tensor:
    """Lower bounds (k, K) of each clause's max over its rows on k boxes (lower / upper
    (k, *input shape)), float64: alpha-CROWN on one combined row per clause,
    sum_i lam_i (C_i y + d_i), with the weights lam (on the clause's rows, the simplex)
    and the lower ReLU slopes alpha (one set per clause) optimised jointly by Adam.

    Every lam on the simplex and alpha in [0, 1] gives a sound bound (max_i r_i >=
    sum_i lam_i r_i; alpha-CROWN); the best per clause is kept. With the pre-activation
    bounds `bounds` fixed, the optimum is the LP over the triangle relaxation of
    min t s.t. t >= r_i (Salman et al., NeurIPS 2019): it couples the rows through the
    ReLU relaxations, which weighting the rows' separate CROWN bounds (`_clause_bounds`)
    cannot. lam starts uniform (warm starts from `_clause_bounds`' weights did no better).
    known (k, K): bounds already proven; the optimisation stops once every box has a
    positive bound on every clause, or when at the pace of its last two steps no other
    box would reach one within the steps left (large boxes, or a counterexample inside)."""
    k, K, m = lower.shape[0], spec.n_clauses, spec.n_rows
    member = (spec.clause.unsqueeze(0) == torch.arange(K).unsqueeze(1)).unsqueeze(0)  # (1, K, m)
    C = spec.C.to(dtype).reshape(k, m, -1)
    d = spec.d.to(dtype)
    ctx = fixed_context(net, {net.input.name: (lower, upper), **bounds}, dtype)
    relus = relu_inputs(net)
    alpha = {pre: a.to(dtype).requires_grad_(True)  # (k, K, *shape): CROWN's slopes, one set per clause
             for pre, a in subdomains_from_bounds(net, lower, upper, bounds, K).alpha.items()}
    logits = torch.where(member, 0.0, float("-inf")).to(dtype).expand(k, -1, -1).clone().requires_grad_(True)
    adam = Adam([*alpha.values(), logits])
    rates = [0.2] * len(alpha) + [2.0]
    best = torch.full((k, K), float("-inf"), dtype=torch.float64)
    history = [best]
    known = known.double()
    for step in range(steps + 1):
        with torch.enable_grad():
            lam = logits.softmax(-1)
            ctx.alpha = {relus[pre]: a for pre, a in alpha.items()}
            rows = torch.einsum("kcm,kmo->kco", lam, C).reshape(k, K, *net.output.shape)
            lo, _ = backward(ctx, net.output.name, rows, None, lower, upper)
            value = lo + (lam * d.unsqueeze(1)).sum(-1)
        history.append(torch.maximum(best, value.detach().double()))
        best = history[-1]
        undecided = torch.maximum(best, known).amin(1) <= 0
        if step == steps or not bool(undecided.any()):
            break
        if step >= 2:  # stop when, at the pace of the last two steps, no undecided box would reach > 0
            reach = best + (best - history[-3]) / 2 * (steps - step)
            if not bool((torch.maximum(reach, known).amin(1) > 0)[undecided].any()):
                break
        adam.ascend(torch.autograd.grad(value.sum(), adam.params), rates)
        with torch.no_grad():
            for a in alpha.values():
                a.clamp_(0.0, 1.0)
    return torch.where(ctx.infeasible.unsqueeze(1), float("inf"), best)


def _gradient_smear(net: Network, C: Tensor, bounds: dict[str, tuple[Tensor, Tensor]],
                    width: Tensor) -> Tensor | None:
    """ReluVal's smear (Wang et al., USENIX Security 2018): |d(C y)/dx_i| bounded over the
    box by interval arithmetic on the gradient (an unstable ReLU's derivative is [0, 1]),
    times width_i; (k, n). C (k, n_out): the rows to differentiate. None unless the
    network is a chain of Linear / Affine / Reshape / ReLU whose ReLU inputs have bounds."""
    nodes = net.nodes
    if any(len(n.inputs) != 1 or n.inputs[0] != p.name for p, n in zip(nodes, nodes[1:])):
        return None
    k = C.shape[0]
    g_lo = g_hi = C.reshape(k, *net.output.shape).to(width.dtype)
    for prev, node in zip(reversed(nodes[:-1]), reversed(nodes[1:])):
        layer = node.layer
        if isinstance(layer, Linear):
            W = layer.weight.to(g_lo.dtype)
            center, radius = (g_lo + g_hi) / 2, (g_hi - g_lo) / 2
            center, radius = center.matmul(W), radius.matmul(W.abs())
            g_lo, g_hi = center - radius, center + radius
        elif isinstance(layer, Affine):
            s = layer.scale.to(g_lo.dtype)
            g_lo, g_hi = torch.minimum(g_lo * s, g_hi * s), torch.maximum(g_lo * s, g_hi * s)
        elif isinstance(layer, Reshape):
            g_lo, g_hi = g_lo.reshape(k, *prev.shape), g_hi.reshape(k, *prev.shape)
        elif isinstance(layer, Relu) and prev.name in bounds:
            l, u = bounds[prev.name]
            active, dead = l >= 0, u <= 0
            g_lo = torch.where(active, g_lo, torch.where(dead, 0.0, g_lo.clamp(max=0)))
            g_hi = torch.where(active, g_hi, torch.where(dead, 0.0, g_hi.clamp(min=0)))
        else:
            return None
    return torch.maximum(g_lo.abs(), g_hi.abs()).reshape(k, -1) * width


def _margins(run: Search, spec: Spec, lower: Tensor, upper: Tensor, prior: dict[str, tuple[Tensor, Tensor]] | None
             ) -> tuple[Tensor, Tensor, Tensor, dict]:
    """(margin (k,), row lower bounds (k, m), coefficients (k, m, n), node bounds); a float32
    margin in (0, near_zero] is replaced by a float64 re-bound's from scratch (the float32
    one may be rounding)."""
    shape = tuple(run.region.shape)
    k = lower.shape[0]
    margin, rows, coeff, bounds = _bound(run.net, spec.expand(k), lower, upper, shape, run.options.input_alpha,
                                         torch.float32, prior)
    margin = margin.float()
    near = ((margin > 0) & (margin <= run.options.near_zero)).nonzero().flatten()
    if len(near):
        margin64, _, _, _ = _bound(run.net64, spec.expand(len(near)), lower[near], upper[near], shape,
                                   run.options.input_alpha, torch.float64)
        margin = margin.clone()
        margin[near] = torch.where(margin64 > 0, margin[near], margin64.float().clamp(max=0.0))
    return margin, rows, coeff, bounds


def with_averages(spec: Spec) -> Spec:
    """The spec with derived rows added to every clause of >= 2 rows: the average of each
    pair of its rows and of all of them. max_i r_i >= any average of the r_i, so a positive
    lower bound of an average proves the clause (and is often positive where no single
    row's is: near a switch between the rows), and the margin's sign is unchanged. A
    derived row is kept only if its C is exact in float32 (d is rounded down by Spec)."""
    C, d = spec.C.double(), spec.d.double()
    rows_C, rows_d, ids = [spec.C.double()], [d], [spec.clause]
    for k in range(spec.n_clauses):
        idx = (spec.clause == k).nonzero().flatten().tolist()
        groups = [list(pair) for pair in itertools.combinations(idx, 2)] + ([idx] if len(idx) > 2 else [])
        for group in groups:
            avg_C = C[:, group].mean(1, keepdim=True)
            if torch.equal(avg_C.float().double(), avg_C):
                rows_C.append(avg_C)
                rows_d.append(d[:, group].mean(1, keepdim=True))
                ids.append(torch.tensor([k]))
    if len(rows_C) == 1:
        return spec
    return Spec(torch.cat(rows_C, 1), torch.cat(rows_d, 1), torch.cat(ids))


def _halves(lower: Tensor, upper: Tensor, dim: Tensor) -> tuple[Tensor, Tensor]:
    """The two halves of each box (k, n) along dim (k,): (2k, n) lower and upper bounds,
    left halves first. The midpoint is a float32 value shared by both halves, so the
    halves cover the box exactly."""
    rows = torch.arange(lower.shape[0])
    mid = (lower[rows, dim] + upper[rows, dim]) / 2
    left_hi, right_lo = upper.clone(), lower.clone()
    left_hi[rows, dim] = mid
    right_lo[rows, dim] = mid
    return torch.cat([lower, right_lo]), torch.cat([left_hi, upper])


def _choose(lower: Tensor, upper: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """The coordinate to halve per box (k,): argmax of score (k, n) among those that can
    still be halved in float32 (ties: the widest); and (k,) bool: whether there is one."""
    mid = (lower + upper) / 2
    splittable = (mid > lower) & (mid < upper)
    score = score + 1e-12 * (upper - lower)
    score = torch.where(splittable, score, torch.full_like(score, -1.0))
    return score.argmax(1), splittable.any(1)


def _branch_scores(run: Search, spec: Spec, rows: Tensor, coeff: Tensor, bounds: dict[str, tuple[Tensor, Tensor]],
                   lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Per open box: the direction a (k, n) = sum of lA over the focus rows (its
    minimising vertex is a counterexample candidate), and the branching score (k, n):
    ReluVal's smear, or |a| * width (also the fallback where smear does not apply)."""
    spec = spec.expand(rows.shape[0])
    focus = focus_rows(spec, rows).unsqueeze(-1)
    direction = (focus * coeff).sum(1)
    width = upper - lower
    if run.options.input_branching == "smear" and bounds:
        smear = _gradient_smear(run.net, (focus * spec.C.to(focus.dtype)).sum(1), bounds, width)
        if smear is not None:
            return direction, smear
    return direction, direction.abs() * width


def _center_margins(run: Search, lower: Tensor, upper: Tensor) -> Tensor:
    """The spec margin at each box centre (k,): an upper bound of the box's minimum margin,
    the pool's priority (boxes likeliest to hold a counterexample first; for a proof every
    box is visited anyway)."""
    k = lower.shape[0]
    with torch.no_grad():
        y = run.net.logits(((lower + upper) / 2).reshape(k, *run.region.shape))
    return run.spec.expand(k).margin(y).float()


def search(run: Search) -> Outcome:
    """Input-splitting BaB on run.region; see the module docstring."""
    options = run.options
    shape = tuple(run.region.shape)
    spec = with_averages(run.spec)
    pool = Pool()  # children carry their parent's node bounds as "l:node" / "u:node"
    stuck, cap = 0, options.max_domains
    priority = torch.zeros(1)
    boxes = {"lower": run.region.lower.reshape(1, -1), "upper": run.region.upper.reshape(1, -1)}
    start = time.perf_counter()
    while True:
        popped = boxes["lower"].shape[0]
        prior = {name[2:]: (boxes[name], boxes["u:" + name[2:]]) for name in boxes if name.startswith("l:")}
        margin, rows, coeff, bounds = _margins(run, spec, boxes["lower"], boxes["upper"], prior or None)
        open_ = (margin <= 0).nonzero().flatten()
        if len(open_):
            lower, upper, margin = boxes["lower"][open_], boxes["upper"][open_], margin[open_]
            bounds = {name: (l[open_], u[open_]) for name, (l, u) in bounds.items()}
            direction, score = _branch_scores(run, spec, rows[open_], coeff[open_], bounds, lower, upper)
            cex = run.try_points(torch.cat([(lower + upper) / 2, torch.where(direction > 0, lower, upper)]))
            if cex is None:
                worst = priority[open_].argsort()[:_PGD_BOXES]
                cex = run.attack(Box(lower[worst].reshape(-1, *shape), upper[worst].reshape(-1, *shape)),
                                 restarts=4, steps=20, seed_offset=run.batches + 1)
            if cex is not None:
                return cex
            dim, ok = _choose(lower, upper, score)
            stuck += int((~ok).sum())
            child_lo, child_hi = _halves(lower[ok], upper[ok], dim[ok])
            inherited = {f"{side}:{name}": b[ok].repeat(2, *[1] * (b.dim() - 1))
                         for name, (l, u) in bounds.items() for side, b in (("l", l), ("u", u))}
            cap = min(options.max_domains, int(options.memory_bytes // (4 * sum(
                t.shape[1:].numel() for t in inherited.values()) + 8 * lower.shape[1] + 8)))  # per box; none may be left
            if len(child_lo):  # none when every open box is too small to split
                pool.push(_center_margins(run, child_lo, child_hi), lower=child_lo, upper=child_hi, **inherited)
        run.record_batch(popped, time.perf_counter() - start)
        stop = run.halt(len(pool), cap)
        if stop is not None:
            return stop
        if not len(pool):
            break
        start = time.perf_counter()
        priority, boxes = pool.pop(run.batch_size(options.input_batch))
    if stuck:
        return Unknown(f"precision: {stuck} boxes too small to split are undecided")
    return Proven()
