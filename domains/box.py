"""Box domain: interval bound propagation (IBP).

Every value of a node is bounded by an `Interval(lower, upper)` of the node's
shape, batched along dim 0. Transformers, one per IR layer type (`_TRANSFORMERS`):

- Linear, Conv: center-radius form. With c = (l + u) / 2 and r = (u - l) / 2,
  W x + b lies in [W c + b - |W| r, W c + b + |W| r].
- Affine (x * s + t): c * s + t -/+ r * |s|, so a negative scale swaps the ends.
- Add, Relu, Softplus, Sigmoid, Tanh, Reshape, Transpose, Pad, Concat, AvgPool, MaxPool: the layer
  is monotone non-decreasing in every input, so [f(l), f(u)] is the exact interval hull
  (AvgPool has non-negative weights; MaxPool pads with -inf, which never wins).

Region: a `specs.regions.Box` of shape (B, *input_shape). Spec C y + d: when the last
layer is Linear (y = W h + b), C is folded into it (C W, C b + d) and bounded over the
interval of h; this is never looser than bounding y first. The result is the
intersection with the interval of C y + d computed from the bounds of y.

Sound, not complete: every concrete value of every node for every input in the region
lies in its interval (up to float32 rounding, ~1e-6 relative). `interval_bounds` is the
same propagation as a pure, autograd-differentiable function (for IBP training).

Reference: Gowal et al., "On the Effectiveness of Interval Bound Propagation for
Training Verifiably Robust Models", 2018; interval arithmetic as in Moore, 1966.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from domains.base import BoundResult, Domain, DomainError, as_spec, spec_bounds_from_box, unsupported
from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Input, Layer, Linear, MaxPool, Network, Pad, Relu, Reshape,
    Sigmoid, Softplus, Tanh, Transpose,
)
from specs.properties import Spec
from specs.regions import Box


@dataclass(frozen=True, eq=False)
class Interval:
    """B boxes {x : lower <= x <= upper} over one node's values."""

    lower: Tensor  # (B, *shape)
    upper: Tensor  # (B, *shape)

    @property
    def center(self) -> Tensor:
        """(lower + upper) / 2, shape (B, *shape)."""
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> Tensor:
        """(upper - lower) / 2, shape (B, *shape)."""
        return (self.upper - self.lower) / 2

    @classmethod
    def from_center_radius(cls, center: Tensor, radius: Tensor) -> Interval:
        return cls(center - radius, center + radius)


Transformer = Callable[..., Interval]  # (layer, *input intervals) -> output interval


def _input(layer: Input, x: Interval) -> Interval:
    return x


def _linear(layer: Linear, x: Interval) -> Interval:
    """W x + b: center W c + b, radius |W| r."""
    return Interval.from_center_radius(layer.forward(x.center), x.radius.matmul(layer.weight.abs().T))


def _conv(layer: Conv, x: Interval) -> Interval:
    """conv(x) + b: center conv(c) + b, radius conv_|W|(r)."""
    abs_conv = dataclasses.replace(layer, weight=layer.weight.abs())
    return Interval.from_center_radius(layer.forward(x.center), abs_conv.linear(x.radius))


def _affine(layer: Affine, x: Interval) -> Interval:
    """x * s + t: center c * s + t, radius r * |s|."""
    return Interval.from_center_radius(layer.forward(x.center), x.radius * layer.scale.abs())


def _monotone(layer: Layer, *xs: Interval) -> Interval:
    """A layer non-decreasing in every input: [f(l_1, ..., l_n), f(u_1, ..., u_n)]."""
    return Interval(layer.forward(*(x.lower for x in xs)), layer.forward(*(x.upper for x in xs)))


_TRANSFORMERS: dict[type[Layer], Transformer] = {
    Input: _input,
    Linear: _linear,
    Conv: _conv,
    Affine: _affine,
    Add: _monotone,
    Relu: _monotone,
    Sigmoid: _monotone,
    Softplus: _monotone,
    Tanh: _monotone,
    Reshape: _monotone,
    Transpose: _monotone,
    Pad: _monotone,
    Concat: _monotone,
    AvgPool: _monotone,
    MaxPool: _monotone,
}


def _check(name: str, net: Network) -> None:
    """Raise one DomainError naming every node whose op has no transformer."""
    errors = [unsupported(name, node.layer, node.name) for node in net if type(node.layer) not in _TRANSFORMERS]
    if errors:
        raise errors[0] if len(errors) == 1 else DomainError("; ".join(str(e) for e in errors))


def _propagate(net: Network, x: Interval) -> dict[str, Interval]:
    """The interval of every node, given the input interval x (B, *input_shape)."""
    states: dict[str, Interval] = {net.input.name: x}
    for node in net.nodes[1:]:
        states[node.name] = _TRANSFORMERS[type(node.layer)](node.layer, *(states[i] for i in node.inputs))
    return states


def interval_bounds(net: Network, lower: Tensor, upper: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """(lower, upper) of every node (by name) over the input box [lower, upper] (B, *input_shape).

    Pure torch: differentiable with autograd in both the bounds and the network weights.
    Raises DomainError if the network has an op without an interval transformer.
    """
    _check(BoxDomain.name, net)
    states = _propagate(net, Interval(net.prepare(lower), net.prepare(upper)))
    return {name: (s.lower, s.upper) for name, s in states.items()}


def _spec_bounds(net: Network, states: dict[str, Interval], spec: Spec) -> tuple[Tensor, Tensor]:
    """Bounds (B, m) of C y + d: from the interval of y, intersected with the bounds of
    (C W) h + (C b + d) when the last layer is Linear y = W h + b."""
    out = states[net.output.name]
    dtype = out.lower.dtype
    lo, hi = spec_bounds_from_box(spec, out.lower, out.upper)
    last = net.output.layer
    if isinstance(last, Linear):
        h = states[net.output.inputs[0]]
        B, m = spec.C.shape[:2]
        C = spec.C.to(dtype).reshape(B, m, *net.output_shape)  # (B, m, ..., out)
        CW = C.matmul(last.weight).reshape(B, m, -1)  # (B, m, n_h)
        Cb = (C * last.bias).reshape(B, m, -1).sum(-1) + spec.d.to(dtype)  # (B, m)
        c, r = h.center.reshape(B, -1, 1), h.radius.reshape(B, -1, 1)
        mid = CW.bmm(c).squeeze(-1) + Cb
        rad = CW.abs().bmm(r).squeeze(-1)
        lo, hi = torch.maximum(lo, mid - rad), torch.minimum(hi, mid + rad)
    return lo, hi


class BoxDomain(Domain):
    """Interval bound propagation over a Box region (see the module docstring)."""

    name = "box"

    def check(self, net: Network) -> None:
        _check(self.name, net)

    def bound(self, region: Box, spec: Spec | Tensor | None = None, keep: bool = False) -> BoundResult:
        """Interval bounds of every node over each of the B boxes of `region`."""
        dtype = self.net.dtype
        x = Interval(self.net.prepare(region.lower).to(dtype), self.net.prepare(region.upper).to(dtype))
        batch = x.lower.shape[0]
        spec = as_spec(spec, batch)
        if spec is not None and spec.batch_size != batch:
            raise ValueError(f"spec has batch size {spec.batch_size}, region has {batch}")
        states = _propagate(self.net, x)
        out = states[self.net.output.name]
        spec_lower = spec_upper = None
        if spec is not None:
            spec_lower, spec_upper = _spec_bounds(self.net, states, spec)
        bounds = {name: (s.lower, s.upper) for name, s in states.items()} if keep else None
        return self.finish(out.lower, out.upper, spec, spec_lower, spec_upper,
                           bounds=bounds, states=states if keep else None)

    def last_layer_lower(self, result: BoundResult, region: Box, C: Tensor, d: Tensor) -> Tensor | None:
        """Interval arithmetic on the kept bounds of the output layer's input, in float64."""
        lower, upper = result.bounds[self.net.output.inputs[0]]
        lower, upper = lower.reshape(1, -1).double(), upper.reshape(1, -1).double()
        center, radius = (upper + lower) / 2, (upper - lower) / 2
        A = C.double().unsqueeze(0)
        lo = A.matmul(center.unsqueeze(-1)).squeeze(-1) - A.abs().matmul(radius.unsqueeze(-1)).squeeze(-1)
        return lo[0].float() + d
