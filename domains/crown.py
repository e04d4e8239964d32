"""CROWN and alpha-CROWN: backward linear bound propagation.

CROWN (Zhang, Weng, Chen, Hsieh, Daniel: "Efficient Neural Network Robustness
Certification with General Activation Functions", NeurIPS 2018): the spec
matrix C is propagated backwards directly (C y is bounded, not y then C);
intermediate pre-activation bounds come from the same backward pass, started
only at neurons that interval arithmetic cannot show to be stable; ReLU lower
slopes are adaptive (1 if u > -l else 0).

alpha-CROWN (Xu, Zhang, Wang, Wang, Jana, Lin, Hsieh: "Fast and Complete",
ICLR 2021): the lower slopes of unstable ReLUs become parameters in [0, 1],
one per (spec row, neuron), optimised by projected gradient ascent (Adam) on
the spec lower bound with intermediate bounds fixed to CROWN's. Every slope
in [0, 1] gives a sound bound, and the best bound seen is kept, so
alpha-CROWN is never looser than CROWN. With AlphaOptions.optimize_intermediate
the slopes used for the intermediate bounds are optimised too, one set per
(bounded neuron and side, earlier ReLU), the intermediate bounds recomputed
every step and the gradient taken from the spec bound through them (the
paper's full method; tighter on deep networks, several times slower).

beta-CROWN (Wang, Zhang, Xu, Lin, Jana, Hsieh, Kolter: "Beta-CROWN: Efficient
Bound Propagation with Per-neuron Split Constraints for Complete and Incomplete
Neural Network Robustness Verification", NeurIPS 2021), for branch and bound:
`beta_crown` bounds a batch of `Subdomains` (ReLU phase assignments with fixed
pre-activation bounds) and optimises, per subdomain and spec row, the slopes
alpha together with Lagrange multipliers beta >= 0 of the split constraints;
`root_subdomains` builds the unsplit subdomain from CROWN's bounds.

Ops and regions as DeepPoly (domains.deeppoly). Sound, not complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from domains.backsub import ancestors, backward, default_relaxation, fixed_context, propagate, relu_relaxation
from domains.deeppoly import DeepPoly, LinearBoundOptions
from networks.ir import Add, Affine, AvgPool, Conv, Input, Linear, MaxPool, Network, Relu, Reshape, Sigmoid, Tanh
from specs.properties import Spec
from specs.regions import Box


class Crown(DeepPoly):
    """CROWN: like DeepPoly, but intermediate bounds only for possibly unstable neurons."""

    name = "crown"
    unstable_only = True


@dataclass(frozen=True)
class AlphaOptions:
    """alpha-CROWN optimisation: `iterations` Adam steps with learning rate `lr`.

    optimize_intermediate: also optimise the slopes used for the intermediate bounds
    (pre-activation bounds of every ReLU that follows another ReLU), one set per
    (bounded node, earlier ReLU) and per bound side, recomputed every iteration from
    the current slopes, the gradient taken from the spec bound through them (Xu et al.,
    ICLR 2021). Tighter on deep networks, and dearer: every iteration back-substitutes
    every intermediate layer, with coefficients kept for the gradient."""

    iterations: int = 20
    lr: float = 0.1
    optimize_intermediate: bool = False


class AlphaCrown(Crown):
    """alpha-CROWN: CROWN with optimised ReLU lower slopes for the spec rows."""

    name = "alpha-crown"

    def __init__(self, net: Network, options: LinearBoundOptions = LinearBoundOptions(),
                 alpha: AlphaOptions = AlphaOptions()) -> None:
        super().__init__(net, options)
        self.alpha = alpha

    def float64(self) -> AlphaCrown:
        return AlphaCrown(self.net.to(torch.float64), replace(self.options, dtype=torch.float64),
                          self.alpha)

    def _rows_lower(self, net: Network, ctx, C: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """The rows as a spec of `net`, their slopes optimised (alpha-CROWN)."""
        R = C.shape[1]
        spec = Spec(C.float(), torch.zeros(1, R), torch.arange(R))
        lo, _ = self.rebind(net).spec_bounds(ctx, spec, lower, upper)
        return lo

    def spec_bounds(self, ctx, spec: Spec, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        best_lo, hi = super().spec_bounds(ctx, spec, lower, upper)
        relus = [n for n in self.net.nodes if isinstance(n.layer, Relu)]
        if not relus or self.alpha.iterations <= 0:
            return best_lo, hi
        rows = _intermediate_rows(self.net, ctx) if self.alpha.optimize_intermediate else {}
        if rows:
            return _optimize_with_intermediates(self.net, ctx, rows, spec, lower, upper, best_lo, self.alpha), hi
        m = spec.C.shape[1]
        params: dict[str, Tensor] = {}
        for node in relus:
            relax = ctx.relaxation(node)
            params[node.name] = relax.lw.detach().unsqueeze(1).expand(-1, m, *relax.lw.shape[1:]).clone() \
                .requires_grad_(True)
        optimizer = torch.optim.Adam(list(params.values()), lr=self.alpha.lr)
        C = spec.C.to(ctx.dtype).reshape(spec.C.shape[0], m, *self.net.output.shape)
        d = spec.d.to(ctx.dtype)
        best = best_lo.to(ctx.dtype).detach()
        with torch.enable_grad():
            for _ in range(self.alpha.iterations):
                ctx.alpha = params
                lo, _ = backward(ctx, self.net.output.name, C, None, lower, upper)
                lo = lo + d
                best = torch.maximum(best, lo.detach())
                loss = -lo.sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for p in params.values():
                        p.clamp_(0.0, 1.0)
            ctx.alpha = params
            lo, _ = backward(ctx, self.net.output.name, C, None, lower, upper)
            best = torch.maximum(best, (lo + d).detach())
        ctx.alpha = None
        return best.float(), hi


_BACKSUBSTITUTED = (Linear, Conv, Affine, Add, AvgPool)  # ops whose bounds CROWN back-substitutes


def _intermediate_rows(net: Network, ctx) -> dict[str, tuple[Tensor, Tensor]]:
    """ReLU-input nodes whose bounds depend on earlier ReLUs' slopes (a linear op with
    a ReLU among its ancestors) -> (region index, flat neuron index) (P,) each of the
    (region, neuron) pairs CROWN leaves unstable (the others are stable whatever the slopes)."""
    by_name = {n.name: n for n in net.nodes}
    rows: dict[str, tuple[Tensor, Tensor]] = {}
    for pre in relu_inputs(net):
        if not isinstance(by_name[pre].layer, _BACKSUBSTITUTED) or \
                not any(isinstance(by_name[a].layer, Relu) for a in ancestors(net, pre) - {pre}):
            continue
        l, u = ctx.bounds[pre]
        region, neuron = ((l < 0) & (u > 0)).reshape(l.shape[0], -1).nonzero(as_tuple=True)
        if len(region):
            rows[pre] = (region, neuron)
    return rows


def _initial_slopes(net: Network, ctx, target: str, m: int, regions: Tensor | None = None) -> dict[str, Tensor]:
    """CROWN's adaptive lower slopes (R, m, *shape) of the ReLUs `target` depends on
    that have unstable neurons, as leaf tensors to optimise (one set per row); R = B,
    or the regions `regions` (R,) index when the rows are (region, neuron) pairs."""
    above = ancestors(net, target)
    slopes = {}
    for node in net.nodes:
        if isinstance(node.layer, Relu) and node.name in above:
            l, u = ctx.bounds[node.inputs[0]]
            if bool(((l < 0) & (u > 0)).any()):
                lw = relu_relaxation(l, u).lw.detach()
                lw = lw if regions is None else lw[regions]
                slopes[node.name] = lw.unsqueeze(1).expand(-1, m, *lw.shape[1:]).clone().requires_grad_(True)
    return slopes


def _optimize_with_intermediates(net: Network, ctx, rows: dict[str, tuple[Tensor, Tensor]], spec: Spec,
                                 lower: Tensor, upper: Tensor, crown_lower: Tensor, options: AlphaOptions) -> Tensor:
    """alpha-CROWN with optimised intermediate bounds (AlphaOptions.optimize_intermediate).

    Each iteration recomputes, in topological order, the lower bounds of z_j and -z_j of
    every (region, neuron) pair that CROWN leaves unstable at each node of `rows`
    (`_intermediate_rows`), with slopes of its own for each earlier ReLU and each side; the
    pairs form one batch of P "regions" (each with its region's box and bounds) of two
    rows, cheaper than every region bounding the batch's union of unstable neurons.
    Later ReLUs are relaxed on these bounds and the spec rows bounded with slopes of
    theirs; one Adam step on all slopes ascends the sum of the spec lower bounds, and the
    slopes are projected onto [0, 1]. The new bounds are not intersected with earlier
    ones during the ascent (the intersection cuts the gradient wherever an earlier bound
    wins: on mnist-net_256x6, eps 0.02, the mean spec bound after 20 steps was about -44
    with it, -21 without); the elementwise best bounds seen are kept and the last pass
    relaxes on them. Sound: with any slopes in [0, 1] every bound computed is valid, so
    their elementwise best is too; the best spec bound per (region, row) is returned (at
    least CROWN's). The kept bounds replace ctx.bounds of those nodes."""
    B, m = spec.C.shape[:2]
    dtype = ctx.dtype
    params = {k: _initial_slopes(net, ctx, k, 2, region) for k, (region, _) in rows.items()}
    spec_params = _initial_slopes(net, ctx, net.output.name, m)
    leaves = [p for group in (*params.values(), spec_params) for p in group.values()]
    if not leaves:
        return crown_lower
    kept = {k: (ctx.bounds[k][0].detach(), ctx.bounds[k][1].detach()) for k in rows}
    starts = {}
    for k, (region, neuron) in rows.items():
        n = int(torch.Size(ctx.shapes[k]).numel())
        one_hot = torch.zeros(len(region), n, dtype=dtype).index_put_((torch.arange(len(region)), neuron),
                                                                        torch.ones((), dtype=dtype))
        starts[k] = torch.stack([one_hot, -one_hot], 1).reshape(len(region), 2, *ctx.shapes[k])
    C = spec.C.to(dtype).reshape(B, m, *net.output.shape)
    d = spec.d.to(dtype)
    best = crown_lower.to(dtype).detach()

    def run(intersect: bool) -> Tensor:
        it = fixed_context(net, dict(ctx.bounds), dtype)
        for k, (region, neuron) in rows.items():
            above = ancestors(net, k)
            pairs = fixed_context(net, {name: (l[region], u[region]) for name, (l, u) in it.bounds.items()
                                        if name in above}, dtype)
            pairs.alpha = params[k]
            lo, _ = backward(pairs, k, starts[k], None, lower[region], upper[region])
            l, u = kept[k]
            nl = l.reshape(B, -1).index_put((region, neuron), lo[:, 0]).reshape(l.shape)
            nu = u.reshape(B, -1).index_put((region, neuron), -lo[:, 1]).reshape(u.shape)
            kept[k] = (torch.maximum(l, nl).detach(), torch.minimum(u, nu).detach())
            it.bounds[k] = kept[k] if intersect else (nl, nu)
        it.alpha = spec_params
        lo, _ = backward(it, net.output.name, C, None, lower, upper)
        return lo + d

    optimizer = torch.optim.Adam(leaves, lr=options.lr)
    with torch.enable_grad():
        for _ in range(options.iterations):
            lo = run(intersect=False)
            best = torch.maximum(best, lo.detach())
            optimizer.zero_grad()
            (-lo.sum()).backward()
            optimizer.step()
            with torch.no_grad():
                for p in leaves:
                    p.clamp_(0.0, 1.0)
    with torch.no_grad():
        best = torch.maximum(best, run(intersect=True))
    ctx.bounds.update(kept)
    relaxed = set(ctx.relaxations)
    ctx.relaxations.clear()
    for node in net.nodes:  # the kept relaxations, over the kept bounds
        if node.name in relaxed:
            ctx.relaxation(node)
    return best.float()


# ------------------------------------------------------------ beta-CROWN (BaB)

@dataclass(frozen=True)
class BetaOptions:
    """Joint optimisation of alpha (slopes) and beta (split multipliers) per subdomain:
    `iterations` Adam steps, learning rates `alpha_lr` and `beta_lr`."""

    iterations: int = 20
    alpha_lr: float = 0.1
    beta_lr: float = 0.05


@dataclass(frozen=True, eq=False)
class Subdomains:
    """B branch-and-bound subdomains of one input box: ReLU phase assignments with
    their bounds and optimisation state (beta-CROWN, Wang et al., NeurIPS 2021).

    `bounds` holds the bounds of every node a relaxation reads (the inputs of ReLU,
    Sigmoid, Tanh, MaxPool), those of ReLU inputs with the split neurons clamped
    (l >= 0 where split = +1, u <= 0 where split = -1); they are fixed during BaB,
    and the split constraints reach the spec bound through beta. The other dicts are
    keyed by ReLU-input ("pre-activation") node names. m = spec rows."""

    lower: Tensor  # (1 or B, *input_shape) input box
    upper: Tensor  # (1 or B, *input_shape)
    bounds: dict[str, tuple[Tensor, Tensor]]  # (B, *shape) each
    splits: dict[str, Tensor]  # (B, *shape) int8: +1 active (z >= 0), -1 inactive (z <= 0), 0 free
    alpha: dict[str, Tensor]  # (B, m, *shape) lower slopes of the ReLU fed by the node, in [0, 1]
    beta: dict[str, Tensor]  # (B, m, *shape) >= 0, multipliers of the split constraints

    @property
    def batch_size(self) -> int:
        return max([self.lower.shape[0]] + [l.shape[0] for l, _ in self.bounds.values()])


@dataclass(frozen=True, eq=False)
class BetaResult:
    """What `beta_crown` proved about a batch of subdomains."""

    spec_lower: Tensor  # (B, m) lower bounds of C y + d; +inf on empty subdomains
    alpha: dict[str, Tensor]  # the parameters that gave spec_lower, layout as Subdomains
    beta: dict[str, Tensor]
    coefficients: dict[str, Tensor]  # recorded node -> (B, m, *shape) lower-bound coefficients


class Adam:
    """Adam (Kingma and Ba, 2015) ascending on a list of tensors, updated in place
    (torch.optim.Adam without its import and per-step overhead, which dominate on
    small networks)."""

    def __init__(self, params: list[Tensor], b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        self.params, self.b1, self.b2, self.eps, self.t = params, b1, b2, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def ascend(self, grads: tuple[Tensor | None, ...], rates: list[float]) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        with torch.no_grad():
            for p, g, m, v, lr in zip(self.params, grads, self.m, self.v, rates):
                if g is None:
                    continue
                m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=lr / c1)


def relu_inputs(net: Network) -> dict[str, str]:
    """ReLU-input node name -> name of the ReLU reading it, in topological order."""
    return {n.inputs[0]: n.name for n in net.nodes if isinstance(n.layer, Relu)}


def beta_crown(net: Network, domains: Subdomains, spec: Spec, options: BetaOptions = BetaOptions(),
               dtype: torch.dtype = torch.float32, record: tuple[str, ...] = (),
               deadline: float | None = None) -> BetaResult:
    """Lower bounds of C y + d on each subdomain, optimising alpha and beta by Adam.

    For split constraints s_j z_j >= 0 (s = split) and any beta >= 0,
        min_{x in subdomain} c.y  >=  min_{x in relaxation} c.y - sum_j beta_j s_j z_j,
    because the subtracted term is <= 0 wherever the constraints hold; the right side
    is one more linear function back-substituted through the relaxation (the term
    -beta s enters the coefficients of z when the pass reaches z). Every alpha in
    [0, 1] and beta >= 0 gives a sound bound; the best per (subdomain, row) over the
    iterations is kept together with its parameters (iterations = 0: one CROWN pass
    with the given parameters). Empty subdomains (some l > u) get +inf. `record`:
    nodes whose lower-bound coefficients in the final pass (after the last step) are
    returned, e.g. ReLU nodes for branching scores, the input for input splitting.
    deadline (time.perf_counter() value): stop optimising when it has passed."""
    ctx = fixed_context(net, {net.input.name: (domains.lower, domains.upper), **domains.bounds}, dtype)
    pre_to_relu = relu_inputs(net)
    B = domains.batch_size
    spec = spec.expand(B)
    m = spec.n_rows
    C = spec.C.to(dtype).reshape(B, m, *net.output.shape)
    d = spec.d.to(dtype)
    lower, upper = ctx.bounds[net.input.name]
    signs = {k: s.to(dtype).unsqueeze(1) for k, s in domains.splits.items()}
    has_split = {k for k, s in domains.splits.items() if bool(s.any())}

    def run(alpha: dict[str, Tensor], beta: dict[str, Tensor]) -> Tensor:
        ctx.alpha = {pre_to_relu[k]: a for k, a in alpha.items()}
        ctx.split_terms = {k: -beta[k] * signs[k] for k in has_split}
        lo, _ = backward(ctx, net.output.name, C, None, lower, upper)
        return lo + d

    alpha = {k: a.to(dtype).detach().clone().requires_grad_(True) for k, a in domains.alpha.items()}
    beta = {k: b.to(dtype).detach().clone().requires_grad_(True) for k, b in domains.beta.items()}
    best = torch.full((B, m), float("-inf"), dtype=dtype)
    best_alpha = {k: a.detach().clone() for k, a in alpha.items()}
    best_beta = {k: b.detach().clone() for k, b in beta.items()}

    def keep_best(lo: Tensor) -> Tensor:
        improved = lo > best
        for params, kept in ((alpha, best_alpha), (beta, best_beta)):
            for k, p in params.items():
                kept[k] = torch.where(improved.reshape(B, m, *[1] * (p.dim() - 2)), p.detach(), kept[k])
        return torch.where(improved, lo, best)

    params = list(alpha.values()) + [beta[k] for k in has_split]
    if options.iterations > 0 and params:  # no ReLU: nothing to optimise, one pass below
        rates = [options.alpha_lr] * len(alpha) + [options.beta_lr] * len(has_split)
        adam = Adam(params)
        with torch.enable_grad():
            for _ in range(options.iterations):
                lo = run(alpha, beta)
                best = keep_best(lo.detach())
                if bool(spec.proven(best).all()) or (deadline is not None and time.perf_counter() > deadline):
                    break
                grads = torch.autograd.grad(lo.sum(), params, allow_unused=True)
                adam.ascend(grads, rates)
                with torch.no_grad():
                    for a in alpha.values():
                        a.clamp_(0.0, 1.0)
                    for b in beta.values():
                        b.clamp_(min=0.0)
    ctx.record = {name: None for name in record}
    with torch.no_grad():
        best = keep_best(run(alpha, beta))
    best = torch.where(ctx.infeasible.unsqueeze(1), torch.full_like(best, float("inf")), best)
    coefficients = {k: v.expand(B, *v.shape[1:]) for k, v in ctx.record.items() if v is not None}
    return BetaResult(best, best_alpha, best_beta, coefficients)


def root_subdomains(net: Network, region: Box, m: int,
                    options: LinearBoundOptions = LinearBoundOptions(),
                    prior: dict[str, tuple[Tensor, Tensor]] | None = None, stop: float | None = None) -> Subdomains:
    """One subdomain per region of the batch: CROWN's bounds of every node a
    relaxation reads (intersected with `prior`, see backsub.propagate), CROWN's
    adaptive slopes as initial alpha for each of m rows, beta = 0, nothing split."""
    lower, upper = region.lower.to(options.dtype), region.upper.to(options.dtype)
    ctx = propagate(net, lower, upper, default_relaxation, everything=False, unstable_only=True,
                    budget=options.budget, prior=prior, output=False, stop=stop)
    return subdomains_from_bounds(net, lower, upper, ctx.bounds, m)


def subdomains_from_bounds(net: Network, lower: Tensor, upper: Tensor,
                           bounds: dict[str, tuple[Tensor, Tensor]], m: int) -> Subdomains:
    """Unsplit subdomains over given node bounds (those of every input of a ReLU,
    Sigmoid, Tanh or MaxPool), alpha = CROWN's adaptive slopes, beta = 0."""
    kept = {n.inputs[0]: bounds[n.inputs[0]] for n in net.nodes
            if isinstance(n.layer, (Relu, Sigmoid, Tanh, MaxPool))}
    splits, alpha, beta = {}, {}, {}
    for pre in relu_inputs(net):
        l, u = kept[pre]
        splits[pre] = torch.zeros(l.shape, dtype=torch.int8)
        slope = relu_relaxation(l, u).lw
        alpha[pre] = slope.unsqueeze(1).expand(-1, m, *slope.shape[1:]).clone()
        beta[pre] = torch.zeros_like(alpha[pre])
    return Subdomains(lower, upper, kept, splits, alpha, beta)


_FORWARD_OPS = (Input, Linear, Affine, Reshape, Relu)


def forward_bounds(net: Network, lower: Tensor, upper: Tensor,
                   prior: dict[str, tuple[Tensor, Tensor]] | None = None) -> dict[str, tuple[Tensor, Tensor]] | None:
    """Forward-mode linear bounds (symbolic intervals, as in ReluVal / Neurify; CROWN's
    forward mode): each node v gets Lw . x + Lb <= v(x) <= Uw . x + Ub over the box
    [lower, upper] (B, *input_shape), with coefficients (B, n, *shape(v)) for the n input
    coordinates, concretised into bounds of every Linear node. One pass, cost O(n) per
    neuron: cheap for low-dimensional inputs, looser than back-substitution (relaxation
    errors compound through the layers). Linear, Affine, Reshape and ReLU only: None
    for a network with other ops. prior: bounds known for some nodes (e.g. those of a
    box containing this one), intersected with the concretised ones before the next
    ReLU is relaxed. Sound: each map below is exact or a valid relaxation."""
    if not all(isinstance(node.layer, _FORWARD_OPS) for node in net.nodes):
        return None
    B = lower.shape[0]
    n = lower[0].numel()
    dtype = lower.dtype
    center = ((lower + upper) / 2).reshape(B, 1, n)
    radius = ((upper - lower) / 2).reshape(B, 1, n)
    eye = torch.eye(n, dtype=dtype).reshape(1, n, *net.input_shape).expand(B, n, *net.input_shape)
    zero = torch.zeros(B, *net.input_shape, dtype=dtype)
    state = {net.input.name: (eye, zero, eye, zero)}
    bounds: dict[str, tuple[Tensor, Tensor]] = {}

    def concretise(name: str, Lw: Tensor, Lb: Tensor, Uw: Tensor, Ub: Tensor) -> tuple[Tensor, Tensor]:
        shape = Lb.shape
        Lw, Uw = Lw.reshape(B, n, -1), Uw.reshape(B, n, -1)
        lo = torch.bmm(center, Lw).reshape(shape) - torch.bmm(radius, Lw.abs()).reshape(shape) + Lb
        hi = torch.bmm(center, Uw).reshape(shape) + torch.bmm(radius, Uw.abs()).reshape(shape) + Ub
        if prior is not None and name in prior:
            lo, hi = torch.maximum(lo, prior[name][0].to(dtype)), torch.minimum(hi, prior[name][1].to(dtype))
        return lo, hi

    for node in net.nodes[1:]:
        Lw, Lb, Uw, Ub = state[node.inputs[0]]
        layer = node.layer
        if isinstance(layer, Linear):
            Wp = layer.weight.to(dtype).clamp(min=0).transpose(0, 1)
            Wn = layer.weight.to(dtype).clamp(max=0).transpose(0, 1)
            b = layer.bias.to(dtype)
            state[node.name] = (Lw.matmul(Wp) + Uw.matmul(Wn), Lb.matmul(Wp) + Ub.matmul(Wn) + b,
                                Uw.matmul(Wp) + Lw.matmul(Wn), Ub.matmul(Wp) + Lb.matmul(Wn) + b)
            bounds[node.name] = concretise(node.name, *state[node.name])
        elif isinstance(layer, Affine):
            sp, sn = layer.scale.to(dtype).clamp(min=0), layer.scale.to(dtype).clamp(max=0)
            c = layer.shift.to(dtype)
            state[node.name] = (Lw * sp + Uw * sn, Lb * sp + Ub * sn + c, Uw * sp + Lw * sn, Ub * sp + Lb * sn + c)
        elif isinstance(layer, Reshape):
            state[node.name] = (Lw.reshape(B, n, *layer.shape), Lb.reshape(B, *layer.shape),
                                Uw.reshape(B, n, *layer.shape), Ub.reshape(B, *layer.shape))
        else:  # Relu: lw v <= y <= uw v + ub with lw, uw >= 0
            if node.inputs[0] not in bounds:
                bounds[node.inputs[0]] = concretise(node.inputs[0], Lw, Lb, Uw, Ub)
            relax = relu_relaxation(*bounds[node.inputs[0]])
            state[node.name] = (Lw * relax.lw.unsqueeze(1), Lb * relax.lw,
                                Uw * relax.uw.unsqueeze(1), Ub * relax.uw + relax.ub)
    return bounds


def optimized_bounds(net: Network, region: Box, options: BetaOptions = BetaOptions(),
                     linear: LinearBoundOptions = LinearBoundOptions(),
                     deadline: float | None = None, stop: float | None = None,
                     prior: dict[str, tuple[Tensor, Tensor]] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Pre-activation bounds of every ReLU input with alpha-CROWN optimised slopes
    (Xu et al., ICLR 2021, for intermediate layers): layer by layer, the lower bound
    of each possibly unstable neuron z_j and the lower bound of -z_j are back-substituted
    through the network truncated at that layer, with one slope per (row, earlier ReLU
    neuron) optimised as in `beta_crown`, and intersected with CROWN's bounds. Later
    layers use the tightened bounds of earlier ones. Sound for the same reason as
    alpha-CROWN: every slope in [0, 1] gives a valid bound. Past `deadline`
    (time.perf_counter()), the remaining layers keep CROWN's bounds. The inputs of
    Sigmoid, Tanh and MaxPool keep CROWN's bounds (sound, computed before the ReLU
    tightening), so that `subdomains_from_bounds` can relax them. stop: the hard deadline of
    the CROWN pass (DeadlineExceeded past it, see backsub.propagate). prior: bounds known
    for some nodes (e.g. tightened by MILP), intersected with CROWN's before the slopes are
    optimised (see backsub.propagate)."""
    lower, upper = region.lower.to(linear.dtype), region.upper.to(linear.dtype)
    B = lower.shape[0]
    ctx = propagate(net, lower, upper, default_relaxation, everything=False, unstable_only=True,
                    budget=linear.budget, output=False, stop=stop, prior=prior)
    bounds = {k: ctx.bounds[k] for k in relu_inputs(net)}
    position = {n.name: i for i, n in enumerate(net.nodes)}
    for k in relu_inputs(net):
        if deadline is not None and time.perf_counter() > deadline:
            break
        truncated = Network(net.nodes[:position[k] + 1])
        earlier = relu_inputs(truncated)
        if not earlier:
            continue
        l, u = bounds[k]
        unstable = ((l < 0) & (u > 0)).reshape(B, -1).any(0).nonzero().flatten()
        U = len(unstable)
        if U == 0:
            continue
        n = l[0].numel()
        eye = torch.zeros(U, n)
        eye[torch.arange(U), unstable] = 1.0
        spec = Spec(torch.cat([eye, -eye]).expand(B, 2 * U, n), torch.zeros(B, 2 * U), torch.arange(2 * U))
        kept = {name: bounds[name] for name in earlier}
        sub = subdomains_from_bounds(truncated, lower, upper, {**ctx.bounds, **kept}, 2 * U)
        rows = beta_crown(truncated, sub, spec, options, linear.dtype, deadline=deadline).spec_lower
        flat_l, flat_u = l.reshape(B, n).clone(), u.reshape(B, n).clone()
        flat_l[:, unstable] = torch.maximum(flat_l[:, unstable], rows[:, :U].to(flat_l.dtype))
        flat_u[:, unstable] = torch.minimum(flat_u[:, unstable], -rows[:, U:].to(flat_u.dtype))
        bounds[k] = (flat_l.reshape(l.shape), flat_u.reshape(u.shape))
    others = {n.inputs[0] for n in net.nodes if isinstance(n.layer, (Sigmoid, Tanh, MaxPool))}
    return {**{k: ctx.bounds[k] for k in others - bounds.keys()}, **bounds}
