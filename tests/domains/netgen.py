"""Generators for the domain contract and soundness suites.

- `cases()`: a hypothesis strategy of `Case(net, region, spec)`: a random small IR network
  built directly from `networks.ir` layers (seeded torch weights) mixing Linear, Conv
  (strides, asymmetric pads, dilation), Affine (negative and zero scales, BatchNorm-like
  per-channel), Relu, Sigmoid, Tanh, Reshape, Transpose, AvgPool, MaxPool (with and
  without pads), Pad (nonzero value), Concat of two branches and residual Add (DAGs);
  a batch of 1-3 regions (random boxes with zero-width coordinates, clipped eps-balls,
  patches, points); and a spec with random rows grouped into clauses.
- `sample_points()`: >= 1,000 points per region: uniform, box vertices, the center and
  points within 1e-4 of ReLU kinks (found by bisection between samples).
- `assert_sound()`: every node's value at every point lies within the kept bounds, the
  outputs within lower/upper and C y + d >= spec_lower, up to 1e-5 (1 + |v|).
- `make_domain()`: a domain of DOMAINS with test-sized options (alpha-CROWN: 5 steps).

Networks are drawn structurally by hypothesis (so failures shrink to few blocks); weights
come from a torch generator seeded by a drawn integer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from hypothesis import strategies as st
from torch import Tensor

from domains import AlphaCrown, AlphaOptions
from domains.base import BoundResult, Domain
from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Input, Layer, Linear, MaxPool, Network, Node, Pad, Relu,
    Reshape, Sigmoid, Tanh, Transpose,
)
from specs.properties import Spec
from specs.regions import Box, linf_ball, patch

TOL = 1e-5
ALL_OPS = frozenset({"linear", "conv", "affine", "relu", "sigmoid", "tanh", "avgpool", "maxpool",
                     "pad", "transpose", "concat", "add"})
RELU_OPS = ALL_OPS - {"sigmoid", "tanh", "maxpool"}


def one_thread() -> Iterator[None]:
    """Run with one torch thread, restoring the count after (a generator for a module-scoped
    autouse fixture). The suites bound and sample many small tensors, where a second intra-op
    thread only adds synchronisation: on a loaded 2-core machine it made them 10-100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_domain(cls: type[Domain], net: Network) -> Domain:
    """An instance of a registered domain with options sized for tests."""
    if issubclass(cls, AlphaCrown):
        return cls(net, alpha=AlphaOptions(iterations=5))
    return cls(net)


def build(input_shape: tuple[int, ...], layers: list[tuple[str, Layer, tuple[str, ...]]]) -> Network:
    """A Network from (name, layer, inputs) triples after an Input named 'x'; shapes by forward."""
    b = _Builder(None, input_shape)
    for name, layer, inputs in layers:
        b.add(layer, inputs, name)
    return b.network()


# ------------------------------------------------------------------------ networks

class _Builder:
    """Appends nodes, tracking the current node and every node's shape (by a forward pass)."""

    def __init__(self, g: torch.Generator | None, input_shape: tuple[int, ...]) -> None:
        self.g = g
        self.nodes = [Node("x", Input(), (), input_shape)]
        self.values = {"x": torch.zeros(1, *input_shape)}
        self.cur = "x"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values[self.cur].shape[1:])

    def add(self, layer: Layer, inputs: tuple[str, ...] | None = None, name: str | None = None) -> str:
        inputs = inputs or (self.cur,)
        name = name or f"n{len(self.nodes)}_{layer.op.lower()}"
        self.values[name] = layer.forward(*(self.values[i] for i in inputs))
        self.nodes.append(Node(name, layer, inputs, tuple(self.values[name].shape[1:])))
        self.cur = name
        return name

    def network(self) -> Network:
        return Network(tuple(self.nodes))

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.g)

    def linear(self, n_out: int, src: str | None = None) -> Linear:
        """A random Linear reading node `src` (default: the current node)."""
        n_in = self.values[src or self.cur].shape[1]
        return Linear(self.randn(n_out, n_in) * 1.5 / math.sqrt(n_in), self.randn(n_out) * 0.5)

    def conv(self, c_out: int, k: int, stride: int = 1, pads: tuple[int, ...] = (0, 0, 0, 0),
             dilation: int = 1, src: str | None = None) -> Conv:
        """A random Conv reading node `src` (default: the current node)."""
        c_in = self.values[src or self.cur].shape[1]
        w = self.randn(c_out, c_in, k, k) * 1.5 / math.sqrt(c_in * k * k)
        return Conv(w, self.randn(c_out) * 0.5, (stride, stride), tuple(pads), (dilation, dilation))

    def affine(self, batchnorm: bool) -> Affine:
        """Random scale with some zero and negative entries; BatchNorm-like: per channel."""
        shape = self.shape
        if batchnorm and len(shape) == 3:
            gamma, var = self.randn(shape[0], 1, 1), torch.rand(shape[0], 1, 1, generator=self.g) + 0.1
            mean, beta = self.randn(shape[0], 1, 1), self.randn(shape[0], 1, 1)
            scale = (gamma / torch.sqrt(var + 1e-5)).expand(shape).clone()
            return Affine(scale, (beta - mean * scale[:, :1, :1]).expand(shape).clone())
        scale = self.randn(*shape) * (torch.rand(*shape, generator=self.g) > 0.2)
        return Affine(scale, self.randn(*shape) * 0.5)


_ACTIVATIONS: dict[str, Callable[[], Layer]] = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}


def _activation(draw, b: _Builder, ops: frozenset[str]) -> None:
    b.add(_ACTIVATIONS[draw(st.sampled_from(sorted(ops & set(_ACTIVATIONS))))]())


def _pool_pads(draw, k: int) -> tuple[int, int, int, int]:
    """Pads < k on every side, so that every window holds a real cell."""
    return tuple(draw(st.integers(0, k - 1)) for _ in range(4)) if draw(st.booleans()) else (0, 0, 0, 0)


IMAGE_OPS = ("conv", "affine", "relu", "sigmoid", "tanh", "avgpool", "maxpool", "pad", "transpose", "concat", "add")
FLAT_OPS = ("linear", "affine", "relu", "sigmoid", "tanh", "pad", "transpose", "concat", "add")


def _image_block(draw, b: _Builder, op: str, ops: frozenset[str], max_side: int) -> None:
    """One block of kind `op` on a (C, H, W) node."""
    C, H, W = b.shape
    if op == "conv":
        k, stride, dil = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        span = dil * (k - 1) + 1
        if span > H + pads[0] + pads[2] or span > W + pads[1] + pads[3]:
            k, dil = 1, 1
        b.add(b.conv(draw(st.integers(1, 3)), k, stride, pads, dil))
    elif op == "affine":
        b.add(b.affine(draw(st.booleans())))
    elif op in _ACTIVATIONS:
        _activation(draw, b, ops)
    elif op in ("avgpool", "maxpool"):
        k, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        pads = _pool_pads(draw, k)
        if k > H + pads[0] + pads[2] or k > W + pads[1] + pads[3]:
            k, pads = 1, (0, 0, 0, 0)
        if op == "avgpool":
            b.add(AvgPool((k, k), (stride, stride), pads, draw(st.booleans())))
        else:
            b.add(MaxPool((k, k), (stride, stride), pads))
    elif op == "pad":
        pads = tuple(draw(st.integers(0, 1)) for _ in range(6)) if max(H, W) < max_side else (1, 0, 0, 0, 0, 0)
        b.add(Pad(pads, float(b.randn(1))))
    elif op == "transpose":
        b.add(Transpose(tuple(draw(st.permutations([0, 1, 2])))))
    elif op == "concat":
        start = b.cur
        acts = sorted(ops & set(_ACTIVATIONS))
        c_out = draw(st.integers(1, 2))
        left = b.add(b.conv(c_out, 3, pads=(1, 1, 1, 1)), (start,))
        left = b.add(_ACTIVATIONS[draw(st.sampled_from(acts))](), (left,))
        right = b.add(b.conv(c_out, 1, src=start), (start,))
        b.add(Concat(draw(st.integers(0, 2))), (left, right))
    elif op == "add":
        start = b.cur
        h = b.add(b.conv(C, 3, pads=(1, 1, 1, 1)), (start,))
        h = b.add(Relu() if "relu" in ops else Tanh(), (h,))
        h = b.add(b.conv(C, 3, pads=(1, 1, 1, 1)), (h,))
        b.add(Add(), (start, h))


def _flat_block(draw, b: _Builder, op: str, ops: frozenset[str], max_width: int) -> None:
    """One block of kind `op` on an (n,) node."""
    (n,) = b.shape
    acts = sorted(ops & set(_ACTIVATIONS))
    if op == "linear":
        b.add(b.linear(draw(st.integers(1, max_width))))
    elif op == "affine":
        b.add(b.affine(False))
    elif op in _ACTIVATIONS:
        _activation(draw, b, ops)
    elif op == "pad":
        b.add(Pad((draw(st.integers(0, 2)), draw(st.integers(0, 2))), float(b.randn(1))))
    elif op == "transpose":
        rows = max((d for d in range(1, n + 1) if n % d == 0 and d * d <= n), default=1)
        b.add(Reshape((rows, n // rows)))
        b.add(Transpose((1, 0)))
        b.add(Reshape((-1,)))
    elif op == "concat":
        start = b.cur
        left = b.add(b.linear(draw(st.integers(1, max_width // 2 + 1))), (start,))
        left = b.add(_ACTIVATIONS[draw(st.sampled_from(acts))](), (left,))
        right = b.add(b.linear(draw(st.integers(1, max_width // 2 + 1)), src=start), (start,))
        b.add(Concat(0), (left, right))
    elif op == "add":
        start = b.cur
        h = b.add(b.linear(n), (start,))
        h = b.add(Relu() if "relu" in ops else Tanh(), (h,))
        h = b.add(b.linear(n), (h,))
        b.add(Add(), (start, h))


@st.composite
def networks(draw, ops: frozenset[str] = ALL_OPS, max_blocks: int = 5, max_width: int = 8,
             max_side: int = 6) -> Network:
    """A random small network over `ops`: an image part (2 in 3 networks), a flat part, a Linear
    head and sometimes a final activation. Each part applies a random permutation of its block
    kinds (cyclically), so every op shows up often even in few examples."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    image = draw(st.integers(0, 2)) > 0 and "conv" in ops
    if image:
        shape = (draw(st.integers(1, 2)), draw(st.integers(2, max_side - 1)), draw(st.integers(2, max_side - 1)))
    else:
        shape = (draw(st.integers(1, 5)),)
    b = _Builder(g, shape)
    n_image = draw(st.integers(1, max_blocks)) if image else 0
    order = draw(st.permutations([op for op in IMAGE_OPS if op in ops]))
    for i in range(n_image):
        _image_block(draw, b, order[i % len(order)], ops, max_side)
        if math.prod(b.shape) > 4 * max_side * max_side:
            break
    if image:
        b.add(Reshape((-1,)))
        if b.shape[0] > max_width * 3:
            b.add(b.linear(max_width))
    order = draw(st.permutations([op for op in FLAT_OPS if op in ops]))
    for i in range(draw(st.integers(0 if image else 1, max_blocks))):
        _flat_block(draw, b, order[i % len(order)], ops, max_width)
        if b.shape[0] > max_width * 3:
            b.add(b.linear(max_width))
    b.add(b.linear(draw(st.integers(1, 4))))
    if draw(st.integers(0, 4)) == 0:
        _activation(draw, b, ops & set(_ACTIVATIONS))
    return b.network()


# ------------------------------------------------------------------------ regions, specs

REGION_KINDS = ("box", "ball", "patch", "point")


def region_for(kind: str, shape: tuple[int, ...], g: torch.Generator, scale: float) -> Box:
    """One region (batch 1) of the given kind over per-sample `shape`."""
    if kind == "box":
        center = torch.randn(1, *shape, generator=g)
        width = torch.rand(1, *shape, generator=g) * scale * (torch.rand(1, *shape, generator=g) > 0.3)
        return Box(center - width, center + width)
    x = torch.rand(1, *shape, generator=g)
    if kind == "ball":
        return linf_ball(x, scale / 4)
    if kind == "patch":
        n = math.prod(shape)
        k = 1 + int(torch.randint(0, max(1, n // 2), (1,), generator=g))
        return patch(x, torch.randperm(n, generator=g)[:k].tolist())
    return Box(x, x.clone())


@st.composite
def regions(draw, shape: tuple[int, ...], kinds: tuple[str, ...] = REGION_KINDS, max_batch: int = 3) -> Box:
    """A batch of 1..max_batch regions, each of a drawn kind and size."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    batch = draw(st.integers(1, max_batch))
    boxes = [region_for(draw(st.sampled_from(kinds)), shape, g, draw(st.sampled_from([0.01, 0.3, 1.0, 2.0])))
             for _ in range(batch)]
    return Box.concat(boxes)


@st.composite
def specs(draw, batch: int, n_out: int) -> Spec:
    """m random rows C y + d (different per region) grouped round-robin into K clauses."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    m = draw(st.integers(1, 4))
    k = draw(st.integers(1, m))
    C = torch.randn(batch, m, n_out, generator=g)
    d = torch.randn(batch, m, generator=g)
    return Spec(C, d, torch.arange(m) % k)


@dataclass(frozen=True, eq=False)
class Case:
    """A network, a batch of regions over its input and a spec over its output."""

    net: Network
    region: Box
    spec: Spec

    def __repr__(self) -> str:
        ops = " ".join(f"{n.layer.op}{list(n.inputs) if len(n.inputs) > 1 else ''}{list(n.shape)}"
                       for n in self.net.nodes)
        return f"Case({ops}; B={self.region.batch_size}, widths={self.region.radius.flatten(1).amax(1).tolist()})"


@st.composite
def cases(draw, ops: frozenset[str] = ALL_OPS, kinds: tuple[str, ...] = REGION_KINDS, max_blocks: int = 5,
          max_width: int = 8, max_side: int = 6, max_batch: int = 3) -> Case:
    """A random network with a batch of regions and a spec."""
    net = draw(networks(ops, max_blocks, max_width, max_side))
    region = draw(regions(net.input_shape, kinds, max_batch))
    return Case(net, region, draw(specs(region.batch_size, net.n_outputs)))


# ------------------------------------------------------------------------ sampling

def _kink_points(net: Network, xa: Tensor, xb: Tensor, g: torch.Generator, delta: float = 1e-4) -> Tensor:
    """For each pair (xa[p], xb[p]) (P, *shape) across which some ReLU pre-activation changes
    sign, the point where it crosses 0 (bisection) and the points `delta` before and after
    it along the segment. Returns (Q, *shape), Q <= 3 P."""
    pre = [n.inputs[0] for n in net.nodes if isinstance(n.layer, Relu)]
    if not pre or len(xa) == 0:
        return xa[:0]

    def preacts(x: Tensor) -> Tensor:
        values = net.forward_all(x)
        return torch.cat([values[p].reshape(len(x), -1) for p in pre], 1)

    pa, pb = preacts(xa), preacts(xb)
    change = (pa < 0) != (pb < 0)  # (P, N)
    has = change.any(1)
    if not has.any():
        return xa[:0]
    xa, xb, pa, change = xa[has], xb[has], pa[has], change[has]
    score = torch.rand(change.shape, generator=g) * change  # a random sign-changing neuron per pair
    j = score.argmax(1)
    rows = torch.arange(len(j))
    lo, hi = torch.zeros(len(j)), torch.ones(len(j))
    neg_at_lo = pa[rows, j] < 0
    direction = xb - xa
    view = (-1,) + (1,) * (xa.dim() - 1)
    for _ in range(40):
        mid = (lo + hi) / 2
        at_mid = preacts(xa + mid.reshape(view) * direction)[rows, j]
        same = (at_mid < 0) == neg_at_lo
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    t = (lo + hi) / 2
    step = delta / direction.flatten(1).abs().amax(1).clamp(min=1e-12)
    ts = torch.cat([t, (t - step).clamp(0, 1), (t + step).clamp(0, 1)])
    return torch.cat([xa, xa, xa]) + ts.reshape(view) * torch.cat([direction] * 3)


def sample_points(net: Network, region: Box, n_uniform: int = 800, n_vertices: int = 200,
                  n_pairs: int = 150, seed: int = 0) -> list[Tensor]:
    """Per region b, a tensor (S_b, *shape) of points in region b: uniform samples, random
    vertices, the center, and up to 3 n_pairs points at and around ReLU kinks on segments
    between samples (some of them vertices). S_b >= n_uniform + n_vertices + 1."""
    g = torch.Generator().manual_seed(seed)
    uniform = region.sample(n_uniform, g)
    vertices = region.vertices_sample(n_vertices, g)
    out = []
    for b in range(region.batch_size):
        ends = torch.cat([uniform[b], vertices[b]])
        ia = torch.randint(0, len(ends), (n_pairs,), generator=g)
        ib = torch.randint(0, len(ends), (n_pairs,), generator=g)
        kinks = _kink_points(net, ends[ia], ends[ib], g)
        kinks = torch.minimum(torch.maximum(kinks, region.lower[b]), region.upper[b])
        out.append(torch.cat([uniform[b], vertices[b], region.center[b:b + 1], kinks]))
    return out


def assert_sound(net: Network, result: BoundResult, spec: Spec | None, points: list[Tensor],
                 tol: float = TOL, label: str = "") -> None:
    """Every node value at every point of region b lies within result.bounds (which must hold
    every node), outputs within lower/upper, and C y + d >= spec_lower: up to tol (1 + |v|)."""
    missing = [n.name for n in net.nodes if n.name not in result.bounds]
    assert not missing, f"{label}: keep=True result has no bounds for {missing}"
    for b, xs in enumerate(points):
        values = net.forward_all(xs)
        checks = [(f"node {n.name} ({n.layer.op})", values[n.name], *result.bounds[n.name]) for n in net.nodes]
        checks.append(("output", values[net.output.name], result.lower, result.upper))
        for what, v, lo, hi in checks:
            lo, hi = lo[b].to(v.dtype), hi[b].to(v.dtype)
            slack = tol * (1 + v.abs())
            bad = (v < lo - slack) | (v > hi + slack)
            if bad.any():
                i = bad.flatten(1).any(1).nonzero()[0].item()
                k = bad[i].flatten().nonzero()[0].item()
                raise AssertionError(
                    f"{label}: {what}, region {b}: {int(bad.sum())} values outside the bounds; e.g. point {i} "
                    f"neuron {k}: {v[i].flatten()[k].item():.8g} not in [{lo.flatten()[k].item():.8g}, "
                    f"{hi.flatten()[k].item():.8g}]; x = {xs[i].flatten().tolist()}")
        if spec is not None:
            y = values[net.output.name].reshape(1, len(xs), -1)
            rows = spec[b].values(y)[0]
            low = result.spec_lower[b].to(rows.dtype)
            bad = rows < low - tol * (1 + rows.abs())
            if bad.any():
                i, k = bad.nonzero()[0].tolist()
                raise AssertionError(f"{label}: spec row {k}, region {b}: C y + d = {rows[i, k].item():.8g} < "
                                     f"spec_lower {low[k].item():.8g}; x = {xs[i].flatten().tolist()}")


# ------------------------------------------------------------------------ a fixed zoo

def zoo() -> dict[str, Network]:
    """Fixed small networks that together use every IR op and option (for tests that want
    every op on every run, not only when hypothesis draws it)."""
    b = _Builder(torch.Generator().manual_seed(0), (2, 6, 5))
    b.add(b.affine(batchnorm=True))
    b.add(b.conv(3, 3, stride=1, pads=(1, 0, 2, 1), dilation=2))
    b.add(Relu())
    b.add(MaxPool((2, 2), (2, 1), (1, 1, 0, 1)))
    b.add(AvgPool((3, 2), (1, 2), (1, 0, 2, 1), count_include_pad=False))
    b.add(Pad((0, 1, 0, 1, 0, 1), -0.7))
    b.add(Tanh())
    b.add(AvgPool((2, 2), (1, 1), (1, 1, 1, 1), count_include_pad=True))
    b.add(b.conv(2, 2, stride=2))
    b.add(Sigmoid())
    b.add(Transpose((2, 0, 1)))
    b.add(Reshape((-1,)))
    b.add(b.linear(3))
    conv = b.network()

    b = _Builder(torch.Generator().manual_seed(1), (1, 5, 5))
    x = b.cur
    left = b.add(b.conv(2, 3, pads=(1, 1, 1, 1)), (x,))
    left = b.add(Relu(), (left,))
    right = b.add(b.conv(2, 1, src=x), (x,))
    right = b.add(Tanh(), (right,))
    cat = b.add(Concat(1), (left, right))
    h = b.add(b.conv(2, 3, pads=(1, 1, 1, 1)), (cat,))
    h = b.add(Relu(), (h,))
    h = b.add(b.conv(2, 3, pads=(1, 1, 1, 1)), (h,))
    b.add(Add(), (cat, h))
    b.add(MaxPool((3, 3), (2, 2), (1, 1, 1, 1)))
    aff = b.add(Affine(-torch.rand(b.shape, generator=b.g), torch.zeros(b.shape)))
    b.add(Concat(0), (aff, b.nodes[-2].name))
    b.add(Relu())
    b.add(Reshape((-1,)))
    b.add(b.linear(2))
    convdag = b.network()

    b = _Builder(torch.Generator().manual_seed(2), (5,))
    x = b.cur
    a = b.add(b.linear(6), (x,))
    ra = b.add(Relu(), (a,))
    t = b.add(b.linear(6, src=x), (x,))
    tb = b.add(Tanh(), (t,))
    s = b.add(Add(), (ra, tb))
    b.add(Concat(0), (s, ra))
    b.add(Affine(torch.tensor([1.0, -2.0, 0.0, 0.5, -0.3, 3.0] * 2), torch.linspace(-1, 1, 12)))
    b.add(Relu())
    b.add(Pad((1, 2), 0.4))
    b.add(Reshape((3, 5)))
    b.add(Transpose((1, 0)))
    b.add(Reshape((15,)))
    h = b.add(b.linear(6))
    b.add(Add(), (h, a))
    b.add(Sigmoid())
    b.add(b.linear(3))
    dag = b.network()

    b = _Builder(torch.Generator().manual_seed(3), (4,))
    for width in (8, 8, 6):
        b.add(b.linear(width))
        b.add(Relu())
    b.add(b.linear(3))
    mlp = b.network()

    b = _Builder(torch.Generator().manual_seed(4), (1, 4, 4))
    x = b.cur
    b.add(b.conv(2, 3, stride=1, pads=(1, 0, 2, 1), dilation=1))
    b.add(Relu())
    b.add(AvgPool((2, 2), (1, 1), (1, 1, 0, 0), count_include_pad=False))
    b.add(Pad((0, 0, 1, 0, 1, 0), 0.3))
    left = b.add(b.conv(2, 2, stride=2))
    left = b.add(Relu(), (left,))
    right = b.add(b.conv(2, 2, stride=2, pads=(1, 0, 1, 0), src=x), (x,))
    cat = b.add(Concat(0), (left, right))
    b.add(Affine(torch.linspace(-1.5, 1.5, 24).reshape(4, 3, 2), torch.full((4, 3, 2), 0.1)))
    h = b.add(Relu())
    b.add(Add(), (h, cat))
    b.add(Transpose((1, 2, 0)))
    b.add(Reshape((-1,)))
    b.add(b.linear(6))
    b.add(Relu())
    b.add(b.linear(3))
    reludag = b.network()
    return {"conv": conv, "convdag": convdag, "dag": dag, "mlp": mlp, "reludag": reludag}


def relu_only(net: Network) -> bool:
    """Whether every nonlinearity of `net` is a Relu (the LP reference supports it)."""
    return not any(isinstance(n.layer, (Sigmoid, Tanh, MaxPool)) for n in net.nodes)
