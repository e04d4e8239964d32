"""The explanation manipulation attack (Dombrowski et al., "Explanations can be manipulated and
geometry is to blame", NeurIPS 2019): find x_adv near x whose explanation looks like a target map
while the output barely moves,

    minimise  || h(x_adv) - h_t ||^2  +  gamma || g(x_adv) - g(x) ||^2

with Adam, x_adv clamped to the input range after every step. h is the method's map normalised to
unit L1 norm (|map| / sum |map|, as the paper compares them), g the ReLU network's logits. A ReLU
network's gradient is piecewise constant (zero second derivative), so the map is computed on
the beta-smoothed network, beta growing geometrically from beta_start to beta_end over the steps
(the paper's schedule); the reported maps are those of the ReLU network.

Metrics per sample: MSE of the normalised maps, Pearson correlation (PCC) and SSIM between
h(x_adv) and h_t (and PCC before the attack), SSIM(x_adv, x), the L2 change of the logits and
whether the predicted class is kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from networks.ir import Network
from profit.attribution.methods import (
    Attribution, InputXGradient, IntegratedGradients, Saliency, SmoothGrad, resolve_target,
)
from profit.attribution.smoothing import beta_smoothed_network
from profit.errors import ProfitError

_DIFFERENTIABLE = (Saliency, InputXGradient, IntegratedGradients, SmoothGrad)


@dataclass(frozen=True)
class ManipulationOptions:
    """Adam steps and learning rate, gamma (weight of the output term), the beta schedule and the
    method's attribute() arguments. Defaults: sized for MNIST (the paper runs 1500 steps, lr 2e-4)."""

    steps: int = 300
    lr: float = 1e-3
    gamma: float = 0.1
    beta_start: float = 10.0
    beta_end: float = 100.0
    lo: float = 0.0
    hi: float = 1.0
    method_args: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.gamma < 0 or not 0 < self.beta_start <= self.beta_end:
            raise ProfitError("manipulation needs steps >= 1, lr > 0, gamma >= 0 and 0 < beta_start <= beta_end")


@dataclass(frozen=True)
class ManipulationResult:
    """The attack's outcome for a batch of B inputs."""

    x_adv: Tensor  # (B, *input_shape)
    map_original: Tensor  # (B, *input_shape) h(x), normalised
    map_adv: Tensor  # (B, *input_shape) h(x_adv), normalised (ReLU network)
    map_target: Tensor  # (B, *input_shape) h_t, normalised
    mse: Tensor  # (B,) mean squared error of map_adv and map_target
    pcc_before: Tensor  # (B,) PCC(h(x), h_t)
    pcc_after: Tensor  # (B,) PCC(h(x_adv), h_t)
    ssim_maps: Tensor  # (B,) SSIM(h(x_adv), h_t)
    ssim_input: Tensor  # (B,) SSIM(x_adv, x)
    output_change: Tensor  # (B,) || g(x_adv) - g(x) ||_2 of the logits
    class_kept: Tensor  # (B,) bool


def normalise(maps: Tensor) -> Tensor:
    """|map| / sum |map| per sample (maps of zero mass stay 0)."""
    a = maps.abs().flatten(1)
    return (a / a.sum(1, keepdim=True).clamp(min=1e-30)).view_as(maps)


def pcc(a: Tensor, b: Tensor) -> Tensor:
    """(B,) Pearson correlation of two batches of maps."""
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)


def ssim(a: Tensor, b: Tensor, window: int = 7, sigma: float = 1.5) -> Tensor:
    """(B,) mean structural similarity (Wang et al. 2004) of images (B, C, H, W) over a Gaussian window,
    data range the larger of the two batches' per-sample ranges; global statistics for other shapes."""
    a, b = a.double(), b.double()
    span = torch.maximum(a.flatten(1).amax(1) - a.flatten(1).amin(1), b.flatten(1).amax(1) - b.flatten(1).amin(1))
    c1, c2 = ((0.01 * span) ** 2).clamp(min=1e-30), ((0.03 * span) ** 2).clamp(min=1e-30)
    if a.dim() == 4 and min(a.shape[-2:]) >= window:
        g = torch.exp(-(torch.arange(window, dtype=a.dtype) - window // 2) ** 2 / (2 * sigma ** 2))
        kernel = (g[:, None] * g[None, :] / g.sum() ** 2).expand(a.shape[1], 1, window, window)

        def blur(t: Tensor) -> Tensor:
            return F.conv2d(t, kernel, groups=a.shape[1])

        c1, c2 = c1.view(-1, 1, 1, 1), c2.view(-1, 1, 1, 1)
    else:
        def blur(t: Tensor) -> Tensor:
            return t.flatten(1).mean(1, keepdim=True)

        a, b, c1, c2 = a.flatten(1), b.flatten(1), c1.view(-1, 1), c2.view(-1, 1)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def manipulate(net: Network, x: Tensor, target_map: Tensor, method: Attribution,
               options: ManipulationOptions = ManipulationOptions()) -> ManipulationResult:
    """Attack `method`'s explanation of each x (B, *input_shape) toward target_map (same shape);
    the explained class is each x's predicted class."""
    if not isinstance(method, _DIFFERENTIABLE):
        names = ", ".join(c.__name__ for c in _DIFFERENTIABLE)
        raise ProfitError(f"the manipulation attack needs a gradient method ({names}), got {type(method).__name__}")
    x = net.prepare(torch.as_tensor(x)).to(net.dtype).detach()
    target_map = torch.as_tensor(target_map, dtype=x.dtype).reshape(x.shape)
    kwargs = dict(options.method_args)
    t = resolve_target(net, x, None)
    with torch.no_grad():
        logits = net.logits(x)
    h_t = normalise(target_map)
    x_adv = x.clone().requires_grad_(True)
    adam = torch.optim.Adam([x_adv], lr=options.lr)
    smooth = copy.copy(method)
    smooth.create_graph = True
    ratio = options.beta_end / options.beta_start
    for step in range(options.steps):
        beta = options.beta_start * ratio ** (step / max(1, options.steps - 1))
        smooth.net = beta_smoothed_network(net, beta)
        with torch.enable_grad():
            h = normalise(smooth.attribute(x_adv, t, **kwargs))
            loss = ((h - h_t) ** 2).flatten(1).sum(1) + options.gamma * ((net.logits(x_adv) - logits) ** 2).sum(1)
            adam.zero_grad()
            loss.sum().backward()
        adam.step()
        with torch.no_grad():
            x_adv.clamp_(options.lo, options.hi)
    x_adv = x_adv.detach()
    before = normalise(method.attribute(x, t, **kwargs))
    after = normalise(method.attribute(x_adv, t, **kwargs))
    with torch.no_grad():
        adv_logits = net.logits(x_adv)
    return ManipulationResult(
        x_adv, before, after, h_t, ((after - h_t) ** 2).flatten(1).mean(1), pcc(before, h_t), pcc(after, h_t),
        ssim(after, h_t), ssim(x_adv, x), (adv_logits - logits).norm(dim=1), adv_logits.argmax(1) == t)
