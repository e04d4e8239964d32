"""LP reference: the triangle (Planet) relaxation of a ReLU network, solved exactly.

A tightness reference for tests and small experiments, not a fast domain. Every linear
node (Linear, Conv, Affine, Add, AvgPool, Reshape, Transpose, Pad, Concat) becomes its
exact affine map y = sum_j M_j x_j + c, materialised once as dense Jacobians in float64
(`torch.func.jacrev` at 0; exact because the map is affine) and stored sparse. Every Relu
y = max(0, z) with pre-activation bounds l <= z <= u becomes the triangle (Ehlers, ATVA
2017, "Planet"):

    l <= z <= u,   y >= 0,   y >= z,   y <= a z + b,
    a, b = 0, 0 (u <= 0);  1, 0 (l >= 0);  u / (u - l), -l u / (u - l) (otherwise).

The input is a variable in the region's box. Pre-activation bounds (`LPOptions.intermediate`):

- "lp" (default): layer by layer, min and max of each pre-activation neuron under the
  relaxation built from the earlier layers' LP bounds. The tightest bounds this relaxation
  gives; by induction never looser than DeepPoly's or CROWN's.
- "crown": CROWN's intermediate bounds (`Crown(net).bound(region, keep=True).bounds`),
  widened by `LPOptions.crown_margin` (they are float32 results). CROWN's own spec bound is
  a feasible dual point of this LP, so the LP spec bound is at least CROWN's (up to the
  widening and solver tolerances).

Output bounds, spec rows C y + d (min and max of each) and, with keep=True, every node's
bounds are LP optima too (Relu outputs are relu(l), relu(u), exact for the relaxation;
Reshape, Transpose, Pad and Concat rearrange their input's bounds). Each LP is
`min w . z` with w a cvxpy Parameter, so cvxpy compiles one problem per node and HiGHS
(solver=cp.HIGHS) re-solves it per neuron. The batch of B regions is a plain loop.

Numerical soundness: HiGHS solves to ~1e-7 feasibility/optimality tolerances, so every
LP optimum v is widened outward by `LPOptions.margin` (default 1e-6) times (1 + |v|) and
rounded outward to float32. That covers the solver's error on the small, well-scaled
networks this reference is for (the error grows with the size of the LP's dual solution).

Sound (every concrete value lies within the bounds, up to the float32 rounding of the
network itself), not complete. Sigmoid, Tanh and MaxPool are not supported (DomainError
at construction). Regions must be bounded boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from domains.base import BoundResult, Domain, DomainError, as_spec, unsupported
from domains.crown import Crown
from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Layer, Linear, Network, Node, Pad, Relu, Reshape, Transpose,
)
from specs.properties import Spec
from specs.regions import Box

Bounds = tuple[np.ndarray, np.ndarray]  # flat float64 (lower, upper) of one node, one region


@dataclass(frozen=True)
class LPOptions:
    """Options of the LP reference.

    intermediate: "lp" (pre-activation bounds by LP, default) or "crown" (CROWN's).
    margin: every LP optimum v is widened outward by margin * (1 + |v|) (default 1e-6,
        ten times HiGHS's 1e-7 tolerances).
    crown_margin: CROWN's float32 intermediate bounds are widened by crown_margin * (1 + |v|)
        (default 1e-6) so that the float64 relaxation stays feasible around them.
    """

    intermediate: str = "lp"
    margin: float = 1e-6
    crown_margin: float = 1e-6


@dataclass(frozen=True)
class _AffineMap:
    """y = sum_j mats[j] @ x_j + offset over flattened per-sample values."""

    mats: tuple[sp.csr_matrix, ...]  # (n_out, n_in_j) each
    offset: np.ndarray  # (n_out,)


def _affine_map(node: Node, shapes: dict[str, tuple[int, ...]]) -> _AffineMap:
    """The exact affine map of a linear node: Jacobians at 0 (float64) and the value at 0."""
    layer = node.layer.cast(torch.float64)
    zeros = tuple(torch.zeros(1, *shapes[i], dtype=torch.float64) for i in node.inputs)
    n_out = math.prod(node.shape)
    jacobians = torch.func.jacrev(layer.forward, argnums=tuple(range(len(zeros))))(*zeros)
    mats = tuple(sp.csr_matrix(J.reshape(n_out, -1).numpy()) for J in jacobians)
    return _AffineMap(mats, layer.forward(*zeros).reshape(-1).numpy())


# --------------------------------------------------------------- encodings, one per op

Encoder = Callable[[Node, list[cp.Expression], "_Encoding"], cp.Expression]


@dataclass
class _Encoding:
    """The LP of one region built so far: constraints, node expressions, node bounds."""

    constraints: list[cp.Constraint]
    exprs: dict[str, cp.Expression]  # node -> flat affine expression of its value
    bounds: dict[str, Bounds]  # node -> flat bounds known so far
    maps: dict[str, _AffineMap]


def _encode_linear(node: Node, xs: list[cp.Expression], enc: _Encoding) -> cp.Expression:
    """sum_j M_j x_j + c: exact."""
    m = enc.maps[node.name]
    y = m.mats[0] @ xs[0] + m.offset
    for M, x in zip(m.mats[1:], xs[1:]):
        y = y + M @ x
    return y


def _encode_relu(node: Node, xs: list[cp.Expression], enc: _Encoding) -> cp.Expression:
    """The triangle relaxation of y = max(0, z) over the bounds l <= z <= u of z."""
    z = xs[0]
    l, u = enc.bounds[node.inputs[0]]
    unstable = (l < 0) & (u > 0)
    width = np.where(unstable, u - l, 1.0)
    a = np.where(unstable, u / width, (l >= 0).astype(float))
    b = np.where(unstable, -l * u / width, 0.0)
    y = cp.Variable(z.shape[0])
    enc.constraints += [z >= l, z <= u, y >= 0, y >= z, y <= cp.multiply(a, z) + b]
    return y


_ENCODERS: dict[type[Layer], Encoder] = {
    Linear: _encode_linear,
    Conv: _encode_linear,
    Affine: _encode_linear,
    Add: _encode_linear,
    AvgPool: _encode_linear,
    Reshape: _encode_linear,
    Transpose: _encode_linear,
    Pad: _encode_linear,
    Concat: _encode_linear,
    Relu: _encode_relu,
}

# Linear ops that only move values around (and add constants): bounds follow exactly.
_REARRANGE = (Reshape, Transpose, Pad, Concat)


# ----------------------------------------------------------------------- the solver

def _minimize_rows(expr: cp.Expression, constraints: list[cp.Constraint], rows: np.ndarray) -> np.ndarray:
    """min over the LP of rows[i] . expr for each row (k, n) -> (k,): one compiled problem,
    one HiGHS solve per row."""
    w = cp.Parameter(expr.shape[0])
    problem = cp.Problem(cp.Minimize(w @ expr), constraints)
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        w.value = row
        problem.solve(solver=cp.HIGHS)
        if problem.status != cp.OPTIMAL:
            raise RuntimeError(f"LP reference: HiGHS returned status '{problem.status}'")
        out[i] = problem.value
    return out


def _widen(lower: np.ndarray, upper: np.ndarray, margin: float) -> Bounds:
    """[lower - margin (1 + |lower|), upper + margin (1 + |upper|)]."""
    return lower - margin * (1 + np.abs(lower)), upper + margin * (1 + np.abs(upper))


def _lp_bounds(expr: cp.Expression, constraints: list[cp.Constraint], margin: float) -> Bounds:
    """Widened min and max of every entry of expr over the LP."""
    eye = np.eye(expr.shape[0])
    return _widen(_minimize_rows(expr, constraints, eye), -_minimize_rows(expr, constraints, -eye), margin)


def _f32_outward(lower: np.ndarray, upper: np.ndarray, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """float64 bounds rounded outward to float32 tensors of `shape`."""
    lo = torch.from_numpy(lower).reshape(shape)
    hi = torch.from_numpy(upper).reshape(shape)
    lo32, hi32 = lo.float(), hi.float()
    lo32 = torch.where(lo32.double() > lo, torch.nextafter(lo32, torch.tensor(-math.inf)), lo32)
    hi32 = torch.where(hi32.double() < hi, torch.nextafter(hi32, torch.tensor(math.inf)), hi32)
    return lo32, hi32


class LPReference(Domain):
    """The exact optimum of the triangle relaxation, per neuron (see the module docstring)."""

    name = "lp"

    def __init__(self, net: Network, options: LPOptions = LPOptions()) -> None:
        super().__init__(net)
        if options.intermediate not in ("lp", "crown"):
            raise ValueError(f"LPOptions.intermediate must be 'lp' or 'crown', got '{options.intermediate}'")
        self.options = options
        shapes = {n.name: n.shape for n in net.nodes}
        self._maps = {n.name: _affine_map(n, shapes) for n in net.nodes[1:] if not isinstance(n.layer, Relu)}

    def check(self, net: Network) -> None:
        """One DomainError naming every node whose op has no LP encoding."""
        errors = [unsupported(self.name, n.layer, n.name) for n in net.nodes[1:] if type(n.layer) not in _ENCODERS]
        if errors:
            raise errors[0] if len(errors) == 1 else DomainError("; ".join(str(e) for e in errors))

    def _needed(self, keep: bool, provided: set[str]) -> set[str]:
        """Nodes whose bounds are computed: Relu inputs, the output (or all with keep), closed
        backwards through rearranging ops and Relus, whose bounds follow from their input's."""
        net = self.net
        need = {n.name for n in net.nodes} if keep else {net.output.name}
        need |= {n.inputs[0] for n in net.nodes if isinstance(n.layer, Relu)}
        stack = list(need)
        while stack:
            node = net.node(stack.pop())
            if node.name not in provided and isinstance(node.layer, _REARRANGE + (Relu,)):
                for i in node.inputs:
                    if i not in need:
                        need.add(i)
                        stack.append(i)
        return need

    def _bound_one(self, lower: np.ndarray, upper: np.ndarray, provided: dict[str, Bounds],
                   rows: np.ndarray | None, keep: bool) -> tuple[dict[str, Bounds], Bounds | None]:
        """Bounds of the needed nodes over one box, and (min, max) of rows . output if rows."""
        margin = self.options.margin
        x = cp.Variable(lower.shape[0])
        enc = _Encoding([x >= lower, x <= upper], {self.net.input.name: x},
                        {self.net.input.name: (lower, upper)}, self._maps)
        need = self._needed(keep, set(provided))
        for node in self.net.nodes[1:]:
            xs = [enc.exprs[i] for i in node.inputs]
            enc.exprs[node.name] = _ENCODERS[type(node.layer)](node, xs, enc)
            if node.name not in need:
                continue
            if node.name in provided:
                enc.bounds[node.name] = provided[node.name]
            elif isinstance(node.layer, Relu):
                l, u = enc.bounds[node.inputs[0]]
                enc.bounds[node.name] = (np.maximum(l, 0), np.maximum(u, 0))
            elif isinstance(node.layer, _REARRANGE):
                m = self._maps[node.name]
                ins = [enc.bounds[i] for i in node.inputs]
                enc.bounds[node.name] = (sum((M @ lo for M, (lo, _) in zip(m.mats, ins)), start=m.offset),
                                         sum((M @ hi for M, (_, hi) in zip(m.mats, ins)), start=m.offset))
            else:
                enc.bounds[node.name] = _lp_bounds(enc.exprs[node.name], list(enc.constraints), margin)
        spec = None
        if rows is not None:
            out = enc.exprs[self.net.output.name]
            spec = _widen(_minimize_rows(out, enc.constraints, rows),
                          -_minimize_rows(out, enc.constraints, -rows), margin)
        return enc.bounds, spec

    def bound(self, region: Box, spec: Spec | Tensor | None = None, keep: bool = False) -> BoundResult:
        """LP bounds of the output (every node with keep) and of C y + d, region by region."""
        net = self.net
        B = region.batch_size
        spec = as_spec(spec, B)
        if not (torch.isfinite(region.lower).all() and torch.isfinite(region.upper).all()):
            raise ValueError("the LP reference needs a bounded region")
        crown = None
        if self.options.intermediate == "crown":
            crown = Crown(net).bound(region, keep=True).bounds
        relu_inputs = {n.inputs[0] for n in net.nodes if isinstance(n.layer, Relu)}
        per_region: list[dict[str, Bounds]] = []
        spec_rows: list[Bounds] = []
        for b in range(B):
            provided: dict[str, Bounds] = {}
            if crown is not None:
                provided = {name: _widen(crown[name][0][b].double().reshape(-1).numpy(),
                                         crown[name][1][b].double().reshape(-1).numpy(),
                                         self.options.crown_margin) for name in relu_inputs}
            rows = None if spec is None else spec.C[b].double().numpy()
            bounds, rows_bounds = self._bound_one(region.lower[b].double().reshape(-1).numpy(),
                                                  region.upper[b].double().reshape(-1).numpy(),
                                                  provided, rows, keep)
            per_region.append(bounds)
            if rows_bounds is not None:
                spec_rows.append(rows_bounds)
        names = [n.name for n in net.nodes] if keep else [net.output.name]
        stacked = {}
        for name in names:
            shape = (B, *net.node(name).shape)
            stacked[name] = _f32_outward(np.stack([r[name][0] for r in per_region]),
                                         np.stack([r[name][1] for r in per_region]), shape)
        out_l, out_u = stacked[net.output.name]
        spec_lower = spec_upper = None
        if spec is not None:
            d = spec.d.double().numpy()
            lo = np.stack([s[0] for s in spec_rows]) + d
            hi = np.stack([s[1] for s in spec_rows]) + d
            spec_lower, spec_upper = _f32_outward(lo, hi, tuple(spec.d.shape))
        return self.finish(out_l, out_u, spec, spec_lower, spec_upper, bounds=stacked if keep else None)
