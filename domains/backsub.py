"""Back-substitution of linear bounds through the IR: the engine behind
DeepPoly, CROWN and alpha-CROWN.

A linear bound on a node t is carried backwards as coefficient tensors
lA, uA of shape (B, m, *shape(v)) for every node v, plus constants
lbias, ubias of shape (B, m), meaning

    lA . v + lbias  <=  (A_t . t)  <=  uA . v + ubias     for every input in the region.

Linear ops map the coefficients exactly (their transpose); a nonlinear op
is replaced by its `Relaxation` (a lower line and an upper line per neuron,
valid on the node's input bounds). At the Input node the coefficients are
concretised over the box: min over x in [lo, hi] of lA . x.

Rows that start at single neurons of a convolution (intermediate bounds of
conv layers) are carried as `Patches`: one window per row over the neuron's
receptive field instead of the whole node, mapped through Conv, Affine and
the activations window by window and made dense at the first other op. Same
bounds as dense rows (up to float rounding), a fraction of the work.

Shapes: B = batch of regions, m = rows being bounded (spec rows or neurons).
Soundness: every map below is exact or uses a relaxation that is valid on the
given input bounds, so the result is a sound bound (up to float rounding,
which the tests bound by 1e-5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from domains.base import DeadlineExceeded
from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Input, Layer, Linear, MaxPool, Network, Node, Pad, Relu,
    Reshape, Sigmoid, Tanh, Transpose,
)

Bounds = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Relaxation:
    """Elementwise linear relaxation of y = f(x) on x in [l, u]:
    lw * x + lb <= y <= uw * x + ub. All tensors (B, *shape)."""

    lw: Tensor
    lb: Tensor
    uw: Tensor
    ub: Tensor


@dataclass(frozen=True)
class MaxPoolRelaxation:
    """DeepPoly's MaxPool relaxation: y >= x[lower_index]; y <= x[upper_index]
    where `exact` (one window element dominates), else y <= upper_const.
    Indices point into the zero-padded, flattened input; shapes (B, *out_shape)."""

    lower_index: Tensor  # long
    upper_index: Tensor  # long
    exact: Tensor  # bool
    upper_const: Tensor


# ----------------------------------------------------------------- relaxations

def relu_relaxation(l: Tensor, u: Tensor, lower_slope: Tensor | None = None) -> Relaxation:
    """Triangle relaxation of ReLU. Upper: the chord u (x - l) / (u - l) on
    unstable neurons. Lower: slope `lower_slope` in [0, 1] (default: the
    area heuristic 1 if u > -l else 0, used by DeepPoly and CROWN)."""
    unstable = (l < 0) & (u > 0)
    active = l >= 0
    denom = torch.where(unstable, u - l, torch.ones_like(u))
    uw = torch.where(unstable, u / denom, active.to(u.dtype))
    ub = torch.where(unstable, -l * u / denom, torch.zeros_like(u))
    if lower_slope is None:
        lower_slope = (u > -l).to(u.dtype)
    lw = torch.where(unstable, lower_slope, active.to(u.dtype))
    return Relaxation(lw, torch.zeros_like(l), uw, ub)


def _s_shaped_relaxation(f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor],
                         l: Tensor, u: Tensor) -> Relaxation:
    """DeepPoly's relaxation of sigmoid/tanh (Singh et al., POPL 2019, Sec. 4):
    chord slope lam = (f(u)-f(l))/(u-l), tangent-like slope lam' = min(f'(l), f'(u)).
    l > 0: lower chord through l, upper lam' through u; u <= 0: the mirror;
    otherwise both lines use lam'. Intercepts are widened by a tiny margin
    against float rounding."""
    fl, fu = f(l), f(u)
    width = u - l
    flat = width <= 1e-6
    lam = torch.where(flat, torch.zeros_like(u), (fu - fl) / torch.where(flat, torch.ones_like(width), width))
    lam_p = torch.minimum(df(l), df(u))
    pos, neg = l > 0, u <= 0
    lw = torch.where(pos, lam, lam_p)
    uw = torch.where(neg, lam, lam_p)
    lw = torch.where(flat, torch.zeros_like(lw), lw)
    uw = torch.where(flat, torch.zeros_like(uw), uw)
    lb = torch.where(flat, torch.minimum(fl, fu), fl - lw * l)
    ub = torch.where(flat, torch.maximum(fl, fu), fu - uw * u)
    slack = 1e-6 * (1 + fl.abs() + fu.abs() + (lw.abs() + uw.abs()) * (l.abs() + u.abs()))
    return Relaxation(lw, lb - slack, uw, ub + slack)


def sigmoid_relaxation(l: Tensor, u: Tensor) -> Relaxation:
    return _s_shaped_relaxation(torch.sigmoid, lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x)), l, u)


def tanh_relaxation(l: Tensor, u: Tensor) -> Relaxation:
    return _s_shaped_relaxation(torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, l, u)


def _pool_windows(layer: MaxPool, x: Tensor, fill: float) -> Tensor:
    """(B, C, oH, oW, k) window values of x padded with `fill`."""
    t, le, b, r = layer.pads
    xp = F.pad(x, (le, r, t, b), value=fill)
    win = xp.unfold(2, layer.kernel[0], layer.stride[0]).unfold(3, layer.kernel[1], layer.stride[1])
    return win.reshape(*win.shape[:4], -1)


def maxpool_relaxation(layer: MaxPool, l: Tensor, u: Tensor) -> MaxPoolRelaxation:
    """DeepPoly's MaxPool transformer: if the element with the largest lower
    bound dominates its window (its lower >= every other upper), y equals it;
    otherwise y >= that element and y <= max of the window's uppers."""
    B, C, H, W = l.shape
    t, le, b, r = layer.pads
    Hp, Wp = H + t + b, W + le + r
    index = torch.arange(Hp * Wp, device=l.device).reshape(1, 1, Hp, Wp).expand(B, C, Hp, Wp)
    index_win = index.unfold(2, layer.kernel[0], layer.stride[0]).unfold(3, layer.kernel[1], layer.stride[1])
    index_win = index_win.reshape(*index_win.shape[:4], -1)
    lw = _pool_windows(layer, l, float("-inf"))
    uw = _pool_windows(layer, u, float("-inf"))
    best = lw.argmax(-1, keepdim=True)
    best_lower = lw.gather(-1, best).squeeze(-1)
    others_upper = uw.scatter(-1, best, float("-inf")).amax(-1)
    exact = best_lower >= others_upper
    chosen = index_win.gather(-1, best).squeeze(-1)
    return MaxPoolRelaxation(chosen, chosen, exact, uw.amax(-1))


# ------------------------------------------------------------- backward maps
# Each takes (layer, node, lA, uA, ctx) and returns (per-input list of (lA, uA),
# lbias_add, ubias_add). lA/uA may be None when only one side is bounded.

Side = Tensor | None
BackwardResult = tuple[list[tuple[Side, Side]], Tensor | float, Tensor | float]


def _flat_dot(A: Tensor, v: Tensor) -> Tensor:
    """sum over the per-sample dims of A (B or 1, m, *s) * v (B or 1, *s) -> (B, m).
    A batch-independent A (leading dim 1) becomes one matrix product."""
    if A.shape[0] == 1:
        return v.reshape(v.shape[0], -1).matmul(A[0].reshape(A.shape[1], -1).transpose(0, 1))
    if v.shape[0] == 1:
        return A.reshape(A.shape[0], A.shape[1], -1).matmul(v.reshape(-1))
    return torch.bmm(A.reshape(A.shape[0], A.shape[1], -1), v.reshape(v.shape[0], -1, 1)).squeeze(-1)


def _map(A: Side, fn: Callable[[Tensor], Tensor]) -> Side:
    return None if A is None else fn(A)


def _linear_back(layer: Linear, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    W, b = layer.weight.to(ctx.dtype), layer.bias.to(ctx.dtype)

    def back(A: Tensor) -> Tensor:
        return A.matmul(W)

    def bias(A: Side) -> Tensor | float:
        return 0.0 if A is None else (A * b).sum(-1) if A.dim() == 3 else (A.matmul(b)).flatten(2).sum(-1)
    return [(_map(lA, back), _map(uA, back))], bias(lA), bias(uA)


def _conv_back(layer: Conv, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    in_shape = ctx.shapes[node.inputs[0]]
    W = layer.weight.to(ctx.dtype)
    t, le, bo, r = layer.pads
    Hp, Wp = in_shape[1] + t + bo, in_shape[2] + le + r

    def back(A: Tensor) -> Tensor:
        B, m = A.shape[:2]
        out = A.reshape(B * m, *A.shape[2:])
        kh, kw = W.shape[2:]
        oh = (out.shape[2] - 1) * layer.stride[0] + layer.dilation[0] * (kh - 1) + 1
        ow = (out.shape[3] - 1) * layer.stride[1] + layer.dilation[1] * (kw - 1) + 1
        padding = layer.symmetric_padding
        if padding is not None:  # the transposed conv drops the padding itself: no cropped copy
            x = F.conv_transpose2d(out, W, None, layer.stride, padding, (Hp - oh, Wp - ow), 1, layer.dilation)
            return x.reshape(B, m, *in_shape)
        x = F.conv_transpose2d(out, W, None, layer.stride, 0, (Hp - oh, Wp - ow), 1, layer.dilation)
        x = x[:, :, t:t + in_shape[1], le:le + in_shape[2]]
        return x.reshape(B, m, *in_shape)

    def bias(A: Side) -> Tensor | float:
        return 0.0 if A is None else (A.sum((-1, -2)) * layer.bias.to(ctx.dtype)).sum(-1)
    return [(_map(lA, back), _map(uA, back))], bias(lA), bias(uA)


def _affine_back(layer: Affine, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    s, c = layer.scale.to(ctx.dtype), layer.shift.to(ctx.dtype)
    bias = (lambda A: 0.0 if A is None else (A * c).flatten(2).sum(-1))
    return [(_map(lA, lambda A: A * s), _map(uA, lambda A: A * s))], bias(lA), bias(uA)


def _add_back(layer: Add, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    return [(lA, uA), (lA, uA)], 0.0, 0.0


def _reshape_back(layer: Layer, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    in_shape = ctx.shapes[node.inputs[0]]
    back = (lambda A: A.reshape(*A.shape[:2], *in_shape))
    return [(_map(lA, back), _map(uA, back))], 0.0, 0.0


def _transpose_back(layer: Transpose, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    inverse = [0] * len(layer.perm)
    for i, p in enumerate(layer.perm):
        inverse[p] = i
    back = (lambda A: A.permute(0, 1, *(p + 2 for p in inverse)))
    return [(_map(lA, back), _map(uA, back))], 0.0, 0.0


def _pad_back(layer: Pad, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    in_shape = ctx.shapes[node.inputs[0]]
    n = len(layer.pads) // 2
    index = tuple(slice(layer.pads[d], layer.pads[d] + in_shape[d]) for d in range(n))

    def back(A: Tensor) -> Tensor:
        return A[(slice(None), slice(None)) + index]

    def bias(A: Side) -> Tensor | float:
        if A is None or layer.value == 0:
            return 0.0
        return (A.flatten(2).sum(-1) - back(A).flatten(2).sum(-1)) * layer.value
    return [(_map(lA, back), _map(uA, back))], bias(lA), bias(uA)


def _concat_back(layer: Concat, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    sizes = [ctx.shapes[i][layer.axis] for i in node.inputs]
    dim = layer.axis + 2
    ls = lA.split(sizes, dim) if lA is not None else [None] * len(sizes)
    us = uA.split(sizes, dim) if uA is not None else [None] * len(sizes)
    return list(zip(ls, us)), 0.0, 0.0


def _avgpool_back(layer: AvgPool, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    in_shape = ctx.shapes[node.inputs[0]]

    def back(A: Tensor) -> Tensor:
        B, m = A.shape[:2]
        x = torch.zeros(1, *in_shape, dtype=A.dtype, device=A.device)
        _, vjp = torch.func.vjp(layer.forward, x.expand(B * m, *in_shape))
        return vjp(A.reshape(B * m, *A.shape[2:]))[0].reshape(B, m, *in_shape)
    return [(_map(lA, back), _map(uA, back))], 0.0, 0.0


def _elementwise_back(relax: Relaxation, lA: Side, uA: Side) -> BackwardResult:
    """Through y = f(x) with lw x + lb <= y <= uw x + ub."""
    lw, lb, uw, ub = (t.unsqueeze(1) for t in (relax.lw, relax.lb, relax.uw, relax.ub))
    nl = nu = None
    lbias: Tensor | float = 0.0
    ubias: Tensor | float = 0.0
    # pos * lw + neg * uw written as A * lw + neg * (uw - lw): fewer passes over A
    if lA is not None:
        neg = lA.clamp(max=0)
        nl = torch.addcmul(lA * lw, neg, uw - lw)
        lbias = _flat_dot(lA, relax.lb) + _flat_dot(neg, relax.ub - relax.lb)
    if uA is not None:
        neg = uA.clamp(max=0)
        nu = torch.addcmul(uA * uw, neg, lw - uw)
        ubias = _flat_dot(uA, relax.ub) + _flat_dot(neg, relax.lb - relax.ub)
    return [(nl, nu)], lbias, ubias


def _activation_back(layer: Layer, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    relax = ctx.relaxation(node)
    if isinstance(relax, Relaxation) and ctx.alpha is not None and node.name in ctx.alpha:
        alpha = ctx.alpha[node.name]  # (B, m, *shape) lower slopes for the current rows
        l, u = ctx.bounds[node.inputs[0]]
        unstable = ((l < 0) & (u > 0)).unsqueeze(1)
        lw_rows = torch.where(unstable, alpha, relax.lw.unsqueeze(1))
        return _elementwise_back_rows(relax, lw_rows, lA, uA)
    return _elementwise_back(relax, lA, uA)


def _elementwise_back_rows(relax: Relaxation, lw_rows: Tensor, lA: Side, uA: Side) -> BackwardResult:
    """ReLU back-substitution with per-row lower slopes (alpha-CROWN); intercept 0."""
    uw = relax.uw.unsqueeze(1)
    nl = nu = None
    lbias: Tensor | float = 0.0
    ubias: Tensor | float = 0.0
    if lA is not None:
        neg = lA.clamp(max=0)
        nl = torch.addcmul(lA * lw_rows, neg, uw - lw_rows)
        lbias = _flat_dot(neg, relax.ub)
    if uA is not None:
        pos = uA.clamp(min=0)
        nu = torch.addcmul(uA * lw_rows, pos, uw - lw_rows)
        ubias = _flat_dot(pos, relax.ub)
    return [(nl, nu)], lbias, ubias


def _maxpool_back(layer: MaxPool, node: Node, lA: Side, uA: Side, ctx: "_Context") -> BackwardResult:
    relax: MaxPoolRelaxation = ctx.relaxation(node)
    in_shape = ctx.shapes[node.inputs[0]]
    C, H, W = in_shape
    t, le, b, r = layer.pads
    Hp, Wp = H + t + b, W + le + r

    def scatter(A: Tensor, index: Tensor, keep: Tensor) -> Tensor:
        A = A * keep.unsqueeze(1)
        B, m = A.shape[:2]
        flat = A.reshape(B, m, C, -1)
        idx = index.reshape(B, 1, C, -1).expand(B, m, C, flat.shape[-1])
        out = torch.zeros(B, m, C, Hp * Wp, dtype=A.dtype, device=A.device).scatter_add(-1, idx, flat)
        return out.reshape(B, m, C, Hp, Wp)[:, :, :, t:t + H, le:le + W]

    ones = torch.ones_like(relax.upper_const)
    exact = relax.exact.to(relax.upper_const.dtype)
    const = (1 - exact) * relax.upper_const
    nl = nu = None
    lbias: Tensor | float = 0.0
    ubias: Tensor | float = 0.0
    if lA is not None:
        pos, neg = lA.clamp(min=0), lA.clamp(max=0)
        nl = scatter(pos, relax.lower_index, ones) + scatter(neg, relax.upper_index, exact)
        lbias = _flat_dot(neg, const)
    if uA is not None:
        pos, neg = uA.clamp(min=0), uA.clamp(max=0)
        nu = scatter(pos, relax.upper_index, exact) + scatter(neg, relax.lower_index, ones)
        ubias = _flat_dot(pos, const)
    return [(nl, nu)], lbias, ubias


BACKWARD: dict[type[Layer], Callable[..., BackwardResult]] = {
    Linear: _linear_back,
    Conv: _conv_back,
    Affine: _affine_back,
    Add: _add_back,
    Reshape: _reshape_back,
    Transpose: _transpose_back,
    Pad: _pad_back,
    Concat: _concat_back,
    AvgPool: _avgpool_back,
    Relu: _activation_back,
    Sigmoid: _activation_back,
    Tanh: _activation_back,
    MaxPool: _maxpool_back,
}


# ------------------------------------------------------------------- patches
# Rows that start at single neurons of a convolution's output (intermediate bounds
# of conv layers) have coefficients that are zero outside the neuron's receptive
# field. Carried as one window per row, they cost O(m * C * ph * pw) instead of the
# dense O(m * C * H * W) per node (auto_LiRPA's "patches" mode has the same idea).


@dataclass(frozen=True)
class Patches:
    """Coefficients of m rows on a (C, H, W) node, zero outside one window per row:
    row r of region b has coefficients coeff[b, r] (C, ph, pw) on the node's entries
    [:, y[b, r] + i, x[b, r] + j]. A window may hang over the node's border; its
    entries there are always zero (a conv's zero padding, not node entries)."""

    coeff: Tensor  # (B or 1, m, C, ph, pw)
    y: Tensor  # (B or 1, m) long: the window's top row in the node's coordinates
    x: Tensor  # (B or 1, m) long: the window's left column

    def index(self, shape: tuple[int, ...]) -> Tensor:
        """(B or 1, m, C, ph, pw) flat indices into the node's C * H * W entries,
        clamped into range (where they are clamped the coefficients are zero)."""
        C, H, W = shape
        ph, pw = self.coeff.shape[-2:]
        rows = (self.y.unsqueeze(-1) + torch.arange(ph)).clamp(0, H - 1)
        cols = (self.x.unsqueeze(-1) + torch.arange(pw)).clamp(0, W - 1)
        pos = rows.unsqueeze(-1) * W + cols.unsqueeze(-2)
        return pos.unsqueeze(2) + (torch.arange(C) * (H * W)).view(C, 1, 1)

    def dense(self, shape: tuple[int, ...]) -> Tensor:
        """The same rows as dense coefficients (B or 1, m, *shape)."""
        index = self.index(shape)
        B = max(index.shape[0], self.coeff.shape[0])
        m = index.shape[1]
        out = torch.zeros(B, m, int(torch.Size(shape).numel()), dtype=self.coeff.dtype)
        out.scatter_add_(2, index.expand(B, *index.shape[1:]).reshape(B, m, -1),
                         self.coeff.expand(B, *self.coeff.shape[1:]).reshape(B, m, -1))
        return out.reshape(B, m, *shape)


def _dense(A: Side | Patches, shape: tuple[int, ...]) -> Side:
    return A.dense(shape) if isinstance(A, Patches) else A


def _gather(v: Tensor, index: Tensor) -> Tensor:
    """Window values (B, m, C, ph, pw) of v (B or 1, *shape) at `index` (B or 1, m, C, ph, pw)."""
    flat = v.reshape(v.shape[0], -1)
    if index.shape[0] == 1:
        return flat[:, index[0]]
    if flat.shape[0] == 1:
        return flat[0][index]
    return flat.gather(1, index.reshape(index.shape[0], -1)).reshape(index.shape)


def _window_sum(A: Tensor) -> Tensor:
    """Sum over the (C, ph, pw) window of each row: (B, m, C, ph, pw) -> (B, m)."""
    return A.sum((2, 3, 4))


def start_patches(shape: tuple[int, ...], index: Tensor, dtype: torch.dtype) -> Patches:
    """One-hot rows of the flat neurons `index` ((k,) or per region (B, k)) of a
    (C, H, W) node as 1 x 1 windows (the patch analogue of `identity_rows`)."""
    C, H, W = shape
    index = index if index.dim() == 2 else index.unsqueeze(0)
    channel = index // (H * W)
    coeff = torch.zeros(*index.shape, C, 1, 1, dtype=dtype)
    coeff.scatter_(2, channel.reshape(*index.shape, 1, 1, 1), 1.0)
    return Patches(coeff, (index % (H * W)) // W, index % W)


PatchSide = Patches | None
# Largest (window in) x (window out) matrix of a conv's map on windows that is built
# and cached (floats); bigger windows go through conv_transpose.
_PATCH_MATRIX_MAX = 4e6
PatchResult = tuple[list[tuple[Side | Patches, Side | Patches]], Tensor | float, Tensor | float]


def _conv_back_patches(layer: Conv, node: Node, lP: PatchSide, uP: PatchSide, ctx: "_Context") -> PatchResult:
    """A window (Co, ph, pw) at (y, x) of the conv's output maps to the window
    conv_transpose(coeff) (Ci, (ph-1) s + d (k-1) + 1, ...) at (y s - top, x s - left)
    of its input; entries over the input's border (zero padding) are zeroed. A window
    that grows to the input's size continues as dense rows."""
    C, H, W = ctx.shapes[node.inputs[0]]
    weight = layer.weight.to(ctx.dtype)
    kh, kw = weight.shape[2:]
    top, left = layer.pads[:2]
    P0 = lP if lP is not None else uP
    ph, pw = P0.coeff.shape[-2:]
    nh = (ph - 1) * layer.stride[0] + layer.dilation[0] * (kh - 1) + 1
    nw = (pw - 1) * layer.stride[1] + layer.dilation[1] * (kw - 1) + 1
    y, x = P0.y * layer.stride[0] - top, P0.x * layer.stride[1] - left
    rows = y.unsqueeze(-1) + torch.arange(nh)
    cols = x.unsqueeze(-1) + torch.arange(nw)
    inside = (((rows >= 0) & (rows < H)).unsqueeze(-1) & ((cols >= 0) & (cols < W)).unsqueeze(-2)).unsqueeze(2)
    as_dense = nh * nw >= H * W

    Co = weight.shape[0]
    matrix = None
    if Co * ph * pw * C * nh * nw <= _PATCH_MATRIX_MAX:
        key = (id(layer), ph, pw)
        if key not in ctx.patch_matrices:
            basis = torch.eye(Co * ph * pw, dtype=ctx.dtype).reshape(-1, Co, ph, pw)
            ctx.patch_matrices[key] = F.conv_transpose2d(basis, weight, None, layer.stride, 0, 0, 1,
                                                         layer.dilation).reshape(Co * ph * pw, -1)
        matrix = ctx.patch_matrices[key]

    def back(P: PatchSide) -> Side | Patches:
        if P is None:
            return None
        B, m = P.coeff.shape[:2]
        if matrix is not None:  # one GEMM: far faster than conv_transpose on tiny windows
            out = P.coeff.reshape(B * m, -1).matmul(matrix)
        else:
            out = F.conv_transpose2d(P.coeff.reshape(B * m, Co, ph, pw), weight, None, layer.stride, 0, 0, 1,
                                     layer.dilation)
        out = out.reshape(B, m, C, nh, nw) * inside
        new = Patches(out, y, x)
        return new.dense((C, H, W)) if as_dense else new

    def bias(P: PatchSide) -> Tensor | float:
        return 0.0 if P is None else (P.coeff.sum((-1, -2)) * layer.bias.to(ctx.dtype)).sum(-1)
    return [(back(lP), back(uP))], bias(lP), bias(uP)


def _affine_back_patches(layer: Affine, node: Node, lP: PatchSide, uP: PatchSide, ctx: "_Context") -> PatchResult:
    shape = ctx.shapes[node.name]
    index = (lP if lP is not None else uP).index(shape)
    scale = _gather(layer.scale.to(ctx.dtype).expand(shape).unsqueeze(0), index)
    shift = _gather(layer.shift.to(ctx.dtype).expand(shape).unsqueeze(0), index)

    def back(P: PatchSide) -> PatchSide:
        return None if P is None else Patches(P.coeff * scale, P.y, P.x)

    def bias(P: PatchSide) -> Tensor | float:
        return 0.0 if P is None else _window_sum(P.coeff * shift)
    return [(back(lP), back(uP))], bias(lP), bias(uP)


def _activation_back_patches(layer: Layer, node: Node, lP: PatchSide, uP: PatchSide,
                             ctx: "_Context") -> PatchResult:
    """`_elementwise_back` on windows: the relaxation's lines are gathered at each row's window."""
    relax = ctx.relaxation(node)
    shape = ctx.shapes[node.name]
    if not isinstance(relax, Relaxation) or (ctx.alpha is not None and node.name in ctx.alpha):
        return BACKWARD[type(layer)](layer, node, _dense(lP, shape), _dense(uP, shape), ctx)
    P0 = lP if lP is not None else uP
    index = P0.index(shape)
    lw, uw = _gather(relax.lw, index), _gather(relax.uw, index)
    intercepts = bool(relax.lb.any())
    lb = _gather(relax.lb, index) if intercepts else None
    ub = _gather(relax.ub, index)
    nl = nu = None
    lbias: Tensor | float = 0.0
    ubias: Tensor | float = 0.0
    if lP is not None:
        A = lP.coeff
        neg = A.clamp(max=0)
        nl = Patches(torch.addcmul(A * lw, neg, uw - lw), P0.y, P0.x)
        lbias = _window_sum(neg * ub if lb is None else A * lb + neg * (ub - lb))
    if uP is not None:
        A = uP.coeff
        neg = A.clamp(max=0)
        nu = Patches(torch.addcmul(A * uw, neg, lw - uw), P0.y, P0.x)
        ubias = _window_sum((A - neg) * ub if lb is None else A * ub + neg * (lb - ub))
    return [(nl, nu)], lbias, ubias


PATCH_BACKWARD: dict[type[Layer], Callable[..., PatchResult]] = {
    Conv: _conv_back_patches,
    Affine: _affine_back_patches,
    Relu: _activation_back_patches,
    Sigmoid: _activation_back_patches,
    Tanh: _activation_back_patches,
}

# Ops whose output bounds follow exactly (and cheaply) from their input bounds.
_MONOTONE = (Relu, Sigmoid, Tanh)
_REARRANGE = (Reshape, Transpose, Pad, Concat)


@dataclass
class _Context:
    """Everything a backward map may read: shapes, bounds, relaxations."""

    net: Network
    shapes: dict[str, tuple[int, ...]]
    bounds: dict[str, Bounds]
    relaxations: dict[str, Relaxation | MaxPoolRelaxation]
    relax_fn: Callable[[Layer, Tensor, Tensor], Relaxation | MaxPoolRelaxation]
    dtype: torch.dtype
    alpha: dict[str, Tensor] | None = None
    infeasible: Tensor | None = None  # (B,) bool: split constraints made the subdomain empty
    # beta-CROWN: node -> (B, m, *shape) added to the lower-bound coefficients of that
    # node's output when the backward pass reaches it (Lagrangian terms of split constraints)
    split_terms: dict[str, Tensor] | None = None
    # node -> lower-bound coefficients (B or 1, m, *shape) that reached it in the last
    # backward pass, for the nodes whose names are keys (branching scores read them)
    record: dict[str, Tensor | None] | None = None
    # (id(conv layer), ph, pw) -> that conv's linear map on windows as a matrix (see
    # _conv_back_patches); the layers live as long as the context's network
    patch_matrices: dict[tuple[int, int, int], Tensor] = field(default_factory=dict)
    stop: float | None = None  # time.perf_counter() deadline of the pass (DeadlineExceeded past it)

    def relaxation(self, node: Node):
        if node.name not in self.relaxations:
            l, u = self.bounds[node.inputs[0]]
            self.relaxations[node.name] = self.relax_fn(node.layer, l, u)
        return self.relaxations[node.name]


def fixed_context(net: Network, bounds: dict[str, Bounds], dtype: torch.dtype) -> _Context:
    """A context over given bounds (the input box under the input node's name, and
    the bounds of every node a relaxation reads), e.g. kept from an earlier pass;
    subdomains where some given l > u are marked infeasible."""
    ctx = _Context(net, {n.name: n.shape for n in net.nodes},
                   {k: (l.to(dtype), u.to(dtype)) for k, (l, u) in bounds.items()}, {},
                   default_relaxation, dtype)
    B = max(l.shape[0] for l, _ in bounds.values())
    ctx.infeasible = torch.zeros(B, dtype=torch.bool)
    for l, u in ctx.bounds.values():
        ctx.infeasible = ctx.infeasible | (l > u).reshape(l.shape[0], -1).any(1)
    return ctx


def ancestors(net: Network, target: str) -> set[str]:
    """Names of `target` and every node it depends on."""
    by_name = {n.name: n for n in net.nodes}
    seen, stack = set(), [target]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(by_name[name].inputs)
    return seen


def backward(ctx: _Context, target: str, lA: Side | Patches, uA: Side | Patches, lower: Tensor, upper: Tensor,
             stop: dict[str, tuple[Side, Side]] | None = None) -> tuple[Tensor | None, Tensor | None]:
    """Bound A . target over the input box [lower, upper] (B, *input_shape).
    lA/uA: (B, m, *shape(target)), or `Patches` of the same rows (carried as
    windows while the ops have patch maps, dense from the first that has not);
    returns (lower (B, m) or None, upper or None).

    With `ctx.split_terms`, the lower side bounds A . target + sum_v T_v . v
    instead (T_v = split_terms[v] added when the pass reaches node v); with
    `ctx.record`, the lower-side coefficients reaching the recorded nodes
    (after their split terms) are stored there."""
    needed = ancestors(ctx.net, target)
    coeffs: dict[str, tuple[Side, Side]] = {target: (lA, uA)}
    lbias: Tensor | float = 0.0
    ubias: Tensor | float = 0.0
    for node in reversed(ctx.net.nodes):
        if node.name not in needed or node.name not in coeffs:
            continue
        if ctx.stop is not None and time.perf_counter() > ctx.stop:
            raise DeadlineExceeded(f"back-substitution abandoned at node '{node.name}': past the deadline")
        nlA, nuA = coeffs.pop(node.name)
        shape = ctx.shapes[node.name]
        patches = isinstance(nlA, Patches) or isinstance(nuA, Patches)
        if patches and ((ctx.split_terms is not None and node.name in ctx.split_terms)
                        or (ctx.record is not None and node.name in ctx.record)):
            nlA, nuA, patches = _dense(nlA, shape), _dense(nuA, shape), False
        if ctx.split_terms is not None and nlA is not None and node.name in ctx.split_terms:
            nlA = nlA + ctx.split_terms[node.name]
        if ctx.record is not None and node.name in ctx.record:
            ctx.record[node.name] = nlA
        if isinstance(node.layer, Input):
            return _concretise(nlA, nuA, lbias, ubias, lower, upper)
        if patches and type(node.layer) in PATCH_BACKWARD:
            parts, lb_add, ub_add = PATCH_BACKWARD[type(node.layer)](node.layer, node, nlA, nuA, ctx)
        else:
            parts, lb_add, ub_add = BACKWARD[type(node.layer)](node.layer, node, _dense(nlA, shape),
                                                                _dense(nuA, shape), ctx)
        lbias = lbias + lb_add
        ubias = ubias + ub_add
        for name, (pl, pu) in zip(node.inputs, parts):
            if name in coeffs:
                ol, ou = coeffs[name]
                in_shape = ctx.shapes[name]
                ol, ou, pl, pu = (_dense(t, in_shape) for t in (ol, ou, pl, pu))
                coeffs[name] = (None if ol is None else ol + pl, None if ou is None else ou + pu)
            else:
                coeffs[name] = (pl, pu)
    raise RuntimeError(f"node '{target}' does not depend on the input")


def _concretise(lA: Side | Patches, uA: Side | Patches, lbias: Tensor | float, ubias: Tensor | float,
                lower: Tensor, upper: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """min / max of A . x + bias over the box [lower, upper] (B, *input_shape)."""
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    lo = hi = None
    for A, sign in ((lA, -1.0), (uA, 1.0)):
        if A is None:
            continue
        if isinstance(A, Patches):
            index = A.index(tuple(lower.shape[1:]))
            value = _window_sum(A.coeff * _gather(center, index)) \
                + sign * _window_sum(A.coeff.abs() * _gather(radius, index))
        else:
            value = _flat_dot(A, center) + sign * _flat_dot(A.abs(), radius)
        if sign < 0:
            lo = value + lbias
        else:
            hi = value + ubias
    return lo, hi


def identity_rows(shape: tuple[int, ...], index: Tensor, dtype: torch.dtype) -> Tensor:
    """(1, k, *shape) one-hot rows selecting the flat neuron indices `index` (k,).
    The leading 1 broadcasts over the batch: coefficients stay batch-independent
    until the first relaxation, which saves a factor B on the linear layers."""
    n = int(torch.Size(shape).numel())
    eye = torch.zeros(len(index), n, dtype=dtype)
    eye[torch.arange(len(index)), index] = 1
    return eye.reshape(1, len(index), *shape)


def node_bounds(ctx: _Context, node: Node, lower: Tensor, upper: Tensor, budget: float,
                only: Tensor | None = None, fallback: Bounds | None = None) -> Bounds:
    """Bounds of every neuron of `node` by back-substitution, in chunks of rows so
    that B * rows * (largest node size) stays under `budget` floats. If `only`
    (flat neuron indices) is given, the other neurons keep `fallback`."""
    shape = ctx.shapes[node.name]
    B = lower.shape[0]
    n = int(torch.Size(shape).numel())
    index = torch.arange(n) if only is None else only
    if fallback is None:
        lo = torch.full((B, n), float("-inf"), dtype=ctx.dtype)
        hi = torch.full((B, n), float("inf"), dtype=ctx.dtype)
    else:
        lo, hi = fallback[0].reshape(B, n), fallback[1].reshape(B, n)
    widest = max(int(torch.Size(s).numel()) for s in ctx.shapes.values())
    chunk = max(1, int(budget // max(1, B * widest)))
    los, his = [], []
    for start in range(0, len(index), chunk):
        rows = index[start:start + chunk]
        A = start_patches(shape, rows, ctx.dtype) if isinstance(node.layer, Conv) \
            else identity_rows(shape, rows, ctx.dtype)
        l_rows, u_rows = backward(ctx, node.name, A, A, lower, upper)
        los.append(l_rows)
        his.append(u_rows)
    if len(index):
        lo = lo.index_copy(1, index, torch.cat(los, 1)) if only is not None else torch.cat(los, 1)
        hi = hi.index_copy(1, index, torch.cat(his, 1)) if only is not None else torch.cat(his, 1)
    if fallback is not None:
        fl, fu = fallback[0].reshape(B, n), fallback[1].reshape(B, n)
        lo, hi = torch.maximum(lo, fl), torch.minimum(hi, fu)
        if only is not None:
            # Rows were chosen by the batch's union of unstable neurons; a neuron the
            # fallback shows stable in *this* region keeps the fallback, so every
            # region's bounds are the same as when it is bounded alone.
            stable = (fl >= 0) | (fu <= 0)
            lo, hi = torch.where(stable, fl, lo), torch.where(stable, fu, hi)
    return lo.reshape(B, *shape), hi.reshape(B, *shape)


def node_bounds_per_sample(ctx: _Context, node: Node, lower: Tensor, upper: Tensor, budget: float,
                           mask: Tensor, fallback: Bounds) -> Bounds:
    """As `node_bounds` with `only`, but each region back-substitutes only its own
    neurons in `mask` (B, n): the K = max per-region count rows become (B, K, *shape)
    one-hot coefficients (regions with fewer pad with other neurons, whose bounds are
    sound too). Cheaper than the batch's union of rows when regions differ, e.g.
    the many small boxes of input splitting. Same bounds as `node_bounds`."""
    shape = ctx.shapes[node.name]
    B, n = mask.shape
    K = int(mask.sum(1).max())
    fl, fu = fallback[0].reshape(B, n), fallback[1].reshape(B, n)
    if K == 0:
        return fallback
    index = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :K]  # (B, K), masked neurons first
    widest = max(int(torch.Size(s).numel()) for s in ctx.shapes.values())
    chunk = max(1, int(budget // max(1, B * widest)))
    los, his = [], []
    for start in range(0, K, chunk):
        rows = index[:, start:start + chunk]
        if isinstance(node.layer, Conv):
            A = start_patches(shape, rows, ctx.dtype)
        else:
            A = torch.zeros(B, rows.shape[1], n, dtype=ctx.dtype).scatter_(2, rows.unsqueeze(-1), 1.0)
            A = A.reshape(B, rows.shape[1], *shape)
        l_rows, u_rows = backward(ctx, node.name, A, A, lower, upper)
        los.append(l_rows)
        his.append(u_rows)
    lo = fl.scatter(1, index, torch.maximum(torch.cat(los, 1), fl.gather(1, index)))
    hi = fu.scatter(1, index, torch.minimum(torch.cat(his, 1), fu.gather(1, index)))
    stable = (fl >= 0) | (fu <= 0)
    lo, hi = torch.where(stable, fl, lo), torch.where(stable, fu, hi)
    return lo.reshape(B, *shape), hi.reshape(B, *shape)


# ------------------------------------------------------------------ the driver

_NONLINEAR = (Relu, Sigmoid, Tanh, MaxPool)
_LINEAR_OPS = (Linear, Conv, Affine, Add, AvgPool)


def _interval(node: Node, bounds: dict[str, Bounds]) -> Bounds | None:
    """Interval bounds of a linear node from its inputs' bounds (center-radius), if known."""
    if any(i not in bounds for i in node.inputs):
        return None
    ins = [bounds[i] for i in node.inputs]
    layer = node.layer.cast(ins[0][0].dtype)
    centers = [(l + u) / 2 for l, u in ins]
    radii = [(u - l) / 2 for l, u in ins]
    c = layer.forward(*centers)
    if isinstance(layer, Linear):
        r = radii[0].matmul(layer.weight.to(c.dtype).abs().transpose(0, 1))
    elif isinstance(layer, Conv):
        r = Conv(layer.weight.abs(), torch.zeros_like(layer.bias), layer.stride, layer.pads,
                 layer.dilation).cast(c.dtype).forward(radii[0])
    elif isinstance(layer, Affine):
        r = radii[0] * layer.scale.to(c.dtype).abs()
    else:  # Add, AvgPool: nonnegative linear maps
        r = layer.forward(*radii) if not isinstance(layer, AvgPool) else layer.forward(radii[0])
    return c - r, c + r


def needed_nodes(net: Network, everything: bool, output: bool = True) -> set[str]:
    """Nodes whose bounds the relaxations need (inputs of nonlinear ops, closed
    backwards through rearranging/monotone ops), plus the output (if `output`)."""
    if everything:
        return {n.name for n in net.nodes}
    by_name = {n.name: n for n in net.nodes}
    need = {net.output.name} if output else set()
    for n in net.nodes:
        if isinstance(n.layer, _NONLINEAR):
            need.add(n.inputs[0])
    for n in reversed(net.nodes):
        if n.name in need and isinstance(n.layer, _REARRANGE + _MONOTONE + (MaxPool,)):
            need.update(n.inputs)
    return need & set(by_name)


def propagate(net: Network, lower: Tensor, upper: Tensor,
              relax_fn: Callable[[Layer, Tensor, Tensor], Relaxation | MaxPoolRelaxation],
              everything: bool, unstable_only: bool, budget: float, keep: bool = False,
              splits: dict[str, Tensor] | None = None,
              prior: dict[str, Bounds] | None = None, output: bool = True,
              stop: float | None = None) -> _Context:
    """Compute bounds of the nodes the relaxations need (or of every node), in
    topological order, each by back-substitution to the input box.

    prior: bounds already known for some nodes (e.g. a cheaper pass, or a region
    containing this one); they are intersected with the new ones, and neurons
    they show stable are not back-substituted. output=False: skip the output's
    bounds when nothing reads them (only the relaxations' inputs are needed).

    keep: accepted for symmetry; every node not back-substituted gets interval
    bounds from its inputs anyway (cheap, sound), so the result does not depend on it. splits: branch-and-bound phase
    constraints per ReLU-input node, (B, *shape) in {-1, 0, +1}: +1 restricts
    the region to x >= 0, -1 to x <= 0; the node's bounds are clamped
    accordingly, and a subdomain whose bounds cross (l > u) is empty
    (`ctx.infeasible`). stop: a time.perf_counter() deadline, checked before each node and
    each step of a back-substitution; past it the pass raises DeadlineExceeded (a deep conv
    net's pass takes seconds). The returned context keeps no deadline."""
    dtype = lower.dtype
    ctx = _Context(net, {n.name: n.shape for n in net.nodes}, {}, {}, relax_fn, dtype, stop=stop)
    ctx.bounds[net.input.name] = (lower, upper)
    ctx.infeasible = torch.zeros(lower.shape[0], dtype=torch.bool)
    consumers = net.consumers()
    by_name = {n.name: n for n in net.nodes}
    need = needed_nodes(net, everything, output)
    splits = splits or {}
    for node in net.nodes[1:]:
        if stop is not None and time.perf_counter() > stop:
            raise DeadlineExceeded(f"bounds abandoned at node '{node.name}': past the deadline")
        layer = node.layer
        have_inputs = all(i in ctx.bounds for i in node.inputs)
        if isinstance(layer, _MONOTONE + (MaxPool,) + _REARRANGE):
            if have_inputs:
                ctx.bounds[node.name] = (layer.forward(*(ctx.bounds[i][0] for i in node.inputs)),
                                         layer.forward(*(ctx.bounds[i][1] for i in node.inputs)))
            continue
        interval = _interval(node, ctx.bounds)
        if prior is not None and node.name in prior:
            pl, pu = (t.to(dtype) for t in prior[node.name])
            interval = (pl, pu) if interval is None else \
                (torch.maximum(interval[0], pl), torch.minimum(interval[1], pu))
        if node.name not in need:
            if interval is not None:  # cheap, and the same whether or not bounds are kept
                ctx.bounds[node.name] = interval
            continue
        if interval is not None and isinstance(layer, (Linear, Conv, Affine)) and \
                isinstance(by_name[node.inputs[0]].layer, Input):
            bounds = interval  # one linear map of the box: interval is exact
        else:
            only = None
            feeds_relu_only = all(isinstance(by_name[c].layer, Relu) for c in consumers[node.name]) \
                and consumers[node.name] and not everything
            per_sample = None
            if unstable_only and interval is not None and feeds_relu_only:
                l, u = interval
                unstable = ((l < 0) & (u > 0)).reshape(l.shape[0], -1)
                only = unstable.any(0).nonzero().flatten()
                if 4 * int(unstable.sum(1).max()) < 3 * len(only):
                    per_sample = unstable
            if per_sample is not None:
                bounds = node_bounds_per_sample(ctx, node, lower, upper, budget, per_sample, interval)
            else:
                bounds = node_bounds(ctx, node, lower, upper, budget, only, interval)
        if node.name in splits:
            bounds = _apply_splits(ctx, bounds, splits[node.name])
        ctx.bounds[node.name] = bounds
    ctx.stop = None
    return ctx


def _apply_splits(ctx: _Context, bounds: Bounds, split: Tensor) -> Bounds:
    """Clamp bounds to the phase constraints; record subdomains that became empty."""
    l, u = bounds
    split = split.reshape(l.shape)
    l = torch.where(split > 0, l.clamp(min=0), l)
    u = torch.where(split < 0, u.clamp(max=0), u)
    ctx.infeasible = ctx.infeasible | (l > u).reshape(l.shape[0], -1).any(1)
    return l, u


def bound_rows(ctx: _Context, C: Tensor, lower: Tensor, upper: Tensor, budget: float,
               upper_too: bool = True) -> tuple[Tensor, Tensor | None]:
    """Lower (and upper) bounds of C . output, C (B, m, n_out), chunked over rows."""
    out = ctx.net.output
    B, m = C.shape[:2]
    widest = max(int(torch.Size(s).numel()) for s in ctx.shapes.values())
    chunk = max(1, int(budget // max(1, B * widest)))
    los, his = [], []
    for start in range(0, m, chunk):
        A = C[:, start:start + chunk].to(ctx.dtype).reshape(B, -1, *out.shape)
        lo, hi = backward(ctx, out.name, A, A if upper_too else None, lower, upper)
        los.append(lo)
        his.append(hi)
    return torch.cat(los, 1), (torch.cat(his, 1) if upper_too else None)


def default_relaxation(layer: Layer, l: Tensor, u: Tensor) -> Relaxation | MaxPoolRelaxation:
    """DeepPoly/CROWN relaxations: area-heuristic ReLU, DeepPoly sigmoid/tanh and MaxPool."""
    if isinstance(layer, Relu):
        return relu_relaxation(l, u)
    if isinstance(layer, Sigmoid):
        return sigmoid_relaxation(l, u)
    if isinstance(layer, Tanh):
        return tanh_relaxation(l, u)
    if isinstance(layer, MaxPool):
        return maxpool_relaxation(layer, l, u)
    raise TypeError(f"no relaxation for {layer.op}")


def input_linear_bounds(net: Network, lower: Tensor, upper: Tensor, C: Tensor,
                        budget: float = 2e8) -> tuple[Tensor, Tensor]:
    """CROWN's lower linear bound of the rows C . y in terms of the network input.

    lower/upper: (B, *input_shape), the box (its dtype is the computation dtype);
    C: (B, m, n_out). Returns A (B, m, *input_shape) and b (B, m) with

        C . f(x)  >=  A . x + b     for every x in [lower, upper],

    hence on every sub-box too (the relaxations are valid on the whole box), so
    min over a sub-box of A . x + b bounds C . f there without a new propagation
    (profit.explain.oracle re-concretises it for many candidate boxes). Concretised
    over [lower, upper] itself it equals CROWN's bound.
    """
    ctx = propagate(net, lower, upper, default_relaxation, everything=False, unstable_only=True,
                    budget=budget)
    B, m = C.shape[:2]
    rows = C.to(ctx.dtype).reshape(B, m, *net.output.shape)
    ctx.record = {net.input.name: None}
    zero = torch.zeros_like(lower)
    bias, _ = backward(ctx, net.output.name, rows, None, zero, zero)  # the box {0}: A . 0 + b = b
    A = ctx.record[net.input.name]
    if A is None:
        A = torch.zeros(B, m, *net.input_shape, dtype=ctx.dtype)
    return A.expand(B, *A.shape[1:]), bias
