"""DeepPoly (Singh, Gehr, Püschel, Vechev: "An Abstract Domain for Certifying
Neural Networks", POPL 2019).

Element: per neuron one lower and one upper linear constraint over the previous
layer plus concrete bounds; the concrete bounds of *every* affine layer are
obtained by back-substitution to the input (domains.backsub), stable or not, as
in the paper (CROWN in domains.crown skips neurons interval arithmetic shows
stable, which gives the same relaxations but looser reported bounds for them).
Relaxations: ReLU with the area heuristic for the lower slope (1 if u > -l
else 0) and the chord as upper line; sigmoid/tanh and MaxPool as in the paper.
The spec C y + d is bounded by back-substituting the rows of C.

Ops: every IR op (Linear, Conv, Affine, Add, Relu, Sigmoid, Tanh, Reshape,
Transpose, AvgPool, MaxPool, Pad, Concat). Regions: boxes (eps-balls, patches).
Sound, not complete.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from domains.backsub import BACKWARD, bound_rows, default_relaxation, fixed_context, propagate
from domains.base import BoundResult, Domain, as_spec, unsupported
from networks.ir import Input, Linear, Network
from specs.properties import Spec
from specs.regions import Box


@dataclass(frozen=True)
class LinearBoundOptions:
    """Options shared by the back-substitution domains.

    budget: max floats in one batch of coefficient rows (B * rows * widest node);
    dtype: float32 (fast) or float64 (tighter rounding).
    """

    budget: float = 2e8
    dtype: torch.dtype = torch.float32


class DeepPoly(Domain):
    """DeepPoly: back-substitution for every layer's bounds."""

    name = "deeppoly"
    unstable_only = False

    def __init__(self, net: Network, options: LinearBoundOptions = LinearBoundOptions()) -> None:
        super().__init__(net)
        self.options = options

    def check(self, net: Network) -> None:
        for node in net.nodes:
            if not isinstance(node.layer, Input) and type(node.layer) not in BACKWARD:
                raise unsupported(self.name, node.layer, node.name)

    def float64(self) -> DeepPoly:
        return type(self)(self.net.to(torch.float64), replace(self.options, dtype=torch.float64))

    def bound(self, region: Box, spec: Spec | Tensor | None = None, keep: bool = False,
              splits: dict[str, Tensor] | None = None) -> BoundResult:
        """Bound the batch of regions. `splits` (branch and bound): per ReLU-input
        node, (B, *shape) in {-1, 0, +1} restricting that pre-activation to
        <= 0 / free / >= 0; an empty subdomain is reported as proven."""
        lower = region.lower.to(self.options.dtype)
        upper = region.upper.to(self.options.dtype)
        B = lower.shape[0]
        spec = as_spec(spec, B)
        ctx = propagate(self.net, lower, upper, default_relaxation, everything=not self.unstable_only,
                        unstable_only=self.unstable_only, budget=self.options.budget, keep=keep,
                        splits=splits)
        out_l, out_u = ctx.bounds[self.net.output.name]
        spec_lower = spec_upper = None
        if spec is not None:
            spec_lower, spec_upper = self.spec_bounds(ctx, spec, lower, upper)
            empty = ctx.infeasible.unsqueeze(1)
            spec_lower = torch.where(empty, torch.full_like(spec_lower, float("inf")), spec_lower)
        bounds = dict(ctx.bounds) if keep else {}
        states = dict(ctx.relaxations) if keep else {}
        return self.finish(out_l.float(), out_u.float(), spec, spec_lower, spec_upper, bounds, states)

    def spec_bounds(self, ctx, spec: Spec, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = bound_rows(ctx, spec.C, lower, upper, self.options.budget)
        d = spec.d.to(lo.dtype)
        return (lo + d).float(), (hi + d).float()

    def last_layer_lower(self, result: BoundResult, region: Box, C: Tensor, d: Tensor) -> Tensor | None:
        """The rows back-substituted from the output layer's input through the kept
        intermediate bounds (which do not depend on the output layer): the network with its
        output layer replaced by the identity, bounded with rows C."""
        out = self.net.output
        n = C.shape[1]
        identity = Linear(torch.eye(n, dtype=self.net.dtype), torch.zeros(n, dtype=self.net.dtype))
        net = dataclasses.replace(self.net, nodes=self.net.nodes[:-1] + (
            dataclasses.replace(out, layer=identity, shape=(n,)),))
        dtype = self.options.dtype
        lower, upper = region.lower.to(dtype), region.upper.to(dtype)
        bounds = {k: v for k, v in result.bounds.items() if k != out.name}
        ctx = fixed_context(net, {**bounds, net.input.name: (lower, upper)}, dtype)
        return self._rows_lower(net, ctx, C.unsqueeze(0), lower, upper)[0].float() + d

    def _rows_lower(self, net: Network, ctx, C: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """(1, R) lower bounds of the rows C (1, R, n) of `net`'s output in the context `ctx`."""
        lo, _ = bound_rows(ctx, C, lower, upper, self.options.budget, upper_too=False)
        return lo
