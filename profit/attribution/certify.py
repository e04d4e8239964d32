"""Certified bounds on the input gradient d f_t / dx over an L-inf ball (explanation stability).

For a ReLU network, grad f_t(x) = W_1^T D_1 W_2^T D_2 ... W_L^T e_t with D_k the diagonal of ReLU
derivatives at x. A domain's pre-activation bounds [l, u] over the ball fix D_k's entry to 1 where
l > 0 and to 0 where u < 0 (stable neurons); an unstable neuron's derivative lies in [0, 1]. The
backward pass then runs in interval arithmetic: a linear layer maps the interval of the gradient
at its output, centre c and radius r, to W^T c +- |W|^T r; a ReLU multiplies by [d_lo, d_hi].

Sound: every gradient at every point of the ball lies in [lower, upper] (a neuron whose bounds lie
within STABLE_RTOL (|l| + |u|) of 0 counts as unstable, so float32 pre-activation bounds do not fix
a derivative wrongly by rounding; the backward pass runs in float64). With every neuron stable the gradient is the same
at every point of the ball: lower == upper, `constant`.

Softplus_beta (beta-smoothed networks): its derivative sigmoid(beta z) is increasing, so over
[l, u] it lies in [sigmoid(beta l), sigmoid(beta u)] (1 above torch's linear threshold beta z > 20),
an interval that narrows as beta falls. The domains other than Box do not bound softplus, so
for such networks the pre-activation bounds default to Box.

Ops: Linear, Conv, Affine, Relu, Softplus, AvgPool, Reshape (a chain); others raise
UnsupportedOpError.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from domains import get_domain
from networks.ir import (
    Affine, AvgPool, Conv, Input, Linear, Network, Relu, Reshape, Softplus, UnsupportedOpError,
)
from profit.attribution.methods import Target, resolve_target
from specs.regions import linf_ball

STABLE_RTOL = 1e-5  # pre-activation bounds within this fraction of their magnitude of 0 leave the derivative open
_OPS = (Input, Linear, Conv, Affine, Relu, Softplus, AvgPool, Reshape)
_SOFTPLUS_THRESHOLD = 20.0  # torch's softplus is linear (derivative 1) where beta z > this


@dataclass(frozen=True)
class GradientBounds:
    """Bounds of d f_target / dx over each region of a batch of B."""

    lower: Tensor  # (B, *input_shape) float64
    upper: Tensor  # (B, *input_shape) float64
    target: Tensor  # (B,) class index
    unstable: Tensor  # (B,) number of ReLU neurons whose derivative the bounds leave open (softplus: all)

    @property
    def constant(self) -> Tensor:
        """(B,) bool: every ReLU is stable, so the saliency map is the same over the whole ball."""
        return self.unstable == 0

    def abs_bounds(self) -> tuple[Tensor, Tensor]:
        """Bounds (B, *input_shape) of |d f_target / dx_i|."""
        lo = torch.where(self.lower > 0, self.lower, torch.where(self.upper < 0, -self.upper,
                                                                  torch.zeros_like(self.lower)))
        return lo, torch.maximum(self.lower.abs(), self.upper.abs())

    def certified_topk(self, k: int) -> Tensor:
        """(B, *input_shape) bool: pixels certified to be among the k largest |gradient| entries at
        every point of the ball: fewer than k other pixels' upper bounds of |grad| reach the
        pixel's lower bound."""
        lo, hi = (t.flatten(1) for t in self.abs_bounds())
        ordered = hi.sort(dim=1).values
        reaching = hi.shape[1] - torch.searchsorted(ordered.contiguous(), lo.contiguous(), side="left")
        rivals = reaching - 1  # the pixel's own upper bound always reaches its lower bound
        return (rivals < k).reshape(self.lower.shape)


def _vjp(fn, shape: tuple[int, ...], v: Tensor) -> Tensor:
    """The transposed linear map of `fn` (from inputs of per-sample `shape`) applied to v."""
    a = torch.zeros((v.shape[0], *shape), dtype=v.dtype, requires_grad=True)
    with torch.enable_grad():
        (c,) = torch.autograd.grad(fn(a), a, v)
    return c


def _interval_product(dl: Tensor, du: Tensor, gl: Tensor, gu: Tensor) -> tuple[Tensor, Tensor]:
    """The interval of d * g for d in [dl, du], g in [gl, gu] (elementwise)."""
    products = torch.stack([dl * gl, dl * gu, du * gl, du * gu])
    return products.amin(0), products.amax(0)


def gradient_bounds(net: Network, x: Tensor, eps: float, target: Target = None, domain: str | None = None,
                    lo: float | None = 0.0, hi: float | None = 1.0) -> GradientBounds:
    """Bounds of d f_target / dx over the L-inf ball of radius eps around each x (B, *input_shape),
    clipped to [lo, hi]; target None: each x's predicted class. Pre-activation bounds from
    `domain` (a name of domains.DOMAINS; default crown, box for networks with Softplus)."""
    bad = [f"{n.layer.op} (node '{n.name}')" for n in net.nodes
           if not isinstance(n.layer, _OPS) or (n is not net.input and len(n.inputs) != 1)]
    if bad:
        raise UnsupportedOpError(f"gradient bounds do not support {', '.join(bad)}")
    x = net.prepare(torch.as_tensor(x)).to(net.dtype)
    t = resolve_target(net, x, target)
    region = linf_ball(x, eps, lo, hi)
    if domain is None:
        domain = "box" if any(isinstance(n.layer, Softplus) for n in net.nodes) else "crown"
    kept = dict(get_domain(domain)(net).bound(region, keep=True).bounds)
    kept.setdefault(net.input.name, (region.lower, region.upper))  # an activation right on the input
    wide = net.to(torch.float64)
    g = torch.zeros(x.shape[0], net.n_outputs, dtype=torch.float64).scatter(1, t.view(-1, 1), 1.0)
    gl, gu = g.reshape(x.shape[0], *net.output_shape), g.reshape(x.shape[0], *net.output_shape)
    unstable = torch.zeros(x.shape[0], dtype=torch.long)
    for node in reversed(wide.nodes[1:]):
        layer, shape = node.layer, wide.node(node.inputs[0]).shape
        if isinstance(layer, Reshape):
            gl, gu = gl.reshape(-1, *shape), gu.reshape(-1, *shape)
        elif isinstance(layer, Relu):
            low, up = (b.to(torch.float64).reshape(gl.shape) for b in kept[node.inputs[0]])
            margin = STABLE_RTOL * (low.abs() + up.abs())
            dl = (low > margin).to(torch.float64)
            du = (up >= -margin).to(torch.float64)
            unstable += (dl != du).flatten(1).sum(1)
            gl, gu = _interval_product(dl, du, gl, gu)
        elif isinstance(layer, Softplus):
            low, up = (b.to(torch.float64).reshape(gl.shape) for b in kept[node.inputs[0]])
            dl = torch.sigmoid(layer.beta * low)
            du = torch.where(layer.beta * up > _SOFTPLUS_THRESHOLD, 1.0, torch.sigmoid(layer.beta * up))
            unstable += (dl != du).flatten(1).sum(1)
            gl, gu = _interval_product(dl, du, gl, gu)
        elif isinstance(layer, AvgPool):  # linear with non-negative weights: monotone
            gl, gu = _vjp(layer.forward, shape, gl), _vjp(layer.forward, shape, gu)
        else:
            c, r = (gl + gu) / 2, (gu - gl) / 2
            if isinstance(layer, Affine):
                c, r = c * layer.scale, r * layer.scale.abs()
            else:
                absolute = dataclasses.replace(layer, weight=layer.weight.abs())
                c, r = _vjp(layer.linear, shape, c), _vjp(absolute.linear, shape, r)
            gl, gu = c - r, c + r
    return GradientBounds(gl.reshape(x.shape), gu.reshape(x.shape), t, unstable)
