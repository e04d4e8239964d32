"""The branch-and-bound search loop's shared parts: options, the subdomain pool and the
clock/oracle of one search (`Search`), used by both splitting modes
(`profit.bab.input_split`, `profit.bab.relu_split`); `profit.bab.driver` dispatches to them.

Soundness: `Proven` only when every subdomain is proven; a float32 bound in
(0, near_zero] does not count until a float64 re-bound confirms it. `Counterexample`
only for a point inside the region whose outputs violate the spec when re-executed by
onnxruntime on the network's ONNX file (for a network without one, by the IR in
float64). Time is checked between batches, whose size adapts so one batch takes at
most `batch_seconds` (and a small share of the timeout); live subdomains are capped
(`max_domains`), giving Unknown("memory: ...") instead of exhausting memory.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from domains.crown import BetaOptions
from networks.ir import Network
from profit.attacks import AttackOptions, confirm, onnx_outputs, pgd, quick_attack
from profit.bab.milp import MilpOptions
from profit.errors import ProfitError
from profit.outcomes import BabStats, Counterexample, Proven, Unknown
from specs.properties import Spec
from specs.regions import Box

MODES = ("auto", "input", "relu")


@dataclass(frozen=True)
class BabOptions:
    """Branch-and-bound settings (defaults sized for 2 CPU cores).

    mode: "input" (split input boxes), "relu" (split ReLU phases) or "auto" (input
    splitting when at most `max_input_dims` input coordinates are free);
    input_batch / relu_batch: most subdomains bounded in one call; batch_seconds: target
    seconds per batch (batch sizes adapt to it); max_domains: cap on live subdomains;
    memory_bytes: cap on the memory of the live ReLU subdomains (alpha, beta, splits);
    input_alpha: alpha-CROWN steps per input-split batch (0: CROWN); input_branching:
    "smear" (interval gradient times width, ReluVal) or "sb" (|lA| * width);
    root: beta-CROWN steps at the root of ReLU splitting; root_bounds: alpha-CROWN steps
    for its pre-activation bounds (0: CROWN's); beta: per batch of children;
    candidates: neurons per subdomain that filtered smart branching evaluates (1: BaBSR;
    its bound pass over 2 x candidates children per subdomain dominates a batch's cost,
    and 4 solved the mnistfc sample as 8 did, in less time);
    refine: recompute the children's pre-activation bounds by CROWN (else the root's,
    with the split neurons clamped, stay fixed and only beta carries the splits);
    near_zero: float32 spec bounds in (0, near_zero] are re-checked in float64;
    conflicts: learn conflicts in ReLU splitting (`profit.bab.conflicts`: subsets of a
    proven child's splits, proven on their own) and prune every child containing one;
    max_conflicts: most conflicts kept per clause (the smallest);
    attack: the PGD run on the whole region first; seed: every random choice;
    milp: MILP-tightened pre-activation bounds and a racing exact MILP for ReLU splitting
    when the root bound leaves the spec open (`profit.bab.milp`; None: off).
    """

    mode: str = "auto"
    max_input_dims: int = 20
    input_batch: int = 4096
    relu_batch: int = 512
    batch_seconds: float = 2.0
    max_domains: int = 1_000_000
    memory_bytes: float = 2e9
    input_alpha: int = 0
    input_branching: str = "smear"
    root: BetaOptions = BetaOptions(iterations=50, alpha_lr=0.1, beta_lr=0.05)
    root_bounds: BetaOptions = BetaOptions(iterations=20, alpha_lr=0.1)
    beta: BetaOptions = BetaOptions(iterations=5, alpha_lr=0.1, beta_lr=0.05)
    candidates: int = 4
    refine: bool = False
    near_zero: float = 1e-5
    conflicts: bool = False
    max_conflicts: int = 4096
    attack: AttackOptions = AttackOptions(steps=50, restarts=10)
    seed: int = 0
    milp: MilpOptions | None = MilpOptions()

    def __post_init__(self) -> None:
        if self.input_branching not in ("smear", "sb"):
            raise ProfitError(f"bab input_branching must be 'smear' or 'sb', got '{self.input_branching}'")
        if self.mode not in MODES:
            raise ProfitError(f"bab mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if min(self.input_batch, self.relu_batch, self.max_domains, self.candidates, self.max_conflicts) < 1:
            raise ProfitError("bab batch sizes, max_domains, candidates and max_conflicts must be >= 1")
        if not self.batch_seconds > 0:
            raise ProfitError(f"bab batch_seconds must be > 0, got {self.batch_seconds}")


class Pool:
    """Live subdomains as named tensors with a leading subdomain dimension and a
    priority each; `pop(k)` takes the k lowest priorities (the most promising
    counterexample regions first). Capacity doubles as needed; a pop fills the
    holes from the tail, so it copies O(k) rows, not the whole pool."""

    def __init__(self) -> None:
        self.data: dict[str, Tensor] = {}
        self.priority = torch.empty(0)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(self, priority: Tensor, **tensors: Tensor) -> None:
        k = priority.shape[0]
        if k == 0:
            return
        need = self.size + k
        if not self.data or need > self.priority.shape[0]:
            capacity = max(need, 2 * self.priority.shape[0], 64)
            self.priority = _grow(self.priority, capacity, priority)
            self.data = {n: _grow(self.data.get(n), capacity, t) for n, t in tensors.items()}
        self.priority[self.size:need] = priority
        for n, t in tensors.items():
            self.data[n][self.size:need] = t
        self.size = need

    def pop(self, k: int) -> tuple[Tensor, dict[str, Tensor]]:
        k = min(k, self.size)
        live = self.priority[:self.size]
        idx = torch.topk(live, k, largest=False, sorted=False).indices if k < self.size \
            else torch.arange(self.size)
        out_priority = live[idx].clone()
        out = {n: t[idx].clone() for n, t in self.data.items()}
        tail_start = self.size - k
        taken = torch.zeros(self.size, dtype=torch.bool)
        taken[idx] = True
        holes = idx[idx < tail_start]
        fill = torch.arange(tail_start, self.size)[~taken[tail_start:]]
        if len(holes):
            self.priority[holes] = self.priority[fill]
            for t in self.data.values():
                t[holes] = t[fill]
        self.size = tail_start
        return out_priority, out


def _grow(old: Tensor | None, capacity: int, like: Tensor) -> Tensor:
    new = torch.empty((capacity, *like.shape[1:]), dtype=like.dtype)
    if old is not None and old.shape[0]:
        new[:old.shape[0]] = old
    return new


class Search:
    """One `check`: the clock, the options, the counterexample oracle and the stats."""

    def __init__(self, net: Network, region: Box, spec: Spec, timeout: float | None,
                 options: BabOptions, onnx_path: str | Path | None, attack_region: Box) -> None:
        self.start = time.perf_counter()
        self.deadline = math.inf if timeout is None else self.start + timeout
        self.timeout = timeout
        self.net, self.region, self.spec, self.options = net, region, spec, options
        self.attack_region = attack_region
        onnx = Path(onnx_path) if onnx_path is not None else Path(net.source) if net.source else None
        self.onnx = onnx if onnx is not None and onnx.is_file() else None
        self._net64: Network | None = None
        self.domains = self.batches = self.max_live = 0
        self.conflicts = self.pruned = 0  # conflicts learned, children pruned by them
        self.mode = "attack"
        self._per_domain: float | None = None
        self.stage_end = math.inf  # an earlier end of the current search stage (see relu_split.search)
        self.race = None  # a profit.bab.milp.MilpRace while one runs
        self.milp_stats = None  # what MILP tightening did, if it ran

    @property
    def net64(self) -> Network:
        if self._net64 is None:
            self._net64 = self.net.to(torch.float64)
        return self._net64

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def root_deadline(self) -> float | None:
        """When root-level optimisation must stop: after a quarter of the time left."""
        return None if self.timeout is None else time.perf_counter() + 0.25 * self.remaining()

    def expired(self) -> bool:
        return time.perf_counter() >= min(self.deadline, self.stage_end)

    def race_outcome(self) -> Proven | Counterexample | None:
        """The racing MILP's answer, if it has one: Proven (every clause) or a confirmed counterexample."""
        if self.race is None:
            return None
        answer = self.race.poll(self.try_points)
        if answer is not None:
            self.mode = "milp"  # the race answered: decided_by reads bab-milp
        if answer == "proven":
            return Proven()
        return answer

    def halt(self, live: int, cap: int) -> Proven | Counterexample | Unknown | None:
        """Why a search loop with `live` open subdomains must stop: the racing MILP answered,
        over the memory cap, or work left after the deadline; None to go on (or finish, when
        live is 0)."""
        self.max_live = max(self.max_live, live)  # called after each batch's children are pushed
        decided = self.race_outcome()
        if decided is not None:
            return decided
        if live > cap:
            return Unknown(f"memory: {live} live subdomains")
        if live and self.expired():
            return Unknown("timeout")
        return None

    def stats(self) -> BabStats:
        return BabStats(self.mode, self.domains, self.batches, self.max_live, time.perf_counter() - self.start,
                        self.conflicts, self.pruned)

    def batch_size(self, cap: int) -> int:
        """Subdomains for the next batch: about `batch_seconds` of work (and at most a
        twentieth of the timeout, so the last batch cannot overshoot it by much)."""
        if self._per_domain is None:
            return min(cap, 64)
        target = self.options.batch_seconds
        if self.timeout is not None:
            target = min(target, max(0.05 * self.timeout, 0.02), max(self.remaining(), 0.02))
        return max(1, min(cap, int(target / self._per_domain)))

    def record_batch(self, n: int, seconds: float) -> None:
        """Count a bounded batch of n subdomains and update the per-subdomain cost."""
        self.domains += n
        self.batches += 1
        per = seconds / max(n, 1)
        self._per_domain = per if self._per_domain is None else 0.5 * self._per_domain + 0.5 * per

    def try_points(self, x: Tensor) -> Counterexample | None:
        """The first confirmed counterexample among candidates x (k, *shape), or None.
        Points are clamped into the attack region; only those violating the spec in
        the float32 forward pass are re-executed (lowest margin first)."""
        region = self.attack_region
        if x.shape[0] == 0:
            return None
        x = torch.minimum(torch.maximum(x.reshape(-1, *region.shape).to(region.lower.dtype), region.lower),
                          region.upper)
        with torch.no_grad():
            margin = self.spec.expand(x.shape[0]).margin(self.net.logits(x))
        bad = (margin <= 0).nonzero().flatten()
        if len(bad) == 0:
            return None
        bad = bad[margin[bad].argsort()][:16]
        ok = self._confirm(x[bad])
        if not bool(ok.any()):
            return None
        point = x[bad[int(ok.nonzero()[0])]].unsqueeze(0)
        return Counterexample(point, self._outputs(point), self.stats())

    def _confirm(self, x: Tensor) -> Tensor:
        k = x.shape[0]
        region = Box(self.attack_region.lower.expand(k, *self.attack_region.shape),
                     self.attack_region.upper.expand(k, *self.attack_region.shape))
        if self.onnx is not None:
            return confirm(self.onnx, self.net, x, region, self.spec.expand(k))
        with torch.no_grad():
            y = self.net64.logits(x.to(torch.float64))
        return region.contains(x) & (self.spec.expand(k).margin(y) <= 0)

    def _outputs(self, x: Tensor) -> Tensor:
        if self.onnx is not None:
            return onnx_outputs(self.onnx, self.net, x)
        with torch.no_grad():
            return self.net64.logits(x.to(torch.float64))

    def attack(self, region: Box, restarts: int | None = None, steps: int | None = None,
               seed_offset: int = 0) -> Counterexample | None:
        """PGD (and, for one box, the quick pass) in the boxes of `region` (B, *shape),
        each clamped into the attack region."""
        a = self.options.attack
        options = AttackOptions(steps=a.steps if steps is None else steps,
                                restarts=a.restarts if restarts is None else restarts,
                                step_size=a.step_size, seed=self.options.seed + a.seed + seed_offset)
        lo, hi = self.attack_region.lower, self.attack_region.upper
        region_lower = region.lower.reshape(-1, *lo.shape[1:])
        region_upper = region.upper.reshape(-1, *lo.shape[1:])
        inner = Box(torch.minimum(torch.maximum(region_lower, lo), hi), torch.minimum(torch.maximum(region_upper, lo), hi))
        spec = self.spec.expand(inner.batch_size)
        if seed_offset == 0 and inner.batch_size == 1:
            x, found = quick_attack(self.net, inner, spec, n_samples=64, seed=options.seed)
            if bool(found.any()):
                cex = self.try_points(x[found])
                if cex is not None:
                    return cex
        x, found = pgd(self.net, inner, spec, options)
        return self.try_points(x[found]) if bool(found.any()) else None


def focus_rows(spec: Spec, lower: Tensor) -> Tensor:
    """(B, m) weights, 1 on the rows that decide the spec margin: the best row (largest
    lower bound) of every clause not yet proven; 0 elsewhere. Branching aims at these."""
    B = lower.shape[0]
    index = spec.clause.expand(B, -1)
    best = torch.full((B, spec.n_clauses), float("-inf"), dtype=lower.dtype)
    best = best.scatter_reduce(1, index, lower, "amax", include_self=False)
    per_row = best.gather(1, index)
    return ((lower >= per_row) & (per_row <= 0)).to(lower.dtype)


