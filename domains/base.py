"""The one small interface every abstract domain implements.

    result = DeepPoly(net).bound(region, spec=spec, keep=True)
    result.lower, result.upper        # (B, *output_shape) output bounds
    result.spec_lower                 # (B, m) lower bounds of C y + d
    result.proven                     # (B,) bool, from the Spec's clause structure
    result.bounds["node"]             # (lower, upper) of a hidden node (keep=True)
    result.states["node"]             # the domain's own element at that node (keep=True)

A domain is sound, not complete: every concrete output of every input in the
region lies within [lower, upper], and every value of C y + d is >= spec_lower.
`proven` is True only when the bounds prove the property; False means unknown.
Bounds are computed in floating point without directed rounding, so a float32
margin within rounding of 0 proves nothing by itself: `checked_proofs` re-bounds
those regions in float64 (`Domain.float64`) and keeps a proof only if it stands.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from networks.ir import Layer, Network
from specs.properties import Spec
from specs.regions import Box


NEAR_ZERO = 1e-3  # float32 spec margins in (0, NEAR_ZERO] are re-bounded in float64 before they prove anything


class DomainError(ValueError):
    """A domain cannot handle an op of the network (names op and domain)."""


class DeadlineExceeded(RuntimeError):
    """A bound computation ran past its hard deadline (`stop`) and was abandoned: no bound."""


def unsupported(domain: str, layer: Layer, node: str) -> DomainError:
    return DomainError(f"domain '{domain}' does not support op {layer.op} (node '{node}')")


@dataclass(frozen=True)
class BoundResult:
    """What a domain proved about a batch of B regions."""

    lower: Tensor  # (B, *output_shape)
    upper: Tensor  # (B, *output_shape)
    spec_lower: Tensor | None = None  # (B, m) lower bound of C y + d
    spec_upper: Tensor | None = None  # (B, m) upper bound of C y + d, where the domain gives one
    proven: Tensor | None = None  # (B,) bool
    bounds: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)  # node -> (lower, upper)
    states: dict[str, Any] = field(default_factory=dict)  # node -> domain element
    domain: str = ""
    spec_margin: Tensor | None = None  # (B,) min over clauses of max over rows of spec_lower; > 0 iff proven

    def take(self, i: int) -> BoundResult:
        """Batch element i of every tensor (kept as a batch of one), of bounds and states too."""
        return _take(self, i)


def _take(value: Any, i: int) -> Any:
    """Batch element i (kept as a batch of one) of a tensor, tuple, dict or dataclass of tensors;
    a tensor of batch 1 (shared by the batch) stays as it is."""
    if isinstance(value, Tensor):
        return value[i:i + 1] if value.dim() and value.shape[0] > 1 else value
    if isinstance(value, tuple):
        return tuple(_take(v, i) for v in value)
    if isinstance(value, dict):
        return {k: _take(v, i) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _take(getattr(value, f.name), i)
                                             for f in dataclasses.fields(value) if f.init
                                             and isinstance(getattr(value, f.name), (Tensor, tuple, dict))})
    return value


def as_spec(spec: Spec | Tensor | None, batch: int) -> Spec | None:
    """Accept a Spec, a bare C matrix (m, n) or (B, m, n), or None."""
    if spec is None or isinstance(spec, Spec):
        return None if spec is None else (spec.expand(batch) if spec.C.shape[0] == 1 and batch > 1 else spec)
    C = torch.as_tensor(spec)
    if C.dim() == 2:
        C = C.unsqueeze(0).expand(batch, -1, -1)
    m = C.shape[1]
    return Spec(C.float(), torch.zeros(batch, m), torch.arange(m))


class Domain(ABC):
    """An abstract domain bound to one network. Subclasses set `name`."""

    name: ClassVar[str] = ""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.check(net)

    def check(self, net: Network) -> None:
        """Raise DomainError for the first op this domain cannot handle."""

    def float64(self) -> Domain:
        """The same domain, with the same options, computing in float64 on a float64 copy
        of the network (for re-checking proofs whose float32 margin is near 0)."""
        return type(self)(self.net.to(torch.float64))

    def rebind(self, net: Network) -> Domain:
        """The same domain (type and options) bound to another network."""
        variant = copy.copy(self)
        variant.net = net
        variant.check(net)
        return variant

    def last_layer_lower(self, result: BoundResult, region: Box, C: Tensor, d: Tensor) -> Tensor | None:
        """Lower bounds (R,) of C z + d over `region` (batch 1), z (n,) the flat input of the
        network's output layer, C (R, n), d (R,), from what `result` kept (this domain's
        `bound(region, ..., keep=True)`, batch 1), without re-running the network.

        Sound whatever the output layer is, because nothing a domain keeps up to the output's
        input depends on it: callers that vary only the last layer (proof features pruning it)
        re-bound many variants at once this way. None: this domain cannot; bound afresh.
        """
        return None

    @abstractmethod
    def bound(self, region: Box, spec: Spec | Tensor | None = None, keep: bool = False) -> BoundResult:
        """Bound the network over every region of the batch (and C y + d if spec)."""

    def finish(self, lower: Tensor, upper: Tensor, spec: Spec | None, spec_lower: Tensor | None,
               spec_upper: Tensor | None = None, bounds=None, states=None) -> BoundResult:
        """Assemble a BoundResult, deciding `proven` from the spec's clauses."""
        proven = margin = None
        if spec is not None and spec_lower is not None:
            proven = spec.proven(spec_lower)
            margin = spec.spec_margin(spec_lower)
        return BoundResult(lower, upper, spec_lower, spec_upper, proven, bounds or {}, states or {},
                           self.name, margin)


def checked_proofs(domain: Domain, region: Box, spec: Spec,
                   near_zero: float | None = None) -> tuple[BoundResult, Tensor, Tensor]:
    """`domain.bound(region, spec)` with its near-zero proofs re-checked (`recheck_near_zero`):
    (result, proven (B,), margin (B,))."""
    result = domain.bound(region, spec)
    return (result, *recheck_near_zero(domain, region, spec, result.proven, result.spec_margin, near_zero))


def recheck_near_zero(domain: Domain, region: Box, spec: Spec, proven: Tensor, margin: Tensor,
                      near_zero: float | None = None) -> tuple[Tensor, Tensor]:
    """(proven, margin) (B,) of `domain` on the regions, new tensors, with the proofs whose
    float32 margin lies in (0, near_zero] (default NEAR_ZERO) bounded again by
    `domain.float64()`: they stay proven only if that margin is > 0 too, and report it."""
    proven, margin = proven.clone(), margin.clone()
    near = (proven & (margin <= (NEAR_ZERO if near_zero is None else near_zero))).nonzero().flatten()
    if len(near):
        again = domain.float64().bound(Box(region.lower[near].double(), region.upper[near].double()), spec[near])
        proven[near] = again.proven
        margin[near] = again.spec_margin.to(margin.dtype)
    return proven, margin


def spec_bounds_from_box(spec: Spec, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Interval bounds of C y + d given y in [lower, upper] (shapes (B, n))."""
    lower = lower.reshape(lower.shape[0], -1)
    upper = upper.reshape(upper.shape[0], -1)
    C = spec.C.to(lower.dtype)
    pos, neg = C.clamp(min=0), C.clamp(max=0)
    lo = (pos @ lower.unsqueeze(-1) + neg @ upper.unsqueeze(-1)).squeeze(-1) + spec.d
    hi = (pos @ upper.unsqueeze(-1) + neg @ lower.unsqueeze(-1)).squeeze(-1) + spec.d
    return lo, hi
