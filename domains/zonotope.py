"""DeepZ: the zonotope domain of Singh et al., "Fast and Effective Robustness
Certification" (NeurIPS 2018).

A node's values are bounded by a `Zonotope`: x = c + sum_j G_j eps_j with every noise
symbol eps_j in [-1, 1]. Noise symbols are global within one `bound` call: symbol j is
column j of every node's generator matrix, new symbols are appended at the end, and an
operand with fewer columns is padded with zeros. So the two branches of a DAG share the
columns they inherited from their common ancestor and the correlation survives an Add or
a Concat.

Transformers, one per IR layer type (`_TRANSFORMERS`):

- Linear, Conv, Affine, AvgPool, Reshape, Transpose, Pad, Concat, Add: exact. The layer
  is applied to the center, its linear part to the generators reshaped (B*k, *shape);
  Pad pads the generators with zeros and the center with the pad value.
- Relu, for l < 0 < u: the minimal-area transformer lambda = u / (u - l),
  mu = -lambda l / 2, y = lambda x + mu + mu eps_new; exact where l >= 0 or u <= 0.
- Sigmoid, Tanh: lambda = min(f'(l), f'(u)), mu1 = (f(u) + f(l) - lambda (u + l)) / 2,
  mu2 = (f(u) - f(l) - lambda (u - l)) / 2, y = lambda x + mu1 + mu2 eps_new; the constant
  f(l) where l == u. Coefficients are computed in float64 and mu2 is widened to cover
  float32 rounding.
- MaxPool: where one window cell dominates (its lower bound >= every other cell's upper
  bound) the output is that cell, exactly; otherwise the output is a fresh box
  [max l, max u] = center + radius eps_new (ERAN's DeepZ transformer). The alternative
  max(a, b) = b + relu(a - b) keeps correlations but its bounds can be looser than the
  box: for independent a, b in [0, 1] it gives [0, 1.5] against [0, 1].

Each Relu/Sigmoid/Tanh/MaxPool node appends one new column per neuron that needs one in
at least one batch element (zero in the others). The initial zonotope of a Box has one
generator per input coordinate of nonzero width in at least one batch element, so a patch
region starts with few columns.

Region: a `specs.regions.Box` of shape (B, *input_shape). Spec: C y + d is concretized on
the output zonotope directly, keeping correlations. The batch is processed in chunks sized
from `DeepZOptions.max_elements`; the bounds do not depend on the chunking.

Sound, not complete: every concrete value of every node for every input in the region
lies in its bounds (up to float32 rounding of the linear layers, ~1e-6 relative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from domains.base import BoundResult, Domain, DomainError, as_spec, unsupported
from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Input, Layer, Linear, MaxPool, Network, Pad, Relu,
    Reshape, Sigmoid, Tanh, Transpose,
)
from specs.properties import Spec
from specs.regions import Box


@dataclass(frozen=True, eq=False)
class Zonotope:
    """B zonotopes {center + sum_j generators[:, j] eps_j : eps in [-1, 1]^k} over one node."""

    center: Tensor  # (B, *shape)
    generators: Tensor  # (B, k, *shape)

    @property
    def batch_size(self) -> int:
        """B."""
        return self.center.shape[0]

    @property
    def shape(self) -> torch.Size:
        """The per-sample shape."""
        return self.center.shape[1:]

    @property
    def n_generators(self) -> int:
        """k, the number of noise symbols (columns)."""
        return self.generators.shape[1]

    @property
    def radius(self) -> Tensor:
        """sum_j |G_j|, shape (B, *shape)."""
        return torch.linalg.vector_norm(self.generators, ord=1, dim=1)

    @property
    def lower(self) -> Tensor:
        """center - radius, shape (B, *shape)."""
        return self.center - self.radius

    @property
    def upper(self) -> Tensor:
        """center + radius, shape (B, *shape)."""
        return self.center + self.radius

    def bounds(self) -> tuple[Tensor, Tensor]:
        """(lower, upper), computing the radius once."""
        r = self.radius
        return self.center - r, self.center + r

    def flat(self) -> Zonotope:
        """The same zonotope over the flattened shape: center (B, n), generators (B, k, n)."""
        B, k, n = self.batch_size, self.n_generators, math.prod(self.shape)
        return Zonotope(self.center.reshape(B, n), self.generators.reshape(B, k, n))

    def concretize_linear(self, C: Tensor) -> tuple[Tensor, Tensor]:
        """Bounds (lo, hi) of C x over the zonotope; C (B, m, n) over the flattened shape -> (B, m) each."""
        z = self.flat()
        C = C.to(z.center.dtype)
        mid = C.bmm(z.center.unsqueeze(-1)).squeeze(-1)  # (B, m)
        rad = z.generators.bmm(C.transpose(1, 2)).abs().sum(1)  # (B, k, m) -> (B, m)
        return mid - rad, mid + rad

    def linear_map(self, W: Tensor, b: Tensor | None = None) -> Zonotope:
        """The exact image {W x + b}; W (out, n) over the flattened shape, b (out,). Shape (out,)."""
        z = self.flat()
        W = W.to(z.center.dtype)
        center = z.center.matmul(W.T)
        if b is not None:
            center = center + b.to(center.dtype)
        return Zonotope(center, z.generators.matmul(W.T))

    def pad_generators(self, k: int) -> Zonotope:
        """The same zonotope with zero columns appended up to k columns."""
        if k <= self.n_generators:
            return self
        G = self.generators
        zeros = G.new_zeros(G.shape[0], k - G.shape[1], *G.shape[2:])
        return Zonotope(self.center, torch.cat([G, zeros], dim=1))

    @classmethod
    def from_box(cls, lower: Tensor, upper: Tensor) -> Zonotope:
        """The box [lower, upper] (B, *shape) with one generator per coordinate of nonzero width
        in at least one batch element."""
        center = (lower + upper) / 2
        radius = torch.maximum(upper - center, center - lower)  # >= both half-widths after rounding
        B = lower.shape[0]
        r = radius.reshape(B, -1)
        idx = (r > 0).any(0).nonzero().squeeze(1)  # (k,)
        G = r.new_zeros(B, idx.numel(), r.shape[1])
        G[:, torch.arange(idx.numel(), device=r.device), idx] = r[:, idx]
        return cls(center, G.reshape(B, idx.numel(), *lower.shape[1:]))


class _Noise:
    """The global count of noise symbols during one propagation."""

    def __init__(self, count: int) -> None:
        self.count = count

    def append(self, z: Zonotope, center: Tensor, scale: Tensor, radius: Tensor) -> Zonotope:
        """The zonotope center + scale * z.generators + radius * eps_new, with one new symbol
        per coordinate where radius != 0 in some batch element. All tensors (B, *shape)."""
        B, k, n = z.batch_size, self.count, math.prod(z.shape)
        r = radius.reshape(B, n)
        idx = (r != 0).any(0).nonzero().squeeze(1)  # (p,)
        p = idx.numel()
        G = z.generators.new_zeros(B, k + p, n)
        old, s = z.generators.reshape(B, z.n_generators, n), scale.reshape(B, 1, n)
        if torch.is_grad_enabled() and (old.requires_grad or s.requires_grad):
            G[:, :z.n_generators] = old * s  # autograd (e.g. input-gradient maps) cannot go through out=
        else:
            torch.mul(old, s, out=G[:, :z.n_generators])
        G[:, k + torch.arange(p, device=r.device), idx] = r[:, idx]
        self.count = k + p
        return Zonotope(center, G.reshape(B, k + p, *z.shape))


Transformer = Callable[[Layer, tuple[Zonotope, ...], _Noise], Zonotope]


def _map_generators(z: Zonotope, f: Callable[[Tensor], Tensor], center: Tensor) -> Zonotope:
    """Apply the linear map f to every generator, batched as (B*k, *shape)."""
    B, k = z.batch_size, z.n_generators
    if k == 0:
        return Zonotope(center, center.new_zeros(B, 0, *center.shape[1:]))
    G = f(z.generators.reshape(B * k, *z.shape))
    return Zonotope(center, G.reshape(B, k, *G.shape[1:]))


def _input(layer: Input, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    return xs[0]


def _linear_part(layer: Linear | Conv, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    """W x + b (Linear, Conv): forward on the center, the bias-free map on the generators."""
    return _map_generators(xs[0], layer.linear, layer.forward(xs[0].center))


def _affine(layer: Affine, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    """x * s + t: generators scaled by s."""
    return _map_generators(xs[0], lambda g: g * layer.scale, layer.forward(xs[0].center))


def _linear_layer(layer: Layer, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    """A linear layer without offset (AvgPool, Reshape, Transpose): forward on everything."""
    return _map_generators(xs[0], layer.forward, layer.forward(xs[0].center))


def _pad(layer: Pad, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    """Center padded with the value, generators with zeros."""
    return _map_generators(xs[0], replace(layer, value=0.0).forward, layer.forward(xs[0].center))


def _align(xs: tuple[Zonotope, ...]) -> tuple[Zonotope, ...]:
    k = max(x.n_generators for x in xs)
    return tuple(x.pad_generators(k) for x in xs)


def _add(layer: Add, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    a, b = _align(xs)
    return Zonotope(a.center + b.center, a.generators + b.generators)


def _concat(layer: Concat, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    xs = _align(xs)
    return Zonotope(layer.forward(*(x.center for x in xs)),
                    torch.cat([x.generators for x in xs], dim=layer.axis + 2))


def _relu(layer: Relu, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    """Minimal-area relaxation: y = lambda x + mu + mu eps_new on l < 0 < u, exact elsewhere."""
    z = xs[0]
    lo, hi = z.bounds()
    unstable = (lo < 0) & (hi > 0)
    lam = torch.where(unstable, hi / (hi - lo).where(unstable, torch.ones_like(hi)), (lo >= 0).to(lo.dtype))
    mu = torch.where(unstable, -lam * lo / 2, torch.zeros_like(lo))
    return noise.append(z, lam * z.center + mu, lam, mu)


def _round_down(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Largest values of `dtype` <= t (t float64)."""
    r = t.to(dtype)
    return torch.where(r.double() > t, torch.nextafter(r, torch.full_like(r, -torch.inf)), r)


def _round_up(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Smallest values of `dtype` >= t (t float64)."""
    return -_round_down(-t, dtype)


def _s_shaped(f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor]) -> Transformer:
    """The DeepZ transformer of an increasing f whose derivative is unimodal (sigmoid, tanh).

    For x in [l, u], lambda = min(f'(l), f'(u)) <= f'(x), so f(x) - lambda x is non-decreasing
    and lies in [f(l) - lambda l, f(u) - lambda u] = mu1 -/+ mu2.
    """

    def transformer(layer: Layer, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
        z = xs[0]
        dtype = z.center.dtype
        lo32, hi32 = z.bounds()
        const = lo32 == hi32
        lo, hi = lo32.double(), hi32.double()
        lam = _round_down(torch.minimum(df(lo), df(hi)).clamp(min=0), dtype)
        lam = torch.where(const, 0.0, lam)
        lam64 = lam.double()
        a, b = f(lo) - lam64 * lo, f(hi) - lam64 * hi  # f(x) - lambda x ranges over [a, b]
        mu1_64 = (a + b) / 2
        mu1 = mu1_64.to(dtype)
        # float32 slack: the rounding of mu1 plus 1e-6 relative to the terms of lambda x + mu1
        slack = (mu1.double() - mu1_64).abs() + 1e-6 * (1 + mu1_64.abs() + lam64 * torch.maximum(lo.abs(), hi.abs()))
        mu2 = _round_up((b - a).clamp(min=0) / 2 + slack, dtype)
        center = torch.where(const, layer.forward(z.center), lam * z.center + mu1)
        return noise.append(z, center, lam, torch.where(const, 0.0, mu2))

    return transformer


def _sigmoid_derivative(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _tanh_derivative(x: Tensor) -> Tensor:
    return 1 - torch.tanh(x) ** 2


def _window_index(layer: MaxPool, shape: torch.Size) -> Tensor:
    """For each MaxPool output cell, the flat input indices of its window, -1 for padding:
    (C, H_out, W_out, kH * kW) long."""
    C, H, W = shape
    t, l, b, r = layer.pads
    idx = torch.arange(C * H * W).reshape(1, C, H, W)
    idx = F.pad(idx, (l, r, t, b), value=-1)
    win = idx.unfold(2, layer.kernel[0], layer.stride[0]).unfold(3, layer.kernel[1], layer.stride[1])
    return win[0].reshape(C, win.shape[2], win.shape[3], -1)


def _maxpool(layer: MaxPool, xs: tuple[Zonotope, ...], noise: _Noise) -> Zonotope:
    """Exact where one cell dominates its window, a fresh box [max l, max u] elsewhere."""
    z = xs[0].flat()
    B, k = z.batch_size, z.n_generators
    win = _window_index(layer, xs[0].shape).to(z.center.device)  # (C, Ho, Wo, K)
    out_shape = win.shape[:3]
    win = win.reshape(-1, win.shape[-1])  # (n_out, K)
    pad = win < 0
    lo, hi = z.bounds()
    gather = win.clamp(min=0).reshape(-1)
    lo_w = lo[:, gather].reshape(B, *win.shape).masked_fill(pad, -torch.inf)  # (B, n_out, K)
    hi_w = hi[:, gather].reshape(B, *win.shape).masked_fill(pad, -torch.inf)
    best_lo, arg = lo_w.max(-1)  # (B, n_out)
    others = hi_w.scatter(-1, arg.unsqueeze(-1), -torch.inf).amax(-1)
    dominated = best_lo >= others
    sel = win.expand(B, -1, -1).gather(-1, arg.unsqueeze(-1)).squeeze(-1)  # (B, n_out) input index
    center_sel = z.center.gather(1, sel)
    G_sel = z.generators.gather(2, sel.unsqueeze(1).expand(B, k, -1))  # (B, k, n_out)
    box_lo, box_hi = best_lo, hi_w.amax(-1)
    box_c = (box_lo + box_hi) / 2
    box_r = torch.maximum(box_hi - box_c, box_c - box_lo)
    center = torch.where(dominated, center_sel, box_c)
    selected = Zonotope(center, G_sel)
    out = noise.append(selected, center, dominated.to(center.dtype), box_r.where(~dominated, 0))
    return Zonotope(out.center.reshape(B, *out_shape), out.generators.reshape(B, out.n_generators, *out_shape))


_TRANSFORMERS: dict[type[Layer], Transformer] = {
    Input: _input,
    Linear: _linear_part,
    Conv: _linear_part,
    Affine: _affine,
    AvgPool: _linear_layer,
    Reshape: _linear_layer,
    Transpose: _linear_layer,
    Pad: _pad,
    Add: _add,
    Concat: _concat,
    Relu: _relu,
    Sigmoid: _s_shaped(torch.sigmoid, _sigmoid_derivative),
    Tanh: _s_shaped(torch.tanh, _tanh_derivative),
    MaxPool: _maxpool,
}

_NEW_SYMBOLS = (Relu, Sigmoid, Tanh, MaxPool)  # layers that may append one column per output neuron


@dataclass(frozen=True)
class DeepZOptions:
    """Options of DeepZ."""

    max_elements: int = 200_000_000  # budget of floats per generator tensor; sets the batch chunk size


class DeepZ(Domain):
    """The DeepZ zonotope domain over a Box region (see the module docstring)."""

    name = "deepz"

    def __init__(self, net: Network, options: DeepZOptions | None = None) -> None:
        self.options = options or DeepZOptions()
        super().__init__(net)

    def float64(self) -> DeepZ:
        return DeepZ(self.net.to(torch.float64), self.options)

    def check(self, net: Network) -> None:
        errors = [unsupported(self.name, n.layer, n.name) for n in net if type(n.layer) not in _TRANSFORMERS]
        if errors:
            raise errors[0] if len(errors) == 1 else DomainError("; ".join(str(e) for e in errors))

    def chunk_size(self, k0: int) -> int:
        """Batch elements per chunk for k0 input generators: a pessimistic per-sample peak of
        k * (n_in + n_out) floats at the widest node, where k counts every possible new column."""
        sizes = {n.name: math.prod(n.shape) for n in self.net}
        k, peak = k0, 1
        for node in self.net.nodes[1:]:
            if isinstance(node.layer, _NEW_SYMBOLS):
                k += sizes[node.name]
            peak = max(peak, k * (sizes[node.name] + sum(sizes[i] for i in node.inputs)))
        return max(1, self.options.max_elements // peak)

    def bound(self, region: Box, spec: Spec | Tensor | None = None, keep: bool = False) -> BoundResult:
        """Zonotope bounds of every node over each of the B boxes of `region`.

        keep=True stores every node's Zonotope: B * k * n floats per node, so keep it for
        small batches on large inputs (100 CIFAR images keep tens of GB).
        """
        dtype = self.net.dtype
        lower = self.net.prepare(region.lower).to(dtype)
        upper = self.net.prepare(region.upper).to(dtype)
        if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
            raise ValueError("deepz needs a bounded region (the Box has infinite bounds)")
        batch = lower.shape[0]
        spec = as_spec(spec, batch)
        if spec is not None and spec.batch_size != batch:
            raise ValueError(f"spec has batch size {spec.batch_size}, region has {batch}")
        k0 = int((upper > lower).reshape(batch, -1).sum(1).max()) if batch else 0
        step = self.chunk_size(k0)
        parts = [self._run(lower[s:s + step], upper[s:s + step], None if spec is None else spec[s:s + step], keep)
                 for s in range(0, batch, step)]
        out = _cat([p.output for p in parts])
        out_lo, out_hi = out.bounds()
        spec_lower = spec_upper = None
        if spec is not None:
            spec_lower = torch.cat([p.spec_lower for p in parts])
            spec_upper = torch.cat([p.spec_upper for p in parts])
        bounds = states = None
        if keep:
            states = {n.name: _cat([p.states[n.name] for p in parts]) for n in self.net}
            bounds = {name: z.bounds() for name, z in states.items()}
        return self.finish(out_lo, out_hi, spec, spec_lower, spec_upper, bounds=bounds, states=states)

    def last_layer_lower(self, result: BoundResult, region: Box, C: Tensor, d: Tensor) -> Tensor | None:
        """The kept zonotope of the output layer's input, concretised along the rows
        (correlations kept)."""
        lo, _ = result.states[self.net.output.inputs[0]].concretize_linear(C.unsqueeze(0))
        return lo[0] + d

    def _run(self, lower: Tensor, upper: Tensor, spec: Spec | None, keep: bool) -> _Chunk:
        """Propagate one chunk of the batch; without keep, drop each state after its last reader."""
        net = self.net
        z0 = Zonotope.from_box(lower, upper)
        noise = _Noise(z0.n_generators)
        remaining = {name: len(readers) for name, readers in net.consumers().items()}
        states: dict[str, Zonotope] = {net.input.name: z0}
        for node in net.nodes[1:]:
            transformer = _TRANSFORMERS[type(node.layer)]
            states[node.name] = transformer(node.layer, tuple(states[i] for i in node.inputs), noise)
            for i in node.inputs:
                remaining[i] -= 1
                if remaining[i] == 0 and not keep:
                    del states[i]
        out = states[net.output.name]
        chunk = _Chunk(out, states=states if keep else {})
        if spec is not None:
            lo, hi = out.concretize_linear(spec.C)
            d = spec.d.to(lo.dtype)
            chunk = _Chunk(out, lo + d, hi + d, chunk.states)
        return chunk


@dataclass(frozen=True)
class _Chunk:
    """What one chunk of the batch produced."""

    output: Zonotope
    spec_lower: Tensor | None = None  # (b, m)
    spec_upper: Tensor | None = None  # (b, m)
    states: dict[str, Zonotope] = field(default_factory=dict)  # node -> Zonotope, with keep


def _cat(zs: list[Zonotope]) -> Zonotope:
    """Stack zonotopes of several chunks along the batch (columns padded to the widest)."""
    if len(zs) == 1:
        return zs[0]
    zs = list(_align(tuple(zs)))
    return Zonotope(torch.cat([z.center for z in zs]), torch.cat([z.generators for z in zs]))
