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
alpha-CROWN is never looser than CROWN.

Ops and regions as DeepPoly (domains.deeppoly). Sound, not complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from domains.backsub import backward, bound_rows, propagate, default_relaxation, Relaxation
from domains.base import BoundResult, as_spec
from domains.deeppoly import DeepPoly, LinearBoundOptions
from networks.ir import Network, Relu
from specs.properties import Spec
from specs.regions import Box


class Crown(DeepPoly):
    """CROWN: like DeepPoly, but intermediate bounds only for possibly unstable neurons."""

    name = "crown"
    unstable_only = True


@dataclass(frozen=True)
class AlphaOptions:
    """alpha-CROWN optimisation: `iterations` Adam steps with learning rate `lr`."""

    iterations: int = 20
    lr: float = 0.1


class AlphaCrown(Crown):
    """alpha-CROWN: CROWN with optimised ReLU lower slopes for the spec rows."""

    name = "alpha-crown"

    def __init__(self, net: Network, options: LinearBoundOptions = LinearBoundOptions(),
                 alpha: AlphaOptions = AlphaOptions()) -> None:
        super().__init__(net, options)
        self.alpha = alpha

    def spec_bounds(self, ctx, spec: Spec, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        best_lo, hi = super().spec_bounds(ctx, spec, lower, upper)
        relus = [n for n in self.net.nodes if isinstance(n.layer, Relu)]
        if not relus or self.alpha.iterations <= 0:
            return best_lo, hi
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
