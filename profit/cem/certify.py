"""Certified contrastive explanations: what the project's verifier proves about a PP or a PN.

- A pertinent positive p is `certified` when a domain proves that the class stays t0 on the
  whole box between p and the original image x0 (per pixel [min(p_i, x0_i), max(p_i, x0_i)]:
  every pixel outside the PP ranges from the no-info value to its original value), and is
  then shrunk while the proof holds: pixels are dropped from the PP (set to the no-info
  value, widening the box) in order of their smallest contribution, trying every prefix of
  the order in one batched bound (the first, cheapest domain) and keeping the longest proven
  one; the pixel after it stays in the PP, and the next round goes on without it. Every
  shrunk PP is a proven box. Otherwise `empirical`.
- A pertinent negative comes with onnxruntime's class at x0 + d (a real flip or not), and,
  where a domain proves it, the largest eps (of a geometric grid) such that the new class
  holds on the whole L_inf eps-ball around x0 + d.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from domains import get_domain
from networks.ir import Network
from profit.attacks import onnx_outputs
from profit.cem.generator import CEMResult
from specs.properties import robustness
from specs.regions import Box

DOMAINS = ("crown", "alpha-crown")


def proven(net: Network, lower: Tensor, upper: Tensor, labels: Tensor, domains: tuple[str, ...] = DOMAINS) -> Tensor:
    """Whether class `labels` (K,) is proven on each box (K, *shape): the first domain that
    proves a box decides it; a box no domain proves stays unproven."""
    done = torch.zeros(len(lower), dtype=torch.bool)
    for name in domains:
        rows = (~done).nonzero().flatten()
        if len(rows) == 0:
            break
        region = Box(lower[rows].float(), upper[rows].float())
        result = get_domain(name)(net).bound(region, robustness(labels[rows], net.n_outputs))
        done[rows] = result.proven
    return done


@dataclass(frozen=True, eq=False)
class CertifiedPP:
    """One image's pertinent positive after certification."""

    status: str  # "certified" (a domain proved the box) or "empirical"
    pp: Tensor  # the PP (after shrinking, when certified), the image's shape
    pixels: tuple[int, ...]  # flat indices of the PP's pixels (value != no-info)
    removed: int  # pixels the shrinking dropped


def _box(pp: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    return torch.minimum(pp, x0), torch.maximum(pp, x0)


def certify_pp(net: Network, result: CEMResult, no_info: float = 0.0, shrink: bool = True,
               domains: tuple[str, ...] = DOMAINS) -> list[CertifiedPP]:
    """Certify (and shrink) every found PP of `result` (mode PP); not found -> empirical, unchanged."""
    if result.mode != "PP":
        raise ValueError("certify_pp needs a PP result")
    out = []
    for b in range(len(result.x0)):
        x0, pp, label = result.x0[b].double(), result.explanation[b].double(), result.target[b:b + 1]
        if not bool(result.found[b]):
            out.append(CertifiedPP("empirical", pp, _pixels(pp, no_info), 0))
            continue
        lo, hi = _box(pp, x0)
        if not bool(proven(net, lo[None], hi[None], label, domains)[0]):
            out.append(CertifiedPP("empirical", pp, _pixels(pp, no_info), 0))
            continue
        removed, keep = 0, torch.zeros(pp.numel(), dtype=torch.bool)
        while shrink:
            pixels = torch.tensor(_pixels(pp, no_info), dtype=torch.long)
            pixels = pixels[~keep[pixels]]
            if len(pixels) == 0:
                break
            order = pixels[(pp.reshape(-1)[pixels] - no_info).abs().argsort()]
            K = len(order)
            drop = torch.arange(K)[None, :] <= torch.arange(K)[:, None]  # row k drops order[:k + 1]
            candidates = pp.reshape(1, -1).repeat(K, 1)
            candidates[:, order] = torch.where(drop, torch.full((K, K), no_info, dtype=pp.dtype), candidates[:, order])
            candidates = candidates.reshape(K, *pp.shape)
            lo, hi = _box(candidates, x0.expand_as(candidates))
            ok = proven(net, lo, hi, label.expand(K), domains[:1]).nonzero().flatten()
            k = int(ok.max()) if len(ok) else -1
            if k >= 0:
                pp, removed = candidates[k], removed + k + 1
            if k + 1 < K:
                keep[order[k + 1]] = True  # dropping it broke the proof: it stays in the PP
        out.append(CertifiedPP("certified", pp, _pixels(pp, no_info), removed))
    return out


def _pixels(pp: Tensor, no_info: float) -> tuple[int, ...]:
    return tuple((pp.reshape(-1) != no_info).nonzero().flatten().tolist())


@dataclass(frozen=True, eq=False)
class CertifiedPN:
    """One image's pertinent negative: onnxruntime's class at x0 + d and the proven radius."""

    runtime_class: int
    flipped: bool  # onnxruntime's class differs from t0
    proven_eps: float  # largest grid eps with the new class proven around x0 + d (0: none)


def certify_pn(net: Network, result: CEMResult, onnx_path: str | Path | None = None,
               grid: Tensor = torch.logspace(-4, -1, 13), domains: tuple[str, ...] = DOMAINS) -> list[CertifiedPN]:
    """Re-check every PN with onnxruntime (the IR in float64 without an ONNX file) and prove
    the largest eps of `grid` around it for the class it gets; eps-balls clipped to [0, 1]."""
    if result.mode != "PN":
        raise ValueError("certify_pn needs a PN result")
    x = result.explanation
    if onnx_path is not None:
        classes = onnx_outputs(onnx_path, net, x.float()).argmax(1)
    else:
        classes = net.to(torch.float64)(x.double()).reshape(len(x), -1).argmax(1)
    out = []
    for b in range(len(x)):
        new = int(classes[b])
        flipped = bool(result.found[b]) and new != int(result.target[b])
        eps = 0.0
        if flipped:
            centre = x[b].double()[None].expand(len(grid), *x[b].shape)
            radius = grid.double().reshape(-1, *[1] * x[b].dim())
            ok = proven(net, (centre - radius).clamp(0, 1), (centre + radius).clamp(0, 1),
                        torch.full((len(grid),), new, dtype=torch.long), domains)
            eps = float(grid[ok].max()) if bool(ok.any()) else 0.0
        out.append(CertifiedPN(new, flipped, eps))
    return out
