"""Counterexample search inside a Box.

    x, found = pgd(net, region, spec)                 # (B, *shape), (B,) bool
    ok = confirm("net.onnx", net, x, region, spec)    # (B,) bool: `profit.attacks.runtime`

- `quick_attack`: a cheap first pass: the region centre, an FGSM vertex (every free
  coordinate at the bound its gradient points away from), random vertices and
  uniform samples.
- `pgd`: projected gradient descent (Madry et al., ICLR 2018) on the CNF margin
  `spec.margin(net(x))` with signed-gradient steps of linearly decaying size,
  projected onto the box after every step; `restarts` starts per region, the first at the region centre, the
  others uniform in the box. Batched over regions and restarts in one tensor.
- attacks search inside `specs.regions.inner_box` / `strictly_inside` boxes where the
  region's bounds were rounded outward (a point of such a Box may lie a float32 step
  outside the region as written).

Attacks are heuristics: `found` can be False when a counterexample exists. A
point with `found` True violates the spec according to the IR forward pass in
float32; `confirm` is what makes it a reportable counterexample. Every returned
point lies inside its box (every iterate is clamped to [lower, upper]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from networks.ir import Network
from profit.errors import ProfitError
from specs.properties import Spec
from specs.regions import Box

_QUICK_BUDGET = 2_000_000  # floats per chunk of quick_attack samples (B * chunk * numel)


@dataclass(frozen=True)
class AttackOptions:
    """PGD settings.

    steps: signed-gradient steps per start; restarts: starts per region (the first
    at the centre); step_size: average absolute step per coordinate, or None for
    2.5 * (upper - lower) / steps per coordinate (step t is 2 (1 - t/steps) times
    it: it decays linearly to 0); seed: for the random starts.
    """

    steps: int = 50
    restarts: int = 3
    step_size: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.restarts < 1:
            raise ProfitError(f"attack needs steps >= 0 and restarts >= 1, got {self.steps} and {self.restarts}")
        if self.step_size is not None and not self.step_size > 0:
            raise ProfitError(f"attack step_size must be > 0, got {self.step_size}")


def _free_mask(region: Box, mask: Tensor | None) -> Tensor:
    """Bool (B, *shape): the coordinates an attack may move (inside `mask`, with width > 0)."""
    free = region.upper > region.lower
    if mask is None:
        return free
    mask = torch.as_tensor(mask, dtype=torch.bool, device=free.device)
    if tuple(mask.shape) not in (tuple(region.shape), tuple(region.lower.shape)):
        raise ProfitError(f"attack mask of shape {tuple(mask.shape)} fits neither one sample "
                          f"{tuple(region.shape)} nor the batch {tuple(region.lower.shape)}")
    return free & mask.expand_as(free)


def _margins(net: Network, spec: Spec, x: Tensor) -> Tensor:
    """spec.margin of the IR outputs at x (B, S, *shape) -> (B, S)."""
    B, S = x.shape[:2]
    y = net(x.reshape(B * S, *x.shape[2:])).reshape(B, S, -1)
    return spec.margin(y)


def _select(best_m: Tensor, best_x: Tensor) -> tuple[Tensor, Tensor]:
    """The candidate with the lowest margin per region: (B, S), (B, S, *shape) -> (B, *shape), (B,)."""
    k = best_m.argmin(dim=1)
    rows = torch.arange(best_m.shape[0], device=best_m.device)
    return best_x[rows, k], best_m[rows, k]


def pgd(
    net: Network,
    region: Box,
    spec: Spec,
    options: AttackOptions = AttackOptions(),
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Search each box for a point whose outputs violate the spec.

    region: B boxes (B, *net.input_shape); spec: batch B or 1; mask: bool, the shape of
    one sample or (B, *shape): only True coordinates move, the others stay at the
    region centre. Returns x (B, *shape), the lowest-margin point seen per box (always
    inside it), and found (B,) = spec.margin(net(x)) <= 0. Deterministic for a seed.
    """
    B, shape = region.batch_size, tuple(region.shape)
    spec = spec.expand(B)
    R = options.restarts
    free = _free_mask(region, mask).unsqueeze(1)  # (B, 1, *shape)
    lo, hi = region.lower.unsqueeze(1), region.upper.unsqueeze(1)
    center = region.center.unsqueeze(1).clamp(lo, hi)
    generator = torch.Generator(device=lo.device).manual_seed(options.seed)
    u = torch.rand((B, R, *shape), generator=generator, device=lo.device)
    start = torch.minimum(torch.maximum(lo + (hi - lo) * u, lo), hi)
    start[:, 0] = center[:, 0]
    x = torch.where(free, start, center)
    if options.step_size is None:
        step = 2.5 * (hi - lo) / max(options.steps, 1)
    else:
        step = torch.full_like(lo, options.step_size)
    step = step * free
    best_m = torch.full((B, R), torch.inf, device=lo.device)
    best_x = x.clone()
    steps = max(options.steps, 1)
    for t in range(options.steps + 1):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            m = _margins(net, spec, x)
            grad, = torch.autograd.grad(m.sum(), x)
        m = m.detach()
        better = m < best_m
        best_m = torch.where(better, m, best_m)
        best_x = torch.where(better.reshape(B, R, *[1] * len(shape)), x.detach(), best_x)
        if t == options.steps or bool((best_m <= 0).any(dim=1).all()):
            break
        decay = 2.0 * (1.0 - t / steps)  # linear decay to 0, average 1: big moves first, then settle
        x = torch.minimum(torch.maximum(x.detach() - decay * step * grad.sign(), lo), hi)
    x_best, m_best = _select(best_m, best_x)
    return x_best, m_best <= 0


def quick_attack(
    net: Network,
    region: Box,
    spec: Spec,
    n_samples: int = 32,
    seed: int = 0,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A cheap pass: centre, FGSM vertex, n_samples random vertices and uniform points per box.

    Same shapes and guarantees as `pgd`: x (B, *shape) inside the boxes, found (B,).
    """
    B, shape = region.batch_size, tuple(region.shape)
    spec = spec.expand(B)
    free = _free_mask(region, mask)
    center = region.center.clamp(region.lower, region.upper)
    x0 = center.detach().requires_grad_(True)
    with torch.enable_grad():
        m0 = spec.margin(net(x0))
        grad, = torch.autograd.grad(m0.sum(), x0)
    fgsm = torch.where(free, torch.where(grad > 0, region.lower, region.upper), center)
    best_x = torch.stack([center, fgsm], dim=1)
    best_m = _margins(net, spec, best_x)
    best_x, best_m = _select(best_m, best_x)
    generator = torch.Generator(device=center.device).manual_seed(seed)
    numel = max(math.prod(shape), 1)
    chunk = max(1, min(n_samples, _QUICK_BUDGET // (B * numel)))
    done = 0
    while done < n_samples:
        n = min(chunk, n_samples - done)
        half = (n + 1) // 2
        lo, hi = region.lower.unsqueeze(1), region.upper.unsqueeze(1)
        at_upper = torch.rand((B, half, *shape), generator=generator, device=lo.device) < 0.5
        vertices = torch.where(at_upper, hi, lo)
        u = torch.rand((B, n - half, *shape), generator=generator, device=lo.device)
        uniform = torch.minimum(torch.maximum(lo + (hi - lo) * u, lo), hi)
        cand = torch.where(free.unsqueeze(1), torch.cat([vertices, uniform], dim=1), center.unsqueeze(1))
        x, m = _select(_margins(net, spec, cand), cand)
        better = m < best_m
        best_m = torch.where(better, m, best_m)
        best_x = torch.where(better.reshape(B, *[1] * len(shape)), x, best_x)
        done += n
    return best_x.detach(), best_m <= 0
