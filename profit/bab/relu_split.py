"""ReLU splitting: branch and bound over phase assignments of unstable ReLUs (beta-CROWN).

The root's pre-activation bounds come from alpha-CROWN optimised layer by layer
(`domains.crown.optimized_bounds`), its spec bound from beta-CROWN with more steps.
Each clause of the spec that the root leaves unproven gets its own BaB (the
property holds iff every clause holds on the whole region; a violation of one
clause is a counterexample), so subdomains carry only that clause's rows. A
subdomain is a vector of phases over all ReLU inputs (+1 z >= 0, -1 z <= 0, 0 free)
with its pre-activation bounds (the parent's with the split neuron clamped; with
`refine`, recomputed by CROWN) and its alpha (slopes) and beta (split multipliers)
per row. Per batch:

- pop the lowest-margin parents, split each on its chosen neuron (two children,
  warm-started from the parent's alpha and beta), bound all children in one
  `beta_crown` call (alpha and beta optimised jointly, per child and row);
- with `conflicts`, drop the children containing a learned conflict before bounding,
  learn new ones from the proven children (`profit.bab.conflicts`) and close the open
  children that contain one (off by default: it did not pay on mnistfc 256x4,
  benchmarks/README.md);
- drop proven and empty children (float32 margins in (0, near_zero] only after a
  float64 re-bound agrees); try the vertex minimising each open child's linear
  lower bound as a counterexample (and, every tenth of the timeout, PGD on the
  whole region with more restarts and a new seed);
- choose each open child's next neuron by filtered smart branching (De Palma et al.,
  2021): the top `candidates` by the BaBSR score (Bunel et al., JMLR 2020) -- the
  bound lost to the neuron's relaxation intercept, |min(A, 0) * (-l u / (u - l)) +
  bias term| with A its coefficient in the lower bound -- are each split in one
  batched bound pass (no optimisation) and the one whose worse child is best wins;
- a child with no unstable neuron left is a polytope on which the network is affine:
  an LP (HiGHS) decides it exactly; a proof is accepted only through a Lagrangian
  bound recomputed in float64 from the LP's dual values, a violation only through a
  confirmed counterexample at the LP's optimum.

With a timeout (`BabOptions.milp`, on chains of affine layers and ReLUs), the search runs
in two stages: branch and bound alone for `milp.after` of the timeout; then, if the spec
is still open, MILP-tightened pre-activation bounds (`profit.bab.milp.tighten`), a new
root over them and branch and bound again, raced by an exact MILP of the spec when few
ReLUs are unstable (`profit.bab.milp.MilpRace`; the first answer wins, the other is
stopped). Clauses proven in the first stage are not searched again.

Other nonlinearities (Sigmoid, Tanh, MaxPool) are not split: they are relaxed as in the
domains (CROWN's linear bounds over the bounds of their inputs, computed at the root)
in every subdomain, so only ReLU phases branch. MaxPool could be split on which input
is the maximum; relaxing it keeps one branching rule and is what the benchmarks here
need (their MaxPools sit after ReLUs, whose splits tighten the pool's inputs too).
With such ops a subdomain with every ReLU fixed is not affine, so no LP decides it:
it stays open and the answer is Unknown with that reason, never a guess.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from domains.backsub import default_relaxation, propagate
from domains.crown import (
    BetaOptions, Subdomains, beta_crown, optimized_bounds, relu_inputs, root_subdomains, subdomains_from_bounds,
)
from domains.deeppoly import LinearBoundOptions
from networks.ir import Conv, Linear, MaxPool, Network, Sigmoid, Tanh
from profit.bab import milp
from profit.bab.milp import Chain
from profit.bab.conflicts import Conflicts, budgeted, drop_each, phase_slopes
from profit.bab.search import Pool, Search, focus_rows
from profit.outcomes import Counterexample, Outcome, Proven, Unknown
from specs.properties import Spec

_EPS = 1e-12
_ATTACK_EVERY = 0.1  # share of the timeout between PGD rounds on the whole region during BaB
_LEARN_PER_BATCH = 16  # proven children per batch that conflicts are learned from
_LEARN_SHARES = (0.5, 0.9)  # shares of a proven child's margin its candidate conflicts may lose
_LEARN_ROUNDS = 3  # rounds of shrinking a proven child's splits


@dataclass
class _Layout:
    """The ReLU-input nodes concatenated into one flat neuron axis of size N."""

    names: list[str]  # ReLU-input node names, topological order
    relus: list[str]  # the ReLU reading each
    shapes: list[tuple[int, ...]]
    sizes: list[int]
    lower: Tensor  # (N,) root pre-activation bounds
    upper: Tensor  # (N,)
    bias: Tensor  # (N,) the bias of the layer computing each pre-activation (0 if none)
    other: dict[str, tuple[Tensor, Tensor]]  # bounds of non-ReLU nonlinear inputs, batch 1

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def unflat(self, t: Tensor) -> dict[str, Tensor]:
        """(B, ..., N) -> {name: (B, ..., *shape)}."""
        if not self.names:
            return {}
        parts = t.split(self.sizes, dim=-1)
        return {name: p.reshape(*t.shape[:-1], *shape) for name, p, shape in zip(self.names, parts, self.shapes)}

    def flat(self, d: dict[str, Tensor], lead: int) -> Tensor:
        """{name: (B, ..., *shape)} -> (B, ..., N), `lead` leading dims kept."""
        return torch.cat([d[name].reshape(*d[name].shape[:lead], -1) for name in self.names], dim=-1)

    def dict_bounds(self, lo: Tensor, hi: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        return {k: (l, u) for (k, l), u in zip(self.unflat(lo).items(), self.unflat(hi).values())}


def _clamp(lo: Tensor, hi: Tensor, splits: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds (B, N) restricted by the phases `splits` (B, N): l >= 0 where +1, u <= 0 where -1."""
    return torch.where(splits > 0, lo.clamp(min=0), lo), torch.where(splits < 0, hi.clamp(max=0), hi)


def _layout(net: Network, root: Subdomains) -> _Layout:
    pre = relu_inputs(net)
    names = list(pre)
    by_name = {n.name: n for n in net.nodes}
    shapes = [tuple(root.bounds[k][0].shape[1:]) for k in names]
    sizes = [int(np.prod(s)) for s in shapes]
    biases = []
    for name, shape in zip(names, shapes):
        layer = by_name[name].layer
        if isinstance(layer, Linear):
            b = layer.bias.expand(shape)
        elif isinstance(layer, Conv):
            b = layer.bias.reshape(-1, *[1] * (len(shape) - 1)).expand(shape)
        else:
            b = torch.zeros(shape)
        biases.append(b.reshape(-1).float())
    cat = (lambda i: torch.cat([root.bounds[k][i].reshape(-1) for k in names]) if names else torch.zeros(0))
    other = {k: v for k, v in root.bounds.items() if k not in pre}
    return _Layout(names, [pre[k] for k in names], shapes, sizes, cat(0).float(), cat(1).float(),
                   torch.cat(biases) if biases else torch.zeros(0), other)


class _Clause:
    """Bounding machinery for the BaB of one clause (its rows of the spec)."""

    def __init__(self, run: Search, layout: _Layout, spec: Spec) -> None:
        self.run, self.layout, self.spec = run, layout, spec
        self.m = spec.n_rows

    def subdomains(self, net: Network, lo: Tensor, hi: Tensor, splits: Tensor, alpha: Tensor, beta: Tensor,
                   dtype: torch.dtype) -> Subdomains:
        L = self.layout
        B = splits.shape[0]
        bounds = L.dict_bounds(lo, hi)
        bounds.update({k: (l.expand(B, *l.shape[1:]), u.expand(B, *u.shape[1:])) for k, (l, u) in L.other.items()})
        region = self.run.region
        return Subdomains(region.lower.to(dtype), region.upper.to(dtype), bounds, L.unflat(splits),
                          L.unflat(alpha), L.unflat(beta))

    def refine(self, lo: Tensor, hi: Tensor, splits: Tensor) -> tuple[Tensor, Tensor]:
        """Tighter pre-activation bounds (B, N) for subdomains: CROWN recomputed layer by
        layer with the split neurons clamped, intersected with the given (parent's) bounds."""
        L = self.layout
        B = splits.shape[0]
        region = self.run.region
        ctx = propagate(self.run.net, region.lower.expand(B, *region.shape), region.upper.expand(B, *region.shape),
                        default_relaxation, everything=False, unstable_only=True,
                        budget=LinearBoundOptions().budget, splits=L.unflat(splits), prior=L.dict_bounds(lo, hi),
                        output=False)
        return (L.flat({k: ctx.bounds[k][0] for k in L.names}, 1),
                L.flat({k: ctx.bounds[k][1] for k in L.names}, 1))

    def bound(self, lo: Tensor, hi: Tensor, splits: Tensor, alpha: Tensor, beta: Tensor, options: BetaOptions,
              record: bool, deadline: float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Bound B subdomains with pre-activation bounds lo, hi (B, N): (margin (B,), rows
        (B, m), alpha, beta (B, m, N), coefficients recorded at the ReLUs and the input).
        Float32 margins in (0, near_zero] are re-bounded in float64 with the optimised
        parameters; they stand only if positive."""
        B = splits.shape[0]
        net, L = self.run.net, self.layout
        spec = self.spec.expand(B)
        record_at = tuple(L.relus) + (net.input.name,) if record else ()
        result = beta_crown(net, self.subdomains(net, lo, hi, splits, alpha, beta, torch.float32), spec, options,
                            torch.float32, record_at, deadline)
        rows = result.spec_lower
        margin = spec.spec_margin(rows)
        alpha_out = L.flat(result.alpha, 2) if L.names else alpha
        beta_out = L.flat(result.beta, 2) if L.names else beta
        near = ((margin > 0) & (margin <= self.run.options.near_zero)).nonzero().flatten()
        if len(near):
            domains64 = self.subdomains(self.run.net64, lo[near], hi[near], splits[near], alpha_out[near],
                                        beta_out[near], torch.float64)
            rows64 = beta_crown(self.run.net64, domains64, spec[near], BetaOptions(iterations=0),
                                torch.float64).spec_lower
            margin64 = spec[near].spec_margin(rows64)
            margin = margin.clone()
            margin[near] = torch.where(margin64 > 0, margin[near], margin64.float().clamp(max=0.0))
        return margin, rows, alpha_out, beta_out, result.coefficients

    def learn(self, b: _Open, store: Conflicts) -> int:
        """Learn conflicts from the proven children of `b` (at most `_LEARN_PER_BATCH`, the
        largest margins), in `_LEARN_ROUNDS` rounds of: measure what each split carries by
        bounding the subdomain with it alone dropped; bound the candidates
        (`conflicts.budgeted`, shares `_LEARN_SHARES` of the margin) alone, from the root
        bounds clamped by the subset; store the proven ones smaller than their child's
        splits; go on from the smallest proven candidate of each child. Returns how many
        conflicts were stored (a later round's may replace an earlier one's)."""
        score = torch.where((b.margin > 0) & torch.isfinite(b.margin) & ((b.splits != 0).sum(1) > 1),
                            b.margin, torch.full_like(b.margin, float("nan")))
        idx = score.nan_to_num(float("-inf")).argsort(descending=True, stable=True)[:_LEARN_PER_BATCH]
        idx = idx[~score[idx].isnan()].sort().values
        splits, alpha, beta, margin = b.splits[idx], b.alpha[idx], b.beta[idx], b.margin[idx]
        stored = 0
        for _ in range(_LEARN_ROUNDS):
            more = ((splits != 0).sum(1) > 0).nonzero().flatten()  # an empty subset cannot shrink
            splits, alpha, beta, margin = splits[more], alpha[more], beta[more], margin[more]
            if not len(splits):
                break
            variants, owner, dropped = drop_each(splits)
            without = self._bound_subset(variants, alpha[owner], beta[owner], splits[owner],
                                         BetaOptions(iterations=0))[0]
            loss = torch.full(splits.shape, float("inf"))
            loss[owner, dropped] = margin[owner] - without
            candidates = torch.cat([budgeted(splits, loss, share * margin) for share in _LEARN_SHARES])
            src = torch.arange(len(splits)).repeat(len(_LEARN_SHARES))
            fewer = (candidates != 0).sum(1) < (splits[src] != 0).sum(1)
            candidates, src = candidates[fewer], src[fewer]
            if not len(src):
                break
            candidates, first = _unique_rows(candidates)
            src = src[first]
            got, got_alpha, got_beta = self._bound_subset(candidates, alpha[src], beta[src], splits[src],
                                                          self.run.options.beta)
            ok = (got > 0).nonzero().flatten()
            stored += store.add(candidates[ok])
            width = len(candidates) + 1  # the smallest proven candidate per child (first among equals) goes on
            key = (candidates[ok] != 0).sum(1) * width + ok
            best = torch.full((len(splits),), len(splits) * width * width, dtype=torch.long).scatter_reduce(
                0, src[ok], key, "amin")
            best = best[best < len(splits) * width * width] % width
            splits, alpha, beta, margin = candidates[best], got_alpha[best], got_beta[best], got[best]
        return stored

    def _bound_subset(self, subset: Tensor, alpha: Tensor, beta: Tensor, splits: Tensor,
                      options: BetaOptions) -> tuple[Tensor, Tensor, Tensor]:
        """Margins (B,), alpha and beta of the subdomains with only the phases `subset` (B, N), a subset of
        `splits`: the root bounds clamped by it, the dropped neurons' slopes set to their
        phase's and their beta to 0 (float32 margins near 0 re-checked in float64)."""
        L = self.layout
        lo, hi = _clamp(L.lower.expand(len(subset), -1), L.upper.expand(len(subset), -1), subset)
        alpha = phase_slopes(alpha, splits, subset)
        beta = beta * (subset != 0).unsqueeze(1)
        margin, _, alpha, beta, _ = self.bound(lo, hi, subset, alpha, beta, options, record=False)
        return margin, alpha, beta

    def babsr(self, rows: Tensor, lo: Tensor, hi: Tensor, coefficients: dict[str, Tensor]) -> Tensor:
        """BaBSR scores (B, N); -inf where the neuron is stable (or split)."""
        L = self.layout
        B = lo.shape[0]
        focus = focus_rows(self.spec.expand(B), rows).unsqueeze(-1)
        A = torch.cat([(focus * coefficients[r].reshape(B, self.m, -1)).sum(1) for r in L.relus], dim=1)
        unstable = (lo < 0) & (hi > 0)
        ratio = torch.where(unstable, hi / (hi - lo).clamp(min=_EPS), torch.zeros_like(hi))
        intercept = A.clamp(max=0) * (-lo * ratio)
        bias = A * L.bias
        score = (torch.minimum(bias * (ratio - 1), bias * ratio) + intercept).abs()
        return torch.where(unstable, score, torch.full_like(score, float("-inf")))

    def decide(self, rows: Tensor, lo: Tensor, hi: Tensor, splits: Tensor, alpha: Tensor, beta: Tensor,
               coefficients: dict[str, Tensor]) -> Tensor:
        """The neuron to split next per subdomain (B,), -1 where none is unstable."""
        B, N = splits.shape
        if N == 0:
            return torch.full((B,), -1, dtype=torch.long)
        score = self.babsr(rows, lo, hi, coefficients)
        has = torch.isfinite(score).any(1)
        K = min(self.run.options.candidates, N)
        cand = score.topk(K, dim=1).indices  # (B, K)
        valid = torch.isfinite(score.gather(1, cand))
        if K > 1:
            child_splits = splits.repeat_interleave(K, 0).repeat(2, 1)
            rows_idx = torch.arange(B * K)
            flat = cand.reshape(-1)
            child_splits[rows_idx, flat] = 1
            child_splits[B * K + rows_idx, flat] = -1
            child_alpha = alpha.repeat_interleave(K, 0).repeat(2, 1, 1)
            child_beta = beta.repeat_interleave(K, 0).repeat(2, 1, 1)
            child_lo, child_hi = _clamp(lo.repeat_interleave(K, 0).repeat(2, 1), hi.repeat_interleave(K, 0).repeat(2, 1),
                                        child_splits)
            result = beta_crown(self.run.net, self.subdomains(self.run.net, child_lo, child_hi, child_splits,
                                                              child_alpha, child_beta, torch.float32),
                                self.spec.expand(2 * B * K), BetaOptions(iterations=0))
            value = self.spec.expand(2 * B * K).spec_margin(result.spec_lower).reshape(2, B, K).min(0).values
            value = torch.where(valid, value, torch.full_like(value, float("-inf")))
            pick = cand.gather(1, value.argmax(1, keepdim=True)).squeeze(1)
        else:
            pick = cand[:, 0]
        return torch.where(has, pick, torch.full_like(pick, -1))


def search(run: Search) -> Outcome:
    """ReLU-splitting BaB on run.region; see the module docstring. With `options.milp` and a
    timeout, on a chain network, branch and bound first runs alone for `milp.after` of the
    timeout; if that leaves the spec open, the pre-activation bounds are tightened by MILP,
    the root is re-bounded over them, and the search restarts from it, raced by an exact
    MILP when few ReLUs are unstable (`profit.bab.milp`)."""
    spec, options = run.spec, run.options
    start = time.perf_counter()
    root, layout, margin, rows, alpha, beta = _root(run, None)
    run.record_batch(1, time.perf_counter() - start)
    if bool(margin[0] > 0):
        return Proven()
    chain = Chain.of(run.net) if options.milp is not None and run.timeout is not None and milp.available() else None
    if chain is not None:
        run.stage_end = run.start + options.milp.after * run.timeout
    proven: set[int] = set()
    outcome = _clauses(run, layout, rows, alpha, beta, proven)
    run.stage_end = math.inf
    retry = isinstance(outcome, Unknown) and outcome.reason.split(":")[0] in ("timeout", "memory")
    if chain is None or not retry or run.remaining() < 1.0:
        return outcome
    if len(chain.names) > 1:
        until = time.perf_counter() + options.milp.share * run.remaining()
        relus = {k: root.bounds[k] for k in chain.names}
        tightened, run.milp_stats = milp.tighten(run.net, chain, run.region, relus, options.milp, until,
                                                 stop=run.deadline)
        root, layout, margin, rows, alpha, beta = _root(run, tightened)
        if bool(margin[0] > 0):
            return Proven()
    unstable = int(((layout.lower < 0) & (layout.upper > 0)).sum())
    if 0 < unstable <= options.milp.race and run.remaining() > 1.0:
        left = sorted(set(spec.clause.tolist()) - proven)
        run.race = milp.MilpRace(chain, run.region, {k: root.bounds[k] for k in chain.names}, spec, left,
                                 options.milp, run.deadline)
    try:
        return _clauses(run, layout, rows, alpha, beta, proven)
    finally:
        if run.race is not None:
            run.race.close()
            run.race = None


def _clauses(run: Search, layout: _Layout, rows: Tensor, alpha: Tensor, beta: Tensor, proven: set[int]) -> Outcome:
    """One BaB per clause the root bound `rows` leaves open and `proven` does not hold, lowest
    first; clauses proven here are added to `proven`."""
    spec, options = run.spec, run.options
    per_clause = torch.full((spec.n_clauses,), float("-inf")).scatter_reduce(
        0, spec.clause, rows[0].float(), "amax", include_self=False)
    for k in per_clause.argsort().tolist():
        if per_clause[k] > options.near_zero or k in proven:
            continue
        decided = run.race_outcome()
        if decided is not None:
            return decided
        keep = (spec.clause == k).nonzero().flatten()
        clause_spec = Spec(spec.C[:, keep], spec.d[:, keep], torch.zeros(len(keep), dtype=torch.long))
        outcome = _clause_search(run, _Clause(run, layout, clause_spec), alpha[:, keep], beta[:, keep])
        if not isinstance(outcome, Proven):
            return outcome
        proven.add(k)
    return Proven()


def _root(run: Search, prior: dict[str, tuple[Tensor, Tensor]] | None
          ) -> tuple[Subdomains, _Layout, Tensor, Tensor, Tensor, Tensor]:
    """The root subdomain over alpha-CROWN's pre-activation bounds (intersected with
    `prior`), its layout, and its beta-CROWN bound: margin (1,), rows (1, m), alpha, beta."""
    net, spec, options = run.net, run.spec, run.options
    if options.root_bounds.iterations > 0:
        bounds = optimized_bounds(net, run.region, options.root_bounds, deadline=run.root_deadline(),
                                  stop=run.deadline, prior=prior)
        root = subdomains_from_bounds(net, run.region.lower, run.region.upper, bounds, spec.n_rows)
    else:
        root = root_subdomains(net, run.region, spec.n_rows, LinearBoundOptions(), prior=prior, stop=run.deadline)
    layout = _layout(net, root)
    splits = torch.zeros(1, layout.n, dtype=torch.int8)
    lo, hi = layout.lower.unsqueeze(0), layout.upper.unsqueeze(0)
    alpha = layout.flat(root.alpha, 2) if layout.names else torch.zeros(1, spec.n_rows, 0)
    margin, rows, alpha, beta, _ = _Clause(run, layout, spec).bound(lo, hi, splits, alpha, torch.zeros_like(alpha),
                                                                    options.root, record=False,
                                                                    deadline=run.root_deadline())
    return root, layout, margin, rows, alpha, beta


def _clause_search(run: Search, clause: _Clause, alpha: Tensor, beta: Tensor) -> Outcome:
    """BaB for one clause (rows OR-ed) from the root's parameters."""
    options, layout = run.options, clause.layout
    splits = torch.zeros(1, layout.n, dtype=torch.int8)
    lo, hi = layout.lower.unsqueeze(0), layout.upper.unsqueeze(0)
    margin, rows, alpha, beta, coefficients = clause.bound(lo, hi, splits, alpha, beta, BetaOptions(iterations=0),
                                                           record=True)
    if bool(margin[0] > 0):
        return Proven()
    bytes_per = layout.n * (1 + 8 + 8 * clause.m) + 16
    cap = int(min(options.max_domains, options.memory_bytes // bytes_per))
    pool = Pool()
    stuck = 0
    store = Conflicts(layout.n, options.max_conflicts) if options.conflicts else None
    opened: _Open | None = _Open(lo, hi, splits, alpha, beta, margin, rows, coefficients)
    rounds, last_attack = 0, time.perf_counter()
    while True:
        if opened is not None:
            outcome = _branch(run, clause, opened, pool)
            if isinstance(outcome, (Counterexample, Unknown)):
                return outcome
            stuck += outcome
        if len(pool) and time.perf_counter() - last_attack > max(_ATTACK_EVERY * (run.timeout or 0), 2.0):
            rounds += 1  # escalate PGD on the whole region: more restarts, a new seed
            cex = run.attack(run.region, restarts=options.attack.restarts * 4 ** min(rounds, 2), steps=100,
                             seed_offset=rounds)
            if cex is not None:
                return cex
            last_attack = time.perf_counter()
        stop = run.halt(len(pool), cap)
        if stop is not None:
            return stop
        if not len(pool):
            break
        start = time.perf_counter()
        _, parents = pool.pop(max(1, run.batch_size(options.relu_batch) // 2))
        P = parents["splits"].shape[0]
        src = torch.arange(P).repeat(2)  # child i's parent; the +1 children first
        splits = parents["splits"][src]
        splits[torch.arange(P), parents["decision"]] = 1
        splits[P + torch.arange(P), parents["decision"]] = -1
        if store is not None:
            keep = store.prune(splits)
            run.pruned += 2 * P - len(keep)
            src, splits = src[keep], splits[keep]
            if not len(src):
                opened = None
                continue
        lo, hi = _clamp(parents["lo"][src], parents["hi"][src], splits)
        if options.refine:
            lo, hi = clause.refine(lo, hi, splits)
        margin, rows, alpha, beta, coefficients = clause.bound(
            lo, hi, splits, parents["alpha"][src], parents["beta"][src], options.beta, record=True)
        opened = _Open(lo, hi, splits, alpha, beta, margin, rows, coefficients)
        if store is not None:  # learn, then close the open children the new conflicts contain (siblings)
            run.conflicts += clause.learn(opened, store)
            closed = store.matches(opened.splits) & (opened.margin <= 0)
            store.hits += int(closed.sum())
            run.pruned += int(closed.sum())
            opened.margin = torch.where(closed, torch.full_like(opened.margin, float("inf")), opened.margin)
        run.record_batch(len(src), time.perf_counter() - start)
    if stuck and any(isinstance(n.layer, (Sigmoid, Tanh, MaxPool)) for n in run.net.nodes):
        return Unknown(f"relaxed: {stuck} subdomains with every ReLU fixed stay open "
                       "(Sigmoid/Tanh/MaxPool are relaxed, not split)")
    if stuck:
        return Unknown(f"precision: {stuck} LP leaves are undecided")
    return Proven()


@dataclass
class _Open:
    """Freshly bounded subdomains (B of them) with what branching needs."""

    lo: Tensor  # (B, N) pre-activation bounds
    hi: Tensor
    splits: Tensor  # (B, N) int8
    alpha: Tensor  # (B, m, N)
    beta: Tensor  # (B, m, N)
    margin: Tensor  # (B,)
    rows: Tensor  # (B, m)
    coefficients: dict[str, Tensor]


def _branch(run: Search, clause: _Clause, b: _Open, pool: Pool) -> Counterexample | Unknown | int:
    """Drop the proven subdomains of `b`, try the rest as counterexamples, decide LP
    leaves, and push the others with their branching neuron. Returns a confirmed
    counterexample, Unknown("timeout") if the deadline passes among the leaves (one LP
    pair can take 0.1 s, and a batch can hold hundreds), or the number of undecided leaves."""
    keep = (b.margin <= 0).nonzero().flatten()
    if len(keep) == 0:
        return 0
    coefficients = {k: v[keep] for k, v in b.coefficients.items()}
    lo, hi, splits, alpha, beta, margin, rows = (t[keep] for t in (b.lo, b.hi, b.splits, b.alpha, b.beta,
                                                                   b.margin, b.rows))
    cex = _try_vertices(run, clause.spec, rows, coefficients)
    if cex is not None:
        return cex
    decision = clause.decide(rows, lo, hi, splits, alpha, beta, coefficients)
    stuck = 0
    for i in (decision < 0).nonzero().flatten().tolist():
        if run.expired():
            return Unknown("timeout")
        verdict = _leaf(run, clause.layout, clause.spec, splits[i], lo[i])
        if isinstance(verdict, Counterexample):
            return verdict
        stuck += verdict != "proven"
    go = decision >= 0
    pool.push(margin[go], lo=lo[go], hi=hi[go], splits=splits[go], alpha=alpha[go], beta=beta[go],
              decision=decision[go])
    return stuck


def _unique_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of t (k, N) in order of first occurrence, and those first indices."""
    _, inverse = torch.unique(t, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), t.shape[0], dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(t.shape[0]), "amin")
    first = first.sort().values
    return t[first], first


def _try_vertices(run: Search, spec: Spec, rows: Tensor, coefficients: dict[str, Tensor]) -> Counterexample | None:
    """Try the box vertices minimising each subdomain's lower bound (focus rows) as counterexamples."""
    A = coefficients.get(run.net.input.name)
    if A is None:
        return None
    B = rows.shape[0]
    focus = focus_rows(spec.expand(B), rows).reshape(B, -1, *[1] * (A.dim() - 2))
    direction = (focus * A).sum(1)
    region = run.region
    return run.try_points(torch.where(direction > 0, region.lower, region.upper))


def _affine_pieces(run: Search, layout: _Layout, phases: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """With every ReLU phase fixed (phases (N,) in {-1, +1}), the network is affine:
    outputs y = A x + c (A (n_out, n_in)) and pre-activations z = G x + h (G (N, n_in)),
    in float64, by evaluating the phase-masked network at 0 and at the unit vectors."""
    net = run.net64
    n_in = int(np.prod(net.input_shape))
    points = torch.cat([torch.zeros(1, n_in), torch.eye(n_in)]).double().reshape(n_in + 1, *net.input_shape)
    masks = {relu: (m > 0).double() for relu, m in zip(layout.relus, layout.unflat(phases.unsqueeze(0)).values())}
    values = {net.input.name: points}
    for node in net.nodes[1:]:
        ins = [values[i] for i in node.inputs]
        values[node.name] = ins[0] * masks[node.name] if node.name in masks else node.layer.forward(*ins)
    out = values[net.output.name].reshape(n_in + 1, -1)
    pre = torch.cat([values[name].reshape(n_in + 1, -1) for name in layout.names], dim=1) if layout.names \
        else torch.zeros(n_in + 1, 0, dtype=torch.float64)
    return (out[1:] - out[0]).T, out[0], (pre[1:] - pre[0]).T, pre[0]


def _leaf(run: Search, layout: _Layout, spec: Spec, splits: Tensor, lower: Tensor) -> str | Counterexample:
    """Decide a subdomain whose ReLU phases are all fixed by an LP:
    min t s.t. t >= c_r . y(x) + d_r (rows r of the clause), s_j z_j(x) >= 0 (split j),
    x in the box. "proven" needs the Lagrangian bound from the LP's duals to be > 0 in
    float64; a violation needs a confirmed counterexample; otherwise "undecided"."""
    from scipy.optimize import linprog  # scipy costs ~0.5 s to import: loaded for leaves only

    if any(isinstance(node.layer, (Sigmoid, Tanh, MaxPool)) for node in run.net.nodes):
        return "undecided"  # not piecewise linear in the ReLU phases alone
    phases = torch.where(lower >= 0, 1, -1)  # no neuron is unstable: the bounds fix every phase
    A, c, G, h = _affine_pieces(run, layout, phases)
    C = spec.C[0].double()
    d = spec.d[0].double()
    R = C @ A  # (m, n_in)
    r0 = C @ c + d
    split_idx = (splits != 0).nonzero().flatten()
    s = splits[split_idx].double()
    S = -(s.unsqueeze(1) * G[split_idx])  # -s_j G_j x <= s_j h_j
    s0 = s * h[split_idx]
    lo = run.region.lower.reshape(-1).double()
    hi = run.region.upper.reshape(-1).double()
    n_in, m = R.shape[1], R.shape[0]
    A_ub = torch.cat([torch.cat([R, -torch.ones(m, 1, dtype=torch.float64)], 1),
                      torch.cat([S, torch.zeros(len(split_idx), 1, dtype=torch.float64)], 1)]).numpy()
    b_ub = torch.cat([-r0, s0]).numpy()
    cost = np.zeros(n_in + 1)
    cost[-1] = 1.0
    bounds = list(zip(lo.tolist(), hi.tolist())) + [(None, None)]
    result = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
    center, radius = (lo + hi) / 2, (hi - lo) / 2
    if result.status == 2:  # infeasible: certify emptiness with max s s.t. s_j z_j >= s
        if len(split_idx) == 0:
            return "undecided"
        A_f = torch.cat([S, torch.ones(len(split_idx), 1, dtype=torch.float64)], 1).numpy()
        feas = linprog(-cost, A_ub=A_f, b_ub=s0.numpy(), bounds=list(zip(lo.tolist(), hi.tolist())) + [(None, 1.0)],
                       method="highs")
        if feas.status != 0:
            return "undecided"
        weights = torch.as_tensor(np.abs(feas.ineqlin.marginals), dtype=torch.float64)
        g = -(weights @ S)  # sum_j w_j s_j G_j
        top = weights @ s0 + g @ center + g.abs() @ radius  # max over the box of sum_j w_j s_j z_j
        return "proven" if bool(weights.sum() > 0) and bool(top < 0) else "undecided"
    if result.status != 0:
        return "undecided"
    if result.fun > 0:
        duals = torch.as_tensor(np.abs(result.ineqlin.marginals), dtype=torch.float64)
        lam, beta = duals[:m], duals[m:]
        if float(lam.sum()) <= 0:
            return "undecided"
        lam = lam / lam.sum()
        beta = beta / duals[:m].sum()
        g = lam @ R + beta @ S  # Lagrangian: sum lam_r (R_r x + r0_r) - sum beta_j s_j (G_j x + h_j)
        const = lam @ r0 - beta @ s0
        bound = const + g @ center - g.abs() @ radius
        return "proven" if bool(bound > 0) else "undecided"
    x = torch.as_tensor(result.x[:n_in], dtype=torch.float32).reshape(1, *run.region.shape)
    cex = run.try_points(x)
    return cex if cex is not None else "undecided"
