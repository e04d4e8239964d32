"""Complete verification by branch and bound (BaB), with counterexample search inside the loop.

    outcome = check(net, region, spec, timeout=60)     # region, spec: batch 1
    match outcome:
        case Proven(): ...                    # the property holds on the whole region
        case Counterexample(x, y): ...        # x inside the region, y its onnxruntime outputs
        case Unknown(reason): ...             # "timeout", "memory: N live subdomains", ...

`check_problems` decides several (box, spec) problems at once (a VNN-LIB file with
an input disjunction): the property holds iff every problem holds.

Pipeline: an attack on the whole region (quick pass, PGD with restarts), then one of
two BaB loops, chosen by the number of free input coordinates (`BabOptions.mode`):

- input splitting (`profit.bab_input`, few free inputs, e.g. ACAS Xu): subdomains are
  sub-boxes, bounded a batch at a time (forward-mode bounds, then CROWN for the boxes
  these leave open, then, for OR clauses of several rows, row weights and ReLU slopes
  optimised jointly on one combined row per clause); unproven boxes are halved along
  the coordinate with the largest smear (interval bound of |gradient| times width,
  ReluVal) and tried as counterexamples (centres, the vertices minimising the linear
  lower bound, PGD in the boxes whose centres come closest to a violation, which are
  also popped first);
- ReLU splitting (`profit.bab_relu`, image inputs): subdomains are phase assignments
  of unstable ReLUs over alpha-CROWN-optimised root bounds, bounded a batch at a time
  by beta-CROWN (slopes alpha and split multipliers beta optimised per subdomain,
  warm-started from the parent), one BaB per clause the root leaves unproven;
  branching by filtered smart branching (top BaBSR scores, each evaluated with one
  batched bound pass); subdomains with every ReLU fixed are decided exactly by an LP.

Soundness: `Proven` only when every subdomain is proven; a float32 bound in
(0, near_zero] does not count until a float64 re-bound confirms it. `Counterexample`
only for a point inside the region whose outputs violate the spec when re-executed by
onnxruntime on the network's ONNX file (for a network without one, by the IR in
float64). Time is checked between batches, whose size adapts so one batch takes at
most `batch_seconds` (and a small share of the timeout); live subdomains are capped
(`max_domains`), giving Unknown("memory: ...") instead of exhausting memory.
Deterministic for a fixed `seed` (up to where a timeout cuts the search).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from domains.base import DomainError
from domains.crown import BetaOptions
from networks.ir import Network
from profit.attack import AttackOptions, confirm, onnx_outputs, pgd, quick_attack, strictly_inside
from profit.errors import ProfitError
from profit.outcomes import Verdict
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
    attack: the PGD run on the whole region first; seed: every random choice.
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
    attack: AttackOptions = AttackOptions(steps=50, restarts=10)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.input_branching not in ("smear", "sb"):
            raise ProfitError(f"bab input_branching must be 'smear' or 'sb', got '{self.input_branching}'")
        if self.mode not in MODES:
            raise ProfitError(f"bab mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if min(self.input_batch, self.relu_batch, self.max_domains, self.candidates) < 1:
            raise ProfitError("bab batch sizes, max_domains and candidates must be >= 1")
        if not self.batch_seconds > 0:
            raise ProfitError(f"bab batch_seconds must be > 0, got {self.batch_seconds}")


@dataclass(frozen=True)
class BabStats:
    """How much work a `check` did."""

    mode: str = ""  # "attack", "input" or "relu": what decided (or ran last)
    domains: int = 0  # subdomains bounded
    batches: int = 0  # bound calls
    max_live: int = 0  # most live subdomains at once
    seconds: float = 0.0


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


class Run:
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
        self.mode = "attack"
        self._per_domain: float | None = None

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
        return time.perf_counter() >= self.deadline

    def halt(self, live: int, cap: int) -> Unknown | None:
        """Why a search loop with `live` open subdomains must stop undecided: over the memory
        cap, or work left after the deadline; None to go on (or finish, when live is 0)."""
        if live > cap:
            return Unknown(f"memory: {live} live subdomains")
        if live and self.expired():
            return Unknown("timeout")
        return None

    def stats(self) -> BabStats:
        return BabStats(self.mode, self.domains, self.batches, self.max_live, time.perf_counter() - self.start)

    def batch_size(self, cap: int) -> int:
        """Subdomains for the next batch: about `batch_seconds` of work (and at most a
        twentieth of the timeout, so the last batch cannot overshoot it by much)."""
        if self._per_domain is None:
            return min(cap, 64)
        target = self.options.batch_seconds
        if self.timeout is not None:
            target = min(target, max(0.05 * self.timeout, 0.02), max(self.remaining(), 0.02))
        return max(1, min(cap, int(target / self._per_domain)))

    def record_batch(self, n: int, seconds: float, live: int) -> None:
        self.domains += n
        self.batches += 1
        self.max_live = max(self.max_live, live)
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


def _input_coordinates(region: Box) -> int:
    return int((region.upper > region.lower).sum())


def check(net: Network, region: Box, spec: Spec, timeout: float | None = None,
          options: BabOptions = BabOptions(), onnx_path: str | Path | None = None,
          attack_region: Box | None = None, attack_first: bool = True) -> Outcome:
    """Decide whether every input of `region` (batch 1) satisfies `spec` (batch 1).

    timeout: seconds (None: no limit), respected to within a batch (see BabOptions);
    onnx_path: the file that confirms counterexamples (default net.source, if it is
    an ONNX file; otherwise the IR in float64 confirms them); attack_region: where
    counterexamples must lie (default `region`; e.g. `strictly_inside(region)` when the
    region's bounds were rounded outward from the real ones); attack_first: run the
    attack on the whole region before branching (False: it already ran).
    """
    given_shape = tuple(region.lower.shape)
    run = _run(net, region, spec, timeout, options, onnx_path, attack_region)
    outcome = _check(run, attack_first)
    if isinstance(outcome, Counterexample):
        return Counterexample(outcome.x.reshape(given_shape), outcome.y, run.stats())
    if isinstance(outcome, Unknown):
        return Unknown(outcome.reason, run.stats())
    return Proven(run.stats())


def _run(net: Network, region: Box, spec: Spec, timeout: float | None, options: BabOptions,
         onnx_path: str | Path | None, attack_region: Box | None) -> Run:
    """Check `check`'s arguments; a Run over the region reshaped to the network input."""
    if region.batch_size != 1 or spec.batch_size != 1:
        raise ProfitError(f"check decides one region and one spec (got batches {region.batch_size} "
                          f"and {spec.batch_size}); use check_problems for several")
    if timeout is not None and not timeout > 0:
        raise ProfitError(f"timeout must be > 0 seconds, got {timeout}")
    shape = tuple(net.input_shape)
    if region.lower.numel() != math.prod(shape):
        raise ProfitError(f"region of shape {tuple(region.shape)} does not fit the network input {shape}")
    if spec.n_outputs != net.n_outputs:
        raise ProfitError(f"spec reads {spec.n_outputs} outputs, the network has {net.n_outputs}")
    attack_region = region if attack_region is None else attack_region
    return Run(net, Box(region.lower.reshape(1, *shape), region.upper.reshape(1, *shape)), spec, timeout,
               options, onnx_path, Box(attack_region.lower.reshape(1, *shape), attack_region.upper.reshape(1, *shape)))


def _check(run: Run, attack_first: bool) -> Outcome:
    if attack_first:
        cex = run.attack(run.region)
        if cex is not None:
            return cex
    mode = run.options.mode
    if mode == "auto":
        mode = "input" if _input_coordinates(run.region) <= run.options.max_input_dims else "relu"
    run.mode = mode
    try:
        if mode == "input":
            from profit import bab_input
            return bab_input.search(run)
        from profit import bab_relu
        return bab_relu.search(run)
    except DomainError as exc:
        return Unknown(f"unsupported: {exc}")


def check_problems(net: Network, problems: Sequence[tuple[Box, Spec]], timeout: float | None = None,
                   options: BabOptions = BabOptions(), onnx_path: str | Path | None = None,
                   inward: bool = True) -> Outcome:
    """Decide "every problem's spec holds on its box" (e.g. the problems of one VNN-LIB file).

    A counterexample of any problem answers; Proven needs all. The attack runs on every
    problem first; then each problem gets an equal share of the time left for its BaB
    (time a problem does not use passes on). inward: counterexamples must lie one
    float32 step inside each box (`strictly_inside`), for boxes rounded outward from
    decimal bounds, as the VNN-LIB parser does.
    """
    start = time.perf_counter()
    regions = []
    for box, spec in problems:
        attack_region = None
        if inward:
            attack_region, feasible = strictly_inside(box)
            if not bool(feasible.all()):
                attack_region = Box(box.lower, box.lower)
        regions.append(attack_region)
        if len(problems) > 1:
            left = None if timeout is None else timeout - (time.perf_counter() - start)
            if left is not None and left <= 0:
                return Unknown("timeout", BabStats("attack", seconds=time.perf_counter() - start))
            run = _run(net, box, spec, left, options, onnx_path, attack_region)
            cex = run.attack(run.region)
            if cex is not None:
                return Counterexample(cex.x.reshape(box.lower.shape), cex.y,
                                      BabStats("attack", seconds=time.perf_counter() - start))
    undecided: list[Unknown] = []
    done: list[BabStats] = []

    def total() -> BabStats:
        return BabStats("/".join(sorted({s.mode for s in done})), sum(s.domains for s in done),
                        sum(s.batches for s in done), max((s.max_live for s in done), default=0),
                        time.perf_counter() - start)

    for k, (box, spec) in enumerate(problems):
        share = None
        if timeout is not None:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                undecided.append(Unknown("timeout"))
                break
            share = left / (len(problems) - k)
        outcome = check(net, box, spec, share, options, onnx_path, regions[k], attack_first=len(problems) == 1)
        done.append(outcome.stats)
        if isinstance(outcome, Counterexample):
            return Counterexample(outcome.x, outcome.y, total())
        if isinstance(outcome, Unknown):
            undecided.append(outcome)
    if not undecided:
        return Proven(total())
    reasons = sorted({u.reason for u in undecided})
    return Unknown("timeout" if "timeout" in reasons else reasons[0], total())
