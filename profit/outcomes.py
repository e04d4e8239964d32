"""The fixed vocabulary of verification outcomes.

Every method in profit answers with a `Verdict`. An incomplete method may answer
UNKNOWN on a safe instance, never VERIFIED on an unsafe one; FALSIFIED is only
answered with a counterexample that onnxruntime has re-executed and confirmed.

Complete verification (`profit.bab.check`) answers with an `Outcome`: `Proven`,
`Counterexample` (the point and its onnxruntime outputs) or `Unknown` (with a
reason), each carrying the `BabStats` of the search and its `verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from torch import Tensor


class Verdict(str, Enum):
    """What a verifier concluded about one image or one property."""

    VERIFIED = "verified"  # proven: the property holds on the whole region
    FALSIFIED = "falsified"  # a confirmed counterexample inside the region
    UNKNOWN = "unknown"  # every method ran to its end without deciding
    TIMEOUT = "timeout"  # the time budget ran out before a decision
    MISCLASSIFIED = "misclassified"  # the unperturbed input is already misclassified: nothing to verify

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BabStats:
    """How much work a `check` did."""

    mode: str = ""  # "attack", "input" or "relu": what decided (or ran last)
    domains: int = 0  # subdomains bounded
    batches: int = 0  # bound calls
    max_live: int = 0  # most live subdomains at once
    seconds: float = 0.0
    conflicts: int = 0  # conflicts learned (ReLU splitting with BabOptions.conflicts)
    pruned: int = 0  # subdomains pruned by them, never bounded


@dataclass(frozen=True)
class Proven:
    """The property holds on the whole region."""

    stats: BabStats = field(default=BabStats(), compare=False)

    @property
    def verdict(self) -> Verdict:
        return Verdict.VERIFIED


@dataclass(frozen=True, eq=False)
class Counterexample:
    """A point of the region whose outputs (onnxruntime's, float64) violate the spec."""

    x: Tensor  # (1, *region shape)
    y: Tensor  # (1, n_outputs)
    stats: BabStats = field(default=BabStats(), compare=False)

    @property
    def verdict(self) -> Verdict:
        return Verdict.FALSIFIED


@dataclass(frozen=True)
class Unknown:
    """Undecided: reason "timeout", "memory: N live subdomains", "unsupported: ..." or
    "precision: ..." (a subdomain too small to split further, still undecided)."""

    reason: str
    stats: BabStats = field(default=BabStats(), compare=False)

    @property
    def verdict(self) -> Verdict:
        return Verdict.TIMEOUT if self.reason == "timeout" else Verdict.UNKNOWN


Outcome = Proven | Counterexample | Unknown
