"""Learned conflicts for ReLU-splitting BaB: small sets of split decisions that are
proven on their own, so every later subdomain containing one is proven without a bound.

A conflict is a phase vector c in {-1, 0, +1}^N (the ReLU-input axis of
`profit.bab.relu_split`); subdomain s contains it iff s_j = c_j wherever c_j != 0,
i.e. c . s == |c|_1 (entries are in {-1, 0, 1}, so one float32 matmul decides it exactly
for N <= 2^24). The subdomain of c is the region's box with only c's phase constraints
(the root's pre-activation bounds clamped by c), whose feasible set holds that of every
subdomain containing c; a bound proving c's subdomain proves all of them, whatever
bounds those carry (fixed or refined).

Where candidates come from: a child proven by beta-CROWN with fixed root bounds
depends on a split j only through its multiplier beta_j and the relaxation of its ReLU
(exact, identity or 0, when split). Dropping j alone (`drop_each`: its slope set to the
phase's, 1 or 0, its beta to 0; one pass without optimisation) measures the margin that
split carries; the candidates (`budgeted`) drop the cheapest splits while the summed
loss stays within a share of the margin. A coefficient argument (the ReLU output's
coefficient A_j >= 0 with beta_j = 0 makes the drop free) would be cheaper, but the
branching rule splits exactly the neurons with A_j < 0, so it frees almost nothing.
Candidates are only hints: each is bounded on its own (`relu_split._Clause.learn`) and
stored only when proven.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Conflicts:
    """The conflicts learned by one clause's BaB, at most `capacity`, as a (K, N) int8
    matrix. Over capacity, the smallest (most general) are kept, the newest among equals.
    A stored conflict never contains another (`add` removes the superset)."""

    def __init__(self, n: int, capacity: int) -> None:
        self.capacity = capacity
        self.clauses = torch.zeros(0, n, dtype=torch.int8)
        self.age = torch.zeros(0, dtype=torch.long)
        self.learned = 0  # conflicts ever accepted
        self.hits = 0  # subdomains pruned
        self._clock = 0
        self._refresh()

    def __len__(self) -> int:
        return self.clauses.shape[0]

    def _refresh(self) -> None:
        """Cache the matching operands: the columns any conflict constrains, as float32."""
        self.support = (self.clauses != 0).any(0).nonzero().flatten()
        self.dense = self.clauses[:, self.support].float()
        self.size = (self.clauses != 0).sum(1).float()

    def matches(self, splits: Tensor) -> Tensor:
        """Whether each subdomain (splits (B, N) int8) contains a stored conflict, (B,) bool."""
        if not len(self):
            return torch.zeros(splits.shape[0], dtype=torch.bool)
        dots = splits[:, self.support].float() @ self.dense.T  # (B, K)
        return (dots == self.size).any(1)

    def prune(self, splits: Tensor) -> Tensor:
        """Indices of the subdomains (splits (B, N)) containing no conflict; counts the others as hits."""
        hit = self.matches(splits)
        self.hits += int(hit.sum())
        return (~hit).nonzero().flatten()

    def add(self, new: Tensor) -> int:
        """Store proven conflicts new (k, N) int8, dropping duplicates and supersets (of new
        ones or old ones); returns how many of `new` were kept."""
        if not new.shape[0]:
            return 0
        everything = torch.cat([self.clauses, new])
        age = torch.cat([self.age, self._clock + torch.arange(new.shape[0])])
        self._clock += new.shape[0]
        size = (everything != 0).sum(1)
        new_size = (new != 0).sum(1)
        contains = (everything.float() @ new.float().T) == new_size.float()  # (K + k, k): row i contains new j
        index = torch.arange(everything.shape[0]).unsqueeze(1)
        new_index = len(self) + torch.arange(new.shape[0]).unsqueeze(0)
        redundant = contains & ((new_size.unsqueeze(0) < size.unsqueeze(1))
                                | ((new_size.unsqueeze(0) == size.unsqueeze(1)) & (new_index < index)))
        keep = (~redundant.any(1)).nonzero().flatten()
        if len(keep) > self.capacity:
            key = size[keep] * (1 << 40) - age[keep]  # smallest first, newest among equals
            keep = keep[key.argsort(stable=True)[:self.capacity]].sort().values
        kept_new = int((keep >= len(self)).sum())
        self.clauses, self.age = everything[keep], age[keep]
        self.learned += kept_new
        self._refresh()
        return kept_new


def drop_each(splits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every split removed alone: (variants (V, N), owner (V,) the row of `splits` (P, N)
    each comes from, dropped (V,) the neuron it frees), V = number of splits, row-major."""
    owner, dropped = (splits != 0).nonzero(as_tuple=True)
    variants = splits[owner].clone()
    variants[torch.arange(len(owner)), dropped] = 0
    return variants, owner, dropped


def budgeted(splits: Tensor, loss: Tensor, budget: Tensor) -> Tensor:
    """Candidates (P, N): `splits` (P, N) without the splits of smallest measured `loss`
    (P, N; +inf where not split; the margin lost when that split alone is dropped), as
    many as fit, in increasing order, within `budget` (P,) of summed (non-negative) loss."""
    order = loss.argsort(dim=1, stable=True)
    spent = loss.gather(1, order).clamp(min=0).cumsum(1)
    drop = torch.zeros_like(splits, dtype=torch.bool).scatter(1, order, spent <= budget.unsqueeze(1))
    return torch.where(drop, torch.zeros_like(splits), splits)


def phase_slopes(alpha: Tensor, splits: Tensor, kept: Tensor) -> Tensor:
    """Warm-start slopes (B, m, N) for a candidate: alpha, with every split dropped from
    `splits` (B, N) by `kept` (B, N) set to its phase's exact lower slope (1 active, 0 inactive)."""
    dropped = ((splits != 0) & (kept == 0)).unsqueeze(1)
    phase = (splits > 0).to(alpha.dtype).unsqueeze(1).expand_as(alpha)
    return torch.where(dropped, phase, alpha)
