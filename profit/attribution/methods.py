"""Gradient attribution methods on the IR, one verb (Captum's): `Method(net).attribute(inputs, target)`.

Every method returns a map of the shape of `inputs` (B, *net.input_shape); `target` is a class
index, a (B,) tensor of them, or None for each sample's predicted class. Batch elements never
interact, so a batch gives the same maps as single runs. Gradients flow through the IR's own
forward (torch autograd); guided backprop and LRP walk the IR nodes themselves.

| class                | map                                                                  |
|----------------------|----------------------------------------------------------------------|
| Saliency             | d f_t / dx (|.| with abs=True; Simonyan et al. 2014)                 |
| InputXGradient       | x * d f_t / dx (Shrikumar et al. 2016)                               |
| IntegratedGradients  | (x - x') * mean of the gradient on the path x' -> x (Sundararajan 2017)|
| SmoothGrad           | mean gradient over Gaussian noise (Smilkov et al. 2017)              |
| GuidedBackprop       | ReLU backward passes only positive gradients (Springenberg et al. 2015)|
| LRP                  | layer-wise relevance: eps / z+ / alpha-beta / z^B rules (Bach 2015, Montavon 2017) |
| ProofFeatureMap      | ProFIt: gradients of the kept proof features of a robustness proof (profit.features) |
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from networks.ir import (
    AvgPool, Conv, Input, Linear, MaxPool, Network, Relu, Reshape, UnsupportedOpError,
)
from profit.errors import ProfitError
from profit.features import ProofFeatures, PruneOptions

Target = int | Tensor | None


def resolve_target(net: Network, x: Tensor, target: Target) -> Tensor:
    """(B,) class indices: `target` broadcast to the batch, or the predicted class where None."""
    if target is None:
        with torch.no_grad():
            return net.logits(x).argmax(dim=1)
    t = torch.as_tensor(target, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise ProfitError(f"target has {t.numel()} entries for a batch of {x.shape[0]}")
    if ((t < 0) | (t >= net.n_outputs)).any():
        raise ProfitError(f"target must lie in 0..{net.n_outputs - 1}, got {t.tolist()}")
    return t


def gradient(net: Network, x: Tensor, target: Tensor, forward=None, create_graph: bool = False) -> Tensor:
    """d f_target / dx (B, *input_shape) by autograd; `forward` (default the net's) maps x to logits.
    create_graph: keep x's graph and build the gradient's own (second derivatives: the attack)."""
    x = x.to(net.dtype)
    if not (create_graph and x.requires_grad):
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = (forward or net.logits)(x).reshape(x.shape[0], -1)
        selected = out.gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(selected, x, create_graph=create_graph)
    return grad


class Attribution:
    """Base class: an attribution method bound to one network. With `create_graph` set, the
    gradient methods keep the autograd graph (maps differentiable in the input, for the attack)."""

    create_graph: bool = False

    def __init__(self, net: Network) -> None:
        self.net = net

    def _prepare(self, inputs: Tensor) -> Tensor:
        return self.net.prepare(torch.as_tensor(inputs)).to(self.net.dtype)

    def attribute(self, inputs: Tensor, target: Target = None, **kwargs) -> Tensor:
        """The map (shape of inputs) explaining class `target` at each input."""
        x = self._prepare(inputs)
        return self._attribute(x, resolve_target(self.net, x, target), **kwargs).reshape(inputs.shape)

    def _attribute(self, x: Tensor, target: Tensor, **kwargs) -> Tensor:
        raise NotImplementedError


class Saliency(Attribution):
    """The input gradient d f_t / dx; its absolute value with abs=True (Captum's default)."""

    def _attribute(self, x: Tensor, target: Tensor, abs: bool = True) -> Tensor:
        grad = gradient(self.net, x, target, create_graph=self.create_graph)
        return grad.abs() if abs else grad


class InputXGradient(Attribution):
    """x * d f_t / dx: for a bias-free ReLU net, its sum is f_t(x) (Euler's theorem)."""

    def _attribute(self, x: Tensor, target: Tensor) -> Tensor:
        return x * gradient(self.net, x, target, create_graph=self.create_graph)


_RIEMANN = ("riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def _path_points(n_steps: int, method: str) -> tuple[Tensor, Tensor]:
    """Points alpha in [0, 1] and weights of the Riemann sum of integral_0^1 g(alpha) d alpha."""
    if method not in _RIEMANN:
        raise ProfitError(f"method must be one of {', '.join(_RIEMANN)}, got '{method}'")
    if n_steps < 2:
        raise ProfitError(f"n_steps must be >= 2, got {n_steps}")
    if method == "riemann_trapezoid":
        alphas = torch.linspace(0.0, 1.0, n_steps, dtype=torch.float64)
        weights = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return alphas, weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    alphas = (torch.arange(n_steps, dtype=torch.float64) + offset) / n_steps
    return alphas, torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64)


class IntegratedGradients(Attribution):
    """(x - x') * integral_0^1 grad f_t(x' + a (x - x')) da, by a Riemann sum of n_steps points.
    Completeness: the map sums to f_t(x) - f_t(x') up to the sum's error."""

    def _attribute(self, x: Tensor, target: Tensor, baselines: Tensor | float | None = None,
                   n_steps: int = 50, method: str = "riemann_trapezoid") -> Tensor:
        base = torch.zeros_like(x) if baselines is None else torch.as_tensor(baselines, dtype=x.dtype).expand_as(x)
        alphas, weights = _path_points(n_steps, method)
        alphas, weights = alphas.to(x.dtype), weights.to(x.dtype)
        shape = (-1,) + (1,) * x.dim()
        path = base.unsqueeze(0) + alphas.view(shape) * (x - base).unsqueeze(0)  # (S, B, ...)
        grads = gradient(self.net, path.flatten(0, 1), target.repeat(n_steps), create_graph=self.create_graph)
        grads = grads.view(path.shape)
        return (x - base) * (weights.view(shape) * grads).sum(0)


class SmoothGrad(Attribution):
    """Mean gradient over nt_samples inputs x + N(0, (stdevs * (max x - min x))^2), with abs=False the
    signed gradient. The noise comes from a generator seeded with `seed` and is the same for every
    sample of the batch, so a batch gives the same maps as single runs."""

    def _attribute(self, x: Tensor, target: Tensor, stdevs: float = 0.15, nt_samples: int = 25,
                   seed: int = 0, abs: bool = False) -> Tensor:
        if nt_samples < 1 or stdevs < 0:
            raise ProfitError(f"SmoothGrad needs nt_samples >= 1 and stdevs >= 0, got {nt_samples}, {stdevs}")
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((nt_samples, 1, *x.shape[1:]), generator=g, dtype=x.dtype)
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(1, -1, *(1,) * (x.dim() - 1))
        noisy = x.unsqueeze(0) + stdevs * span * noise  # (S, B, ...)
        grads = gradient(self.net, noisy.flatten(0, 1), target.repeat(nt_samples), create_graph=self.create_graph)
        grads = grads.view(noisy.shape)
        return (grads.abs() if abs else grads).mean(0)


class _GuidedRelu(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at active neurons."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


def _guided_logits(net: Network, x: Tensor) -> Tensor:
    """The network's forward over its nodes with every Relu a `_GuidedRelu`."""
    values = {net.input.name: x}
    for node in net.nodes[1:]:
        args = [values[i] for i in node.inputs]
        values[node.name] = _GuidedRelu.apply(*args) if isinstance(node.layer, Relu) else node.layer.forward(*args)
    out = values[net.output.name]
    return out.reshape(out.shape[0], -1)


class GuidedBackprop(Attribution):
    """The gradient with every ReLU's backward clamped to positive values (guided backprop)."""

    def _attribute(self, x: Tensor, target: Tensor) -> Tensor:
        return gradient(self.net, x, target, forward=lambda z: _guided_logits(self.net, z))


LRP_RULES = ("epsilon", "zplus", "alphabeta", "zb")
_LRP_OPS = (Input, Linear, Conv, Relu, AvgPool, MaxPool, Reshape)


def _with_weight(layer: Linear | Conv, weight: Tensor) -> Linear | Conv:
    return dataclasses.replace(layer, weight=weight)


def _vjp(fn, a: Tensor, s: Tensor) -> Tensor:
    """(d fn / d a)^T s: the transposed linear map fn applied to s (autograd, vectorised)."""
    a = a.detach().requires_grad_(True)
    with torch.enable_grad():
        (c,) = torch.autograd.grad(fn(a), a, s)
    return c


def _stabilise(z: Tensor, eps: float) -> Tensor:
    """z + eps * sign(z) (sign 0 counted +): the denominator of the epsilon rule."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


@dataclasses.dataclass(frozen=True)
class LRPOptions:
    """LRP rules: `rule` for the Linear/Conv layers after the first, `first` for the first one
    (default: `rule`; "zb" uses the input bounds [low, high]). epsilon: stabiliser of the eps rule
    (and of the others' denominators); alpha - beta = 1 for the alpha-beta rule."""

    rule: str = "epsilon"
    first: str | None = None
    epsilon: float = 1e-6
    alpha: float = 1.0
    beta: float = 0.0
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        for r in (self.rule, self.first):
            if r is not None and r not in LRP_RULES:
                raise ProfitError(f"LRP rule must be one of {', '.join(LRP_RULES)}, got '{r}'")
        if self.rule == "zb":
            raise ProfitError("the z^B rule is for the first layer only (first='zb')")
        if abs(self.alpha - self.beta - 1.0) > 1e-9:
            raise ProfitError(f"alpha-beta LRP needs alpha - beta = 1, got {self.alpha}, {self.beta}")


class LRP(Attribution):
    """Layer-wise relevance propagation over Linear/Conv/Relu/AvgPool/MaxPool/Reshape nodes.
    The output relevance is f_t(x) at the target logit; Relu and Reshape pass relevance through,
    pooling layers redistribute it by the epsilon rule (max pooling: to the winners). With the
    epsilon rule, zero biases and a small epsilon the map sums to f_t(x) (conservation)."""

    def __init__(self, net: Network, options: LRPOptions = LRPOptions()) -> None:
        super().__init__(net)
        self.options = options
        bad = [f"{n.layer.op} (node '{n.name}')" for n in net.nodes
               if not isinstance(n.layer, _LRP_OPS) or (n is not net.input and len(n.inputs) != 1)]
        if bad:
            raise UnsupportedOpError(f"LRP does not support {', '.join(bad)}")

    def _attribute(self, x: Tensor, target: Tensor) -> Tensor:
        o = self.options
        with torch.no_grad():
            values = self.net.forward_all(x)
        out = values[self.net.output.name].reshape(x.shape[0], -1)
        relevance = torch.zeros_like(out).scatter(1, target.view(-1, 1), out.gather(1, target.view(-1, 1)))
        relevance = relevance.reshape(values[self.net.output.name].shape)
        first = next((n.name for n in self.net.nodes if isinstance(n.layer, (Linear, Conv))), None)
        for node in reversed(self.net.nodes[1:]):
            a = values[node.inputs[0]]
            layer = node.layer
            if isinstance(layer, (Relu, Reshape)):
                relevance = relevance.reshape(a.shape)
            elif isinstance(layer, (AvgPool, MaxPool)):
                z = layer.forward(a)
                relevance = a * _vjp(layer.forward, a, relevance / _stabilise(z, o.epsilon))
            else:
                rule = (o.first or o.rule) if node.name == first else o.rule
                relevance = _linear_rule(layer, a, relevance, rule, o)
        return relevance


def _linear_rule(layer: Linear | Conv, a: Tensor, r: Tensor, rule: str, o: LRPOptions) -> Tensor:
    """Relevance at the input `a` of a Linear/Conv layer from the relevance `r` at its output."""
    pos, neg = _with_weight(layer, layer.weight.clamp(min=0)), _with_weight(layer, layer.weight.clamp(max=0))
    if rule == "epsilon":
        z = layer.forward(a)
        return a * _vjp(layer.linear, a, r / _stabilise(z, o.epsilon))
    if rule == "zb":
        low, high = torch.full_like(a, o.low), torch.full_like(a, o.high)
        z = layer.linear(a) - pos.linear(low) - neg.linear(high)
        s = r / _stabilise(z, o.epsilon)
        return a * _vjp(layer.linear, a, s) - low * _vjp(pos.linear, low, s) - high * _vjp(neg.linear, high, s)
    ap, an = a.clamp(min=0), a.clamp(max=0)

    def share(wp: Linear | Conv, wn: Linear | Conv) -> Tensor:
        """The relevance share of the contributions ap * w+ + an * w- (one sign of z)."""
        z = wp.linear(ap) + wn.linear(an)
        s = r / (z + o.epsilon * (z >= 0).to(z.dtype) - o.epsilon * (z < 0).to(z.dtype))
        s = torch.where(z == 0, torch.zeros_like(s), s)
        return ap * _vjp(wp.linear, ap, s) + an * _vjp(wn.linear, an, s)

    if rule == "zplus":
        return share(pos, neg)
    return o.alpha * share(pos, neg) - o.beta * share(neg, pos)


class ProofFeatureMap(Attribution):
    """ProFIt's proof-feature gradient map behind the same verb: prove robustness of class `target`
    on clip(x +- eps, 0, 1) with `domain`, prune the proof to a small sufficient set of features at
    `layer` (profit.features), and return the priority-weighted sum of the kept features' input
    gradients. An input whose robustness is not proven gets a zero map (there is no proof)."""

    def __init__(self, net: Network, eps: float = 0.02, domain: str = "crown", layer: int | str = -1,
                 prune: PruneOptions = PruneOptions()) -> None:
        super().__init__(net)
        self.eps, self.domain, self.layer, self.prune = eps, domain, layer, prune

    def _attribute(self, x: Tensor, target: Tensor) -> Tensor:
        features = ProofFeatures.compute(self.net, x, target, self.eps, self.domain, self.layer)
        out = torch.zeros_like(x)
        for maps in features.visualize(features.prune(self.prune)):
            out[maps.index] = maps.aggregate.to(x.dtype)
        return out
