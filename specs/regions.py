"""Input regions: batched axis-aligned boxes and the constructors that build them.

Every region is a `Box` of shape (B, *input_shape): B independent regions of the
same per-sample shape, stored as float32 `lower`/`upper` tensors. Constructors:

- `linf_ball(x, eps)`: clip(x - eps, lo, hi) .. clip(x + eps, lo, hi).
- `patch(x, pixels)`: the listed pixels range over [lo, hi], the others are fixed to x.
- `patch_linf(x, pixels, eps)`: the listed pixels range over clip(x +- eps), the others are fixed.
- `inner_box(lower, upper)` / `strictly_inside(box)`: float32 boxes *inside* a real box, for
  attacks: a Box rounds outward (right for proofs), so a point of it may lie a float32 step
  outside the region as written; counterexamples are searched and confirmed inside these.

Wider inputs (float64, integers) are rounded *outward* to float32, so a Box always
contains the real region it was built from: a proof over the Box is a proof over it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


class RegionError(ValueError):
    """An input region that cannot exist: mismatched shapes, lower > upper, NaN, bad eps or pixel."""


def _f32_down(t: Tensor) -> Tensor:
    """Largest float32 values <= t (exact when t is already float32)."""
    r = t.to(torch.float32)
    if t.dtype == torch.float64:
        r = torch.where(r.double() > t, torch.nextafter(r, torch.full_like(r, -torch.inf)), r)
    return r


def _f32_up(t: Tensor) -> Tensor:
    """Smallest float32 values >= t (exact when t is already float32)."""
    return -_f32_down(-t)


def _batch_index(t: Tensor, idx: int | slice | Tensor) -> Tensor:
    """Index dim 0 of t, keeping it: an integer index gives a batch of one."""
    if isinstance(idx, int) or (isinstance(idx, Tensor) and idx.ndim == 0):
        return t[idx].unsqueeze(0)
    return t[idx]


@dataclass(frozen=True, eq=False)
class Box:
    """B axis-aligned boxes {x : lower <= x <= upper}, one per batch element.

    Non-float32 bounds are rounded outward to float32. Infinite bounds are allowed
    (e.g. an unclipped ball with eps=inf) but cannot be sampled.
    """

    lower: Tensor  # (B, *shape) float32
    upper: Tensor  # (B, *shape) float32, >= lower

    def __post_init__(self) -> None:
        lower, upper = torch.as_tensor(self.lower), torch.as_tensor(self.upper)
        if lower.shape != upper.shape:
            raise RegionError(f"Box lower {tuple(lower.shape)} and upper {tuple(upper.shape)} differ in shape")
        if lower.ndim == 0:
            raise RegionError("Box bounds need a batch dimension, got a scalar")
        if lower.device != upper.device:
            raise RegionError(f"Box lower on {lower.device} and upper on {upper.device}")
        if torch.isnan(lower).any() or torch.isnan(upper).any():
            raise RegionError("Box bounds contain NaN")
        lower, upper = _f32_down(lower), _f32_up(upper)
        bad = lower > upper
        if bad.any():
            i = int(bad.flatten().nonzero()[0])
            raise RegionError(
                f"Box lower > upper at flat index {i}: {lower.flatten()[i].item()} > {upper.flatten()[i].item()}"
            )
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def batch_size(self) -> int:
        """B, the number of boxes."""
        return self.lower.shape[0]

    @property
    def shape(self) -> torch.Size:
        """The per-sample shape (without the batch dimension)."""
        return self.lower.shape[1:]

    @property
    def center(self) -> Tensor:
        """(lower + upper) / 2, shape (B, *shape)."""
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> Tensor:
        """(upper - lower) / 2, shape (B, *shape)."""
        return (self.upper - self.lower) / 2

    def _check_finite(self) -> None:
        if not (torch.isfinite(self.lower).all() and torch.isfinite(self.upper).all()):
            raise RegionError("cannot sample a Box with infinite bounds")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n uniform samples per box, shape (B, n, *shape); every sample lies inside its box."""
        self._check_finite()
        lo, hi = self.lower.unsqueeze(1), self.upper.unsqueeze(1)
        size = (self.batch_size, n, *self.shape)
        u = torch.rand(size, generator=generator, dtype=lo.dtype, device=lo.device)
        return torch.minimum(torch.maximum(lo + (hi - lo) * u, lo), hi)

    def vertices_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n random vertices per box (each coordinate at lower or upper), shape (B, n, *shape)."""
        self._check_finite()
        size = (self.batch_size, n, *self.shape)
        at_upper = torch.rand(size, generator=generator, device=self.lower.device) < 0.5
        return torch.where(at_upper, self.upper.unsqueeze(1), self.lower.unsqueeze(1))

    def contains(self, x: Tensor, tol: float = 0.0) -> Tensor:
        """Whether x[b] lies in box b (up to tol per coordinate); x (B, *shape) -> bool (B,)."""
        if x.shape != self.lower.shape:
            raise RegionError(f"contains expects x of shape {tuple(self.lower.shape)}, got {tuple(x.shape)}")
        inside = (x >= self.lower - tol) & (x <= self.upper + tol)
        return inside.reshape(self.batch_size, -1).all(dim=1)

    def __getitem__(self, idx: int | slice | Tensor) -> Box:
        """Select boxes along the batch dimension; an integer gives a Box with batch size 1."""
        return Box(_batch_index(self.lower, idx), _batch_index(self.upper, idx))

    @classmethod
    def concat(cls, boxes: Sequence[Box]) -> Box:
        """Stack the batches of several boxes with the same per-sample shape."""
        if not boxes:
            raise RegionError("Box.concat needs at least one box")
        shapes = {tuple(b.shape) for b in boxes}
        if len(shapes) > 1:
            raise RegionError(f"Box.concat needs equal per-sample shapes, got {sorted(shapes)}")
        return cls(torch.cat([b.lower for b in boxes]), torch.cat([b.upper for b in boxes]))


def _as_bound(v: float | Tensor | None, like: Tensor, default: float) -> Tensor:
    """A clipping bound as a tensor broadcastable to `like`; None means no clipping."""
    return torch.as_tensor(default if v is None else v, dtype=like.dtype, device=like.device)


def _as_float(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.float32)


def linf_ball(
    x: Tensor,
    eps: float | Tensor,
    lo: float | Tensor | None = 0.0,
    hi: float | Tensor | None = 1.0,
) -> Box:
    """The L-infinity ball around each x[b], clipped to the valid input range [lo, hi].

    x: (B, *shape). eps: a float or a tensor broadcastable to x (per-sample eps: shape
    (B, 1, ..., 1)). lo / hi: floats or tensors broadcastable to x, or None for no clipping.
    Box = [clip(x - eps, lo, hi), clip(x + eps, lo, hi)].
    """
    x = _as_float(x)
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if torch.isnan(eps_t).any():
        raise RegionError("eps must be >= 0, got nan")
    if (eps_t < 0).any():
        raise RegionError(f"eps must be >= 0, got {eps_t.min().item()}")
    lo_t, hi_t = _as_bound(lo, x, -torch.inf), _as_bound(hi, x, torch.inf)
    if (lo_t > hi_t).any():
        raise RegionError("linf_ball needs lo <= hi")
    try:
        lower = torch.minimum(torch.maximum(x - eps_t, lo_t), hi_t)
        upper = torch.minimum(torch.maximum(x + eps_t, lo_t), hi_t)
    except RuntimeError as e:
        raise RegionError(f"eps/lo/hi do not broadcast to x of shape {tuple(x.shape)}: {e}") from None
    if lower.shape != x.shape:
        raise RegionError(f"eps/lo/hi broadcast x {tuple(x.shape)} to {tuple(lower.shape)}")
    return Box(lower, upper)


def _pixel_mask(x: Tensor, pixels: Sequence[int]) -> Tensor:
    """Bool mask of shape x.shape[1:] that is True at the flat row-major `pixels`."""
    n = math.prod(x.shape[1:])
    idx = torch.as_tensor(list(pixels), dtype=torch.long)
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0].item()
        raise RegionError(f"pixel index {bad} out of range for {n} values per sample")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return mask.reshape(x.shape[1:]).to(x.device)


def patch(
    x: Tensor,
    pixels: Sequence[int],
    lo: float | Tensor = 0.0,
    hi: float | Tensor = 1.0,
) -> Box:
    """Patch region: the `pixels` (flat row-major indices into one sample) range over [lo, hi].

    x: (B, *shape); every other coordinate is fixed to its value in x.
    """
    x = _as_float(x)
    mask = _pixel_mask(x, pixels)
    lo_t, hi_t = _as_bound(lo, x, -torch.inf), _as_bound(hi, x, torch.inf)
    if (lo_t > hi_t).any():
        raise RegionError("patch needs lo <= hi")
    return Box(torch.where(mask, lo_t, x), torch.where(mask, hi_t, x))


def patch_linf(
    x: Tensor,
    pixels: Sequence[int],
    eps: float | Tensor,
    lo: float | Tensor | None = 0.0,
    hi: float | Tensor | None = 1.0,
) -> Box:
    """Patch region whose free `pixels` range over clip(x +- eps, lo, hi); the rest is fixed to x."""
    x = _as_float(x)
    mask = _pixel_mask(x, pixels)
    ball = linf_ball(x, eps, lo, hi)
    return Box(torch.where(mask, ball.lower, x), torch.where(mask, ball.upper, x))


def _next_up(t: Tensor) -> Tensor:
    return torch.nextafter(t, torch.full_like(t, torch.inf))


def _next_down(t: Tensor) -> Tensor:
    return torch.nextafter(t, torch.full_like(t, -torch.inf))


def _feasible(lower: Tensor, upper: Tensor) -> tuple[Box, Tensor]:
    """Box(lower, upper) where every coordinate is non-empty, and which regions were (B,) bool;
    an empty coordinate is collapsed to its lower end, and its region is marked infeasible."""
    empty = lower > upper
    ok = ~empty.reshape(empty.shape[0], -1).any(dim=1)
    return Box(lower, torch.where(empty, lower, upper)), ok


def inner_box(lower: Tensor, upper: Tensor) -> tuple[Box, Tensor]:
    """The largest float32 box inside the real box [lower, upper] (float64 or float32 bounds).

    Counterexamples must lie in the region as written; `specs.Box` rounds outward (right
    for proofs), so attacks search this inward-rounded box instead. Returns the box and
    (B,) bool: False where no float32 point lies in some coordinate's interval.
    """
    lower, upper = torch.as_tensor(lower), torch.as_tensor(upper)
    lo, hi = lower.to(torch.float32), upper.to(torch.float32)
    if lower.dtype == torch.float64:
        lo = torch.where(lo.double() < lower, _next_up(lo), lo)
        hi = torch.where(hi.double() > upper, _next_down(hi), hi)
    return _feasible(lo, hi)


def strictly_inside(box: Box) -> tuple[Box, Tensor]:
    """A float32 box inside whatever real box `box` was rounded outward from.

    For boxes whose exact bounds are lost (e.g. parsed VNN-LIB bounds): each bound
    moves one float32 step inward unless the interval is a single point (then it is
    exact). Returns the box and (B,) bool as `inner_box`.
    """
    point = box.lower == box.upper
    lo = torch.where(point, box.lower, _next_up(box.lower))
    hi = torch.where(point, box.upper, _next_down(box.upper))
    return _feasible(lo, hi)
