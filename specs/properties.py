"""Output properties: conjunctions of disjunctions of linear inequalities over network outputs.

A `Spec` states, for outputs y (B, n_out),

    safe(y)  <=>  AND_k  OR_{i in clause k}  (C[i] . y + d[i] > 0)

with the rows of C grouped into clauses by `clause`. A counterexample is an output
for which some clause has every row <= 0. Two scalar summaries drive verification:

- `margin(y) = min_k max_{i in k} (C y + d)_i`: > 0 iff y is safe (exact).
- `spec_margin(lower) = min_k max_{i in k} lower_i` for lower bounds `lower` on C y + d
  over a region: > 0 proves the property on that region (sound, not complete).

`robustness` builds the usual classification property, `from_unsafe` converts the
VNN-LIB form (a disjunction of unsafe polytopes A_k y <= b_k) into a Spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from specs.regions import _batch_index, _f32_down


class SpecError(ValueError):
    """A malformed Spec: inconsistent shapes, bad clause ids, labels out of range."""


@dataclass(frozen=True, eq=False)
class Spec:
    """Safety property AND over clauses of (OR over the clause's rows of C y + d > 0).

    C and d are stored as float32; a wider d is rounded down, so `proven` stays sound.
    """

    C: Tensor  # (B, m, n_out) float32
    d: Tensor  # (B, m) float32
    clause: Tensor  # (m,) long, clause id of each row, every id in 0..K-1 used
    n_clauses: int = field(init=False)  # K

    def __post_init__(self) -> None:
        C, d, clause = torch.as_tensor(self.C), torch.as_tensor(self.d), torch.as_tensor(self.clause)
        if C.ndim != 3:
            raise SpecError(f"Spec.C must be (B, m, n_out), got shape {tuple(C.shape)}")
        if d.shape != C.shape[:2]:
            raise SpecError(f"Spec.d must be (B, m) = {tuple(C.shape[:2])}, got {tuple(d.shape)}")
        if clause.shape != C.shape[1:2]:
            raise SpecError(f"Spec.clause must be (m,) = ({C.shape[1]},), got {tuple(clause.shape)}")
        if clause.dtype != torch.long:
            raise SpecError(f"Spec.clause must be long, got {clause.dtype}")
        n_clauses = int(clause.max()) + 1 if clause.numel() else 0
        if clause.numel() and (clause.min() < 0 or torch.bincount(clause, minlength=n_clauses).eq(0).any()):
            raise SpecError("Spec.clause ids must be 0..K-1 with every id used")
        if torch.isnan(C).any() or torch.isnan(d).any():
            raise SpecError("Spec.C / Spec.d contain NaN")
        object.__setattr__(self, "C", C.to(torch.float32))
        object.__setattr__(self, "d", _f32_down(d).to(C.device))
        object.__setattr__(self, "clause", clause.to(C.device))
        object.__setattr__(self, "n_clauses", n_clauses)

    @property
    def batch_size(self) -> int:
        """B."""
        return self.C.shape[0]

    @property
    def n_rows(self) -> int:
        """m, the number of rows over all clauses."""
        return self.C.shape[1]

    @property
    def n_outputs(self) -> int:
        """n_out, the width of the outputs the rows read."""
        return self.C.shape[2]

    def values(self, y: Tensor) -> Tensor:
        """C y + d: y (B, *S, n_out) -> (B, *S, m), where *S are optional sample dimensions."""
        if y.ndim < 2 or y.shape[0] != self.batch_size or y.shape[-1] != self.n_outputs:
            raise SpecError(f"Spec expects y of shape ({self.batch_size}, ..., {self.n_outputs}), got {tuple(y.shape)}")
        extra = y.ndim - 2
        v = torch.einsum("bmo,b...o->b...m", self.C, y.to(self.C.dtype))
        return v + self.d.reshape(self.batch_size, *([1] * extra), self.n_rows)

    def _reduce(self, rows: Tensor) -> Tensor:
        """min over clauses of max over each clause's rows: (B, *S, m) -> (B, *S)."""
        if self.n_clauses == 0:
            return torch.full(rows.shape[:-1], torch.inf, dtype=rows.dtype, device=rows.device)
        per_clause = torch.full((*rows.shape[:-1], self.n_clauses), -torch.inf, dtype=rows.dtype, device=rows.device)
        per_clause = per_clause.scatter_reduce(-1, self.clause.expand_as(rows), rows, "amax", include_self=False)
        return per_clause.amin(dim=-1)

    def margin(self, y: Tensor) -> Tensor:
        """min_k max_{i in k} (C y + d)_i, shape (B, *S): > 0 iff the property holds at y."""
        return self._reduce(self.values(y))

    def holds(self, y: Tensor) -> Tensor:
        """Whether y satisfies the property (margin > 0), bool (B, *S)."""
        return self.margin(y) > 0

    def spec_margin(self, lower: Tensor) -> Tensor:
        """Spec lower bound from row lower bounds `lower` (B, m) on C y + d: min_k max_{i in k} lower_i."""
        if lower.shape[0] != self.batch_size or lower.shape[-1] != self.n_rows:
            raise SpecError(f"Spec expects lower of shape ({self.batch_size}, {self.n_rows}), got {tuple(lower.shape)}")
        return self._reduce(lower)

    def proven(self, lower: Tensor) -> Tensor:
        """Whether every clause has a row with lower bound > 0, bool (B,).

        Sound: if lower <= C y + d for every reachable y, then proven implies holds(y) for all of them.
        A NaN bound never proves anything.
        """
        return self.spec_margin(lower) > 0

    def __getitem__(self, idx: int | slice | Tensor) -> Spec:
        """Select along the batch dimension; an integer gives a Spec with batch size 1."""
        return Spec(_batch_index(self.C, idx), _batch_index(self.d, idx), self.clause)

    def expand(self, batch_size: int) -> Spec:
        """The same property repeated batch_size times (requires batch size 1 or already batch_size)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise SpecError(f"cannot expand a Spec of batch size {self.batch_size} to {batch_size}")
        return Spec(self.C.expand(batch_size, -1, -1), self.d.expand(batch_size, -1), self.clause)


def robustness(labels: Tensor, n_classes: int) -> Spec:
    """Classification robustness: y_label - y_j > 0 for every j != label, each row its own clause.

    labels: (B,) long. The result has m = n_classes - 1 rows (in increasing order of j) and
    is proven iff every row's lower bound is positive.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.ndim != 1:
        raise SpecError(f"labels must be (B,), got shape {tuple(labels.shape)}")
    if n_classes < 2:
        raise SpecError(f"robustness needs n_classes >= 2, got {n_classes}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise SpecError(f"labels must lie in 0..{n_classes - 1}")
    m = n_classes - 1
    k = torch.arange(m, device=labels.device).expand(labels.shape[0], m)
    others = k + (k >= labels[:, None]).long()  # (B, m): every class except the label
    eye = torch.eye(n_classes, device=labels.device)
    C = eye[labels][:, None, :] - eye[others]
    d = torch.zeros(labels.shape[0], m, device=labels.device)
    return Spec(C, d, torch.arange(m, device=labels.device))


def from_unsafe(A_list: Sequence[Tensor], b_list: Sequence[Tensor]) -> Spec:
    """Spec from a VNN-LIB unsafe set OR_k (A_k y <= b_k).

    A_k: (r_k, n_out) or (B, r_k, n_out), b_k: (r_k,) or (B, r_k). Safety is the negation
    AND_k OR_i (A_k,i y - b_k,i > 0): clause k has rows C = A_k, d = -b_k. Points with
    A_k y == b_k are unsafe, matching holds = margin > 0. An unsafe disjunct with no rows
    (r_k = 0: every output is unsafe) becomes the never-positive row 0 . y + 0.
    """
    if len(A_list) != len(b_list):
        raise SpecError(f"from_unsafe got {len(A_list)} A's and {len(b_list)} b's")
    if not A_list:
        raise SpecError("from_unsafe needs at least one unsafe disjunct")
    As = [torch.as_tensor(A) for A in A_list]
    bs = [torch.as_tensor(b) for b in b_list]
    As = [A.unsqueeze(0) if A.ndim == 2 else A for A in As]
    bs = [b.unsqueeze(0) if b.ndim == 1 else b for b in bs]
    batch = max(A.shape[0] for A in As)
    n_out = As[0].shape[-1]
    Cs, ds, ids = [], [], []
    for k, (A, b) in enumerate(zip(As, bs)):
        if A.ndim != 3 or A.shape[-1] != n_out or b.shape != A.shape[:2]:
            raise SpecError(f"unsafe disjunct {k}: A {tuple(A.shape)} and b {tuple(b.shape)} do not fit n_out={n_out}")
        if A.shape[1] == 0:
            A, b = torch.zeros(A.shape[0], 1, n_out, dtype=A.dtype), torch.zeros(b.shape[0], 1, dtype=b.dtype)
        Cs.append(A.expand(batch, -1, -1))
        ds.append((-b).expand(batch, -1))
        ids.append(torch.full((A.shape[1],), k, dtype=torch.long))
    return Spec(torch.cat(Cs, dim=1), torch.cat(ds, dim=1), torch.cat(ids))
