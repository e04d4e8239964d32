"""The fixed vocabulary of verification outcomes.

Every method in profit answers with a `Verdict`. An incomplete method may answer
UNKNOWN on a safe instance, never VERIFIED on an unsafe one; FALSIFIED is only
answered with a counterexample that onnxruntime has re-executed and confirmed.
"""

from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    """What a verifier concluded about one image or one property."""

    VERIFIED = "verified"  # proven: the property holds on the whole region
    FALSIFIED = "falsified"  # a confirmed counterexample inside the region
    UNKNOWN = "unknown"  # every method ran to its end without deciding
    TIMEOUT = "timeout"  # the time budget ran out before a decision
    MISCLASSIFIED = "misclassified"  # the unperturbed input is already misclassified: nothing to verify

    def __str__(self) -> str:
        return self.value
