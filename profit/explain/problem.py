"""An explanation problem and its queries: does every completion of a partial patch keep the class?

An explanation problem (`Problem`) is a network f, an instance v, a patch P of free
pixels (all other pixels fixed to v), a per-pixel domain (`PixelDomain`: binary,
K levels, the box [0, 1] or v +- eps) and a target class c. A `Query` fixes some patch
pixels to values and leaves the others free over their domain; it asks

    does every completion x satisfy  keeps_c(x)        (negate=False)
    does every completion x satisfy  not keeps_c(x)    (negate=True)?

Ties and margin (`Problem.keeps`): class j *beats* c when y_j - y_c > margin, or
y_j - y_c == margin and j < c (the lowest index wins a tie); keeps_c(x) means no class
beats c. With margin 0 this is argmax(y) == c with ties to the lowest index; a
counterexample needs another class to win by more than the margin.

`Problem.model` is the network as a function of the patch values alone when the network
reads its input through Flatten + Linear (the fixed pixels folded into the first layer's
bias), which makes every oracle stage cheaper. Oracles (`profit.explain.oracle`) decide
queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from networks.ir import Input, Linear, Network, Node, Reshape
from profit.attacks import onnx_outputs
from profit.errors import ProfitError
from profit.outcomes import Verdict
from specs.properties import Spec
from specs.regions import Box

if TYPE_CHECKING:
    import onnxruntime as ort

REL_SLACK = 1e-9  # a bound proves a row only if it exceeds 1e-9 * (1 + |bound|)


@dataclass(frozen=True)
class PixelDomain:
    """The values one free patch pixel ranges over.

    kind "levels": K values {0, 1/(K-1), ..., 1} ("binary" is K = 2); "box": the
    interval [0, 1]; "linf": [v - eps, v + eps] clipped to [0, 1] around the
    instance value v. Values and interval ends are rounded to float32 (outward for
    intervals), the precision the ONNX network computes in.
    """

    kind: str = "levels"
    levels: int = 2
    eps: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("levels", "box", "linf"):
            raise ProfitError(f"unknown pixel domain kind '{self.kind}' (levels, box or linf)")
        if self.kind == "levels" and not 2 <= self.levels <= 256:
            raise ProfitError(f"levels:K needs 2 <= K <= 256, got {self.levels}")
        if self.kind == "linf" and not (0 < self.eps <= 1):
            raise ProfitError(f"linf:EPS needs 0 < EPS <= 1, got {self.eps}")

    @classmethod
    def parse(cls, text: str | PixelDomain) -> PixelDomain:
        """'binary', 'levels:K', 'box' or 'linf:EPS'."""
        if isinstance(text, PixelDomain):
            return text
        name, _, arg = str(text).strip().lower().partition(":")
        try:
            if name == "binary" and not arg:
                return cls("levels", 2)
            if name == "levels" and arg:
                return cls("levels", int(arg))
            if name == "box" and not arg:
                return cls("box")
            if name == "linf" and arg:
                return cls("linf", eps=float(arg))
        except ValueError:
            pass
        raise ProfitError(f"bad pixel domain '{text}' (binary, levels:K, box or linf:EPS)")

    def __str__(self) -> str:
        if self.kind == "levels":
            return "binary" if self.levels == 2 else f"levels:{self.levels}"
        return "box" if self.kind == "box" else f"linf:{self.eps:g}"

    @property
    def discrete(self) -> bool:
        return self.kind == "levels"

    @property
    def values(self) -> np.ndarray:
        """(K,) the values of a discrete domain, float32-representable, ascending."""
        if not self.discrete:
            raise ProfitError(f"the {self} domain is continuous: it has no list of values")
        grid = np.arange(self.levels, dtype=np.float64) / (self.levels - 1)
        return grid.astype(np.float32).astype(np.float64)

    def bounds(self, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) per pixel: the hull of the domain (for linf, around `center`)."""
        if self.kind != "linf":
            lo = float(self.values[0]) if self.discrete else 0.0
            hi = float(self.values[-1]) if self.discrete else 1.0
            return np.full(center.shape, lo), np.full(center.shape, hi)
        lo = torch.from_numpy(np.clip(center - self.eps, 0.0, 1.0))
        hi = torch.from_numpy(np.clip(center + self.eps, 0.0, 1.0))
        down = lo.float()
        down = torch.where(down.double() > lo, torch.nextafter(down, torch.tensor(-1.0)), down)
        up = hi.float()
        up = torch.where(up.double() < hi, torch.nextafter(up, torch.tensor(2.0)), up)
        return down.double().numpy(), up.double().numpy()

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """The nearest domain value of each entry (discrete domains; others unchanged)."""
        if not self.discrete:
            return np.asarray(x, dtype=np.float64)
        values = self.values
        index = np.abs(np.asarray(x, dtype=np.float64)[..., None] - values).argmin(-1)
        return values[index]


# ---------------------------------------------------------------------------- problems

@dataclass(frozen=True)
class Query:
    """Does every completion of `fixed` satisfy the target (keeps_c; its negation if `negate`)?"""

    fixed: tuple[float | None, ...]  # per patch position: the fixed value, or None (free)
    negate: bool = False

    @property
    def array(self) -> np.ndarray:
        """(n,) fixed values, NaN where free."""
        return np.array([np.nan if v is None else v for v in self.fixed], dtype=np.float64)


@dataclass(frozen=True)
class Answer:
    """An oracle's answer; `witness` (n,) patch values of a checked completion violating the target."""

    verdict: Verdict
    witness: np.ndarray | None = None
    stage: str = ""


@dataclass(frozen=True, eq=False)
class Problem:
    """Network, instance, patch, pixel domain, class c and margin: what the oracle decides about.

    instance: (n_in,) float64, the flat input (float32-representable); patch: flat
    indices into it (positions 0..n-1 of a query refer to patch[0..n-1]); onnx: the
    ONNX file (or session) witnesses are re-run on; None skips that check (only for
    networks that have no file, e.g. built in memory).
    """

    memo_limit: ClassVar[int] = 1_000_000  # checked points remembered before the memo is cleared
    net: Network
    instance: np.ndarray
    patch: tuple[int, ...]
    domain: PixelDomain
    target: int
    margin: float = 0.0
    onnx: str | Path | ort.InferenceSession | None = None

    def __post_init__(self) -> None:
        n_in = int(np.prod(self.net.input_shape))
        if self.instance.shape != (n_in,):
            raise ProfitError(f"instance must be flat ({n_in},), got {self.instance.shape}")
        if not self.patch:
            raise ProfitError("the patch is empty: give at least one pixel")
        if len(set(self.patch)) != len(self.patch):
            raise ProfitError("the patch lists a pixel twice")
        bad = [p for p in self.patch if not 0 <= p < n_in]
        if bad:
            raise ProfitError(f"patch pixel {bad[0]} is out of range 0..{n_in - 1}")
        if not 0 <= self.target < self.net.n_outputs:
            raise ProfitError(f"class {self.target} is out of range 0..{self.net.n_outputs - 1}")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise ProfitError(f"margin must be finite and >= 0, got {self.margin}")

    # ---- shapes and regions
    @property
    def n(self) -> int:
        """Number of patch pixels."""
        return len(self.patch)

    @property
    def n_classes(self) -> int:
        return self.net.n_outputs

    @cached_property
    def _folded(self) -> Network | None:
        return _fold(self.net, self.instance, self.patch_index)

    @property
    def folded(self) -> bool:
        """Whether `model` takes the patch values alone."""
        return self._folded is not None

    @cached_property
    def model(self) -> Network:
        """The float64 network the oracle computes with: a function of the patch values alone
        (input (n,)) when the network starts with Flatten/Reshape + Linear, because
        W x + b = W_P x_P + (W_O v_O + b) with the other pixels O fixed; else the whole network."""
        return (self._folded if self._folded is not None else self.net).to(torch.float64)

    @cached_property
    def model32(self) -> Network:
        """`model` in float32, for attacks (witnesses are re-checked in float64 and onnxruntime)."""
        return self.model.to(torch.float32)

    def model_inputs(self, values: np.ndarray) -> Tensor:
        """Inputs of `model` (N, *model.input_shape), float64, for patch values (N, n)."""
        if self.folded:
            return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
        return torch.from_numpy(self.inputs(values)).reshape(-1, *self.net.input_shape)

    def model_mask(self, free: np.ndarray) -> Tensor:
        """Bool (N, *model.input_shape): the model inputs that are free patch pixels (free (N, n))."""
        if self.folded:
            return torch.from_numpy(free.copy())
        mask = np.zeros((free.shape[0], self.instance.size), dtype=bool)
        mask[:, self.patch_index] = free
        return torch.from_numpy(mask).reshape(-1, *self.net.input_shape)

    def model_box(self, lo: np.ndarray, hi: np.ndarray) -> Box:
        """The Box of model inputs for patch bounds (Q, n)."""
        return Box(self.model_inputs(lo), self.model_inputs(hi))

    def patch_coefficients(self, A: Tensor, b: Tensor, negate: bool) -> tuple[np.ndarray, np.ndarray]:
        """Linear bounds over model inputs, A (Q, m, *in) and b (Q, m), as bounds of the target
        rows over the patch values: (Q, m, n) coefficients and (Q, m) constants (d added,
        fixed pixels folded in)."""
        Q, m = b.shape
        A = A.reshape(Q, m, -1).numpy()
        b = b.numpy() + self.rows(negate)[1]
        if self.folded:
            return A, b
        other = np.ones(self.instance.size, dtype=bool)
        other[self.patch_index] = False
        return A[:, :, self.patch_index], b + A[:, :, other] @ self.instance[other]

    @cached_property
    def patch_index(self) -> np.ndarray:
        return np.asarray(self.patch, dtype=np.int64)

    @cached_property
    def center(self) -> np.ndarray:
        """(n,) the instance's patch values."""
        return self.instance[self.patch_index]

    @cached_property
    def hull(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) (n,): the convex hull of each patch pixel's domain."""
        return self.domain.bounds(self.center)

    def bounds(self, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hull bounds (..., n) of queries given as fixed-value arrays (NaN = free)."""
        lo, hi = self.hull
        free = np.isnan(fixed)
        return np.where(free, lo, fixed), np.where(free, hi, fixed)

    def inputs(self, values: np.ndarray) -> np.ndarray:
        """Full flat inputs (N, n_in) for patch values (N, n)."""
        x = np.repeat(self.instance[None, :], values.shape[0], axis=0)
        x[:, self.patch_index] = values
        return x

    def contains(self, values: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """Whether patch values (N, n) are completions of the query `fixed` (n,): bool (N,)."""
        lo, hi = self.bounds(fixed)
        inside = (values >= lo) & (values <= hi)
        if self.domain.discrete:
            inside &= np.isin(values, self.domain.values)
        return inside.all(axis=1)

    # ---- the predicate
    def keeps(self, y: np.ndarray | Tensor) -> np.ndarray:
        """keeps_c(y) for outputs (N, n_classes): no class beats c (see the module docstring)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1, self.n_classes)
        diff = y - y[:, self.target:self.target + 1]
        lower = np.arange(self.n_classes) < self.target
        beats = (diff > self.margin) | ((diff == self.margin) & lower)
        beats[:, self.target] = False
        return ~beats.any(axis=1)

    def logits(self, values: np.ndarray) -> np.ndarray:
        """float64 IR outputs (N, n_classes) for patch values (N, n)."""
        if values.shape[0] == 0:
            return np.zeros((0, self.n_classes))
        with torch.no_grad():
            return self.model.logits(self.model_inputs(values)).numpy()

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        """keeps_c under the float64 forward pass, bool (N,) for patch values (N, n)."""
        return self.keeps(self.logits(values))

    def runtime_keeps(self, values: np.ndarray) -> np.ndarray | None:
        """keeps_c under onnxruntime, bool (N,), or None without an ONNX file."""
        if self.onnx is None:
            return None
        x = torch.from_numpy(self.inputs(values)).float().reshape(-1, *self.net.input_shape)
        return self.keeps(onnx_outputs(self.onnx, self.net, x).numpy())

    def confirm(self, values: np.ndarray, fixed: np.ndarray, negate: bool) -> np.ndarray:
        """Which patch values (N, n) are checked witnesses against the query: bool (N,).

        A witness is a completion of `fixed` whose float64 forward pass and whose
        onnxruntime outputs both violate the target (keeps_c, or not keeps_c if negate).
        Both verdicts are remembered per point (a point is checked once).
        """
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        ok = self.contains(values, fixed)
        memo = self._checked
        if len(memo) > self.memo_limit:  # before looking up: a point seen earlier may be dropped
            memo.clear()
        keys = [v.tobytes() for v in values]
        new = [k for k, (key, inside) in enumerate(zip(keys, ok)) if inside and key not in memo]
        if new:
            f64 = self.evaluate(values[new])
            runtime = self.runtime_keeps(values[new])
            for j, k in enumerate(new):
                memo[keys[k]] = (bool(f64[j]), None if runtime is None else bool(runtime[j]))
        for k, (key, inside) in enumerate(zip(keys, ok)):
            if inside:
                f64, runtime = memo[key]
                ok[k] = f64 == negate and runtime in (None, negate)
        return ok

    @cached_property
    def _checked(self) -> dict[bytes, tuple[bool, bool | None]]:
        """point bytes -> (keeps_c in float64, keeps_c in onnxruntime or None)."""
        return {}

    def rows(self, negate: bool) -> tuple[np.ndarray, np.ndarray, bool]:
        """Linear rows proving the target: (C (m, k), d (m,), conjunctive).

        keeps_c follows from y_c - y_j + margin > 0 for every j != c (conjunction);
        not keeps_c from y_j - y_c - margin > 0 for some j != c (one disjunction).
        """
        others = [j for j in range(self.n_classes) if j != self.target]
        eye = np.eye(self.n_classes)
        C = eye[[self.target] * len(others)] - eye[others]
        d = np.full(len(others), self.margin)
        return (-C, -d, False) if negate else (C, d, True)

    def spec(self, negate: bool, batch: int) -> Spec:
        """The rows of `rows(negate)` as a Spec for `batch` regions (for attacks and domains)."""
        C, d, conj = self.rows(negate)
        m = C.shape[0]
        clause = torch.arange(m) if conj else torch.zeros(m, dtype=torch.long)
        return Spec(torch.from_numpy(C).float().expand(batch, m, -1), torch.from_numpy(d).expand(batch, m),
                    clause)

    def proven(self, lower: np.ndarray, negate: bool) -> np.ndarray:
        """Which row lower bounds (Q, m) prove the target, bool (Q,) (with the rounding slack)."""
        _, _, conj = self.rows(negate)
        ok = lower > REL_SLACK * (1.0 + np.abs(lower))
        return ok.all(axis=1) if conj else ok.any(axis=1)


def _fold(net: Network, instance: np.ndarray, patch: np.ndarray) -> Network | None:
    """The network as a function of the patch values (input (n,)), if it reads its input only
    through a chain of Reshapes into one Linear layer; None otherwise."""
    by_name = {node.name: node for node in net.nodes}
    consumers = net.consumers()
    name = net.input.name
    while True:
        users = consumers[name]
        if len(users) != 1:
            return None
        node = by_name[users[0]]
        if isinstance(node.layer, Reshape) and node.inputs == (name,):
            name = node.name
            continue
        break
    if not (isinstance(node.layer, Linear) and node.inputs == (name,) and
            by_name[name].shape == (instance.size,)):
        return None
    W = node.layer.weight.double()
    other = np.ones(instance.size, dtype=bool)
    other[patch] = False
    bias = node.layer.bias.double() + W[:, torch.from_numpy(other)] @ torch.from_numpy(instance[other])
    first = Node(node.name, Linear(W[:, torch.from_numpy(patch)], bias), (net.input.name,), node.shape,
                 node.onnx_op)  # float64: the folded bias is not rounded
    start = net.nodes.index(node)
    nodes = (Node(net.input.name, Input(), (), (len(patch),)), first) + net.nodes[start + 1:]
    return Network(nodes, "", (len(patch),), True)  # no ONNX file computes this function


def completions(lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Every assignment (N, n) of the discrete `values` within [lo, hi] (n,) per pixel."""
    choices = [values[(values >= l) & (values <= h)] for l, h in zip(lo, hi)]
    if any(len(c) == 0 for c in choices):
        return np.zeros((0, len(lo)))
    points = np.array([c[0] for c in choices], dtype=np.float64)[None]
    for i, c in enumerate(choices):  # the first free pixel varies slowest
        if len(c) > 1:
            points = np.repeat(points, len(c), axis=0)
            points[:, i] = np.tile(c, len(points) // len(c))
    return points


__all__ = ["Answer", "PixelDomain", "Problem", "Query", "completions"]
