"""The oracle behind formal explanations: does every completion of a partial patch keep the class?

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

Every `Oracle` answers each query with an `Answer`: VERIFIED (proved for every
completion), FALSIFIED with a witness (a completion, as patch values, that violates
the target: checked by a float64 forward pass of the IR *and* by onnxruntime on the
ONNX file), or UNKNOWN. Oracles are swappable: `CascadeOracle` is the default,
`BruteForceOracle` enumerates every completion (exact, small patches only; tests
inject it, and wrappers that answer UNKNOWN at random).

`CascadeOracle` runs its stages cheapest first on the whole batch of undecided queries,
each query stopping at its first conclusive answer (`STAGES`):

    cache        known witnesses (a completion of the query violating its target) and
                 known proofs (a proved query fixing a subset of the query's values),
                 kept as bit sets
    linear       CROWN's linear bounds w.r.t. the input, computed once on the all-free
                 patch (and kept from later CROWN calls), re-concretised over the query's
                 box: sound because the query's box is a sub-box (one small matrix
                 product, no new propagation)
    enumerate    discrete domains, queries with few completions: evaluate them all
                 (exact; cheaper than an attack when they are few). When the whole patch
                 has few completions (`OracleOptions.table`) each completion's verdict is
                 remembered, so no completion is evaluated twice over a run
    attack       cached witnesses projected onto the query, then a masked quick attack
                 and PGD on the free pixels (profit.attacks), rounded to the domain and
                 re-checked
    box, crown, alpha-crown
                 bounds over the convex hull of the query's completions, one batched
                 call per stage (a bound over the hull is sound for the discrete domain);
                 alpha-crown by default only for continuous domains (`OracleOptions`)
    search       complete search. Discrete domains: input splitting over the free
                 pixels, each node bounded by re-concretising its parent's linear bounds,
                 then by its own CROWN bounds (batched), its rows' bound-minimising
                 vertices tried, and nodes with few completions enumerated (exact).
                 Continuous domains: the project's branch and bound (profit.bab).

All stages compute with `Problem.model`: when the network reads its input through
Flatten + Linear, the fixed pixels are folded into the first layer's bias and the model
takes the n patch values alone (784 -> n inputs for MNIST), which makes every stage
cheaper. Torch runs on one thread inside `decide` (the ops are tiny).

Soundness: VERIFIED comes only from sound bounds (float64, with a 1e-9 relative slack
against rounding), from a proof of a query with fewer fixed pixels, or from evaluating
every completion; FALSIFIED only with a witness that lies in the query's region and
violates the target in both the float64 forward pass and onnxruntime.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from domains.backsub import input_linear_bounds
from domains.box import BoxDomain
from domains.crown import AlphaCrown, AlphaOptions
from domains.deeppoly import LinearBoundOptions
from profit.attacks import AttackOptions, pgd, quick_attack
from profit.bab import check as bab_check
from profit.errors import ProfitError
from profit.explain.problem import REL_SLACK, Answer, Problem, Query, completions
from profit.outcomes import Counterexample, Proven, Verdict
from specs.properties import Spec
from specs.regions import Box

STAGES = ("cache", "linear", "enumerate", "attack", "box", "crown", "alpha-crown", "search")
CHEAP_STAGES = ("cache", "linear", "enumerate", "attack", "box", "crown")  # effort="cheap"
_SHIFTS = np.arange(64, dtype=np.uint64)
_F32_SLACK = 2.0 ** -22  # two float32 ulps (relative): bounds a domain returned in float32 are lowered by it


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: the oracle's many tiny ops are dominated by thread-pool overhead
    otherwise (tens of times slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Oracle(ABC):
    """Decides queries about one Problem. `calls` counts queries by the stage that decided
    them ("unknown" for undecided ones); `seconds` the time spent per stage."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()

    @abstractmethod
    def decide(self, queries: Sequence[Query], effort: str = "full",
               deadline: float | None = None) -> list[Answer]:
        """One Answer per query. effort "cheap" may skip expensive stages (then more
        UNKNOWN); deadline: a time.monotonic() after which to answer UNKNOWN."""


@dataclass(frozen=True)
class OracleOptions:
    """Settings of `CascadeOracle`.

    stages: the stages to run, in cascade order (a subset of STAGES), or None: every
    stage, except alpha-crown for discrete domains (there the exact search is cheaper than
    optimising slopes: on 30-pixel patches of the 5-vs-6 net it decided about twice as many
    queries in the same time without it); attack: PGD
    settings for the attack stage; quick_samples: random vertices/points of the quick
    attack; alpha: alpha-CROWN optimisation; exhaustive: a query or search node is
    enumerated when (its number of completions) x (model inputs) is at most this (a few
    milliseconds of forward passes per 2^20; with the table, its number of completions);
    table: remember the float64 verdict of every evaluated completion when the whole
    patch has at most this many (discrete domains; one byte each); batch: search nodes
    bounded per CROWN call;
    timeout: seconds per query for the search stage (None: no limit); cache_size:
    witnesses kept; linear_entries: CROWN linear bounds kept for re-concretisation.
    """

    stages: tuple[str, ...] | None = None
    attack: AttackOptions = field(default_factory=lambda: AttackOptions(steps=20, restarts=2))
    quick_samples: int = 16
    alpha: AlphaOptions = field(default_factory=lambda: AlphaOptions(iterations=10))
    exhaustive: int = 1 << 20
    table: int = 1 << 22
    batch: int = 64
    timeout: float | None = None
    cache_size: int = 20_000
    linear_entries: int = 64

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages or () if s not in STAGES]
        if unknown:
            raise ProfitError(f"unknown oracle stage(s) {unknown} (choose from {', '.join(STAGES)})")
        if self.exhaustive < 1 or self.batch < 1:
            raise ProfitError("oracle options need exhaustive >= 1 and batch >= 1")
        if self.timeout is not None and not self.timeout > 0:
            raise ProfitError(f"oracle timeout must be > 0 seconds, got {self.timeout}")


@dataclass
class _Linear:
    """Linear lower bounds of the target rows over the patch: rows >= A p + b for p in [lo, hi]."""

    lo: np.ndarray  # (n,)
    hi: np.ndarray  # (n,)
    A: np.ndarray  # (m, n) coefficients of the patch values
    b: np.ndarray  # (m,) constant, with the fixed non-patch pixels folded in


class _Codes:
    """Partial assignments of the patch as bit sets, for fast subset and consistency tests.

    A row is (mask, planes): mask (W,) uint64 has a bit per fixed position; planes (B, W)
    the bits of each position's value code (discrete domains: the value's index; continuous
    ones: 0 for the instance's value, 1 for any other), W = ceil(n / 64).
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        K = len(problem.domain.values) if problem.domain.discrete else 2
        self.planes = max(1, math.ceil(math.log2(K)))
        self.words = (problem.n + 63) // 64

    def _pack(self, bits: np.ndarray) -> np.ndarray:
        """(N, n) bool -> (N, W) uint64 (bit i of word w is position 64 w + i)."""
        padded = np.zeros((bits.shape[0], self.words * 64), dtype=np.uint64)
        padded[:, :bits.shape[1]] = bits
        return (padded.reshape(-1, self.words, 64) << _SHIFTS).sum(axis=2, dtype=np.uint64)

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask (N, W), planes (N, B, W)) of assignments (N, n) with NaN for free positions."""
        fixed = ~np.isnan(values)
        if self.problem.domain.discrete:
            domain = self.problem.domain.values
            code = np.abs(np.nan_to_num(values)[..., None] - domain).argmin(-1)
        else:
            code = (values != self.problem.center).astype(np.int64)
        code = np.where(fixed, code, 0)
        planes = np.stack([self._pack(((code >> b) & 1).astype(bool)) for b in range(self.planes)], axis=1)
        return self._pack(fixed), planes


class _Rows:
    """A growable table of rows (several aligned arrays), dropping the oldest half when full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.columns: list[np.ndarray] = []
        self.size = 0

    def add(self, *rows: np.ndarray) -> None:
        if not self.columns:
            self.columns = [np.zeros((16, *r.shape[1:]), dtype=r.dtype) for r in rows]
        if self.size + len(rows[0]) > len(self.columns[0]):
            if self.size + len(rows[0]) > self.capacity:
                keep = self.size // 2
                self.columns = [c[self.size - keep:self.size].copy() for c in self.columns]
                self.size = keep
            grow = max(2 * len(self.columns[0]), self.size + len(rows[0]))
            self.columns = [np.concatenate([c[:self.size], np.zeros((grow - self.size, *c.shape[1:]), c.dtype)])
                            for c in self.columns]
        for c, r in zip(self.columns, rows):
            c[self.size:self.size + len(r)] = r
        self.size += len(rows[0])

    def view(self) -> list[np.ndarray]:
        return [c[:self.size] for c in self.columns]

    def set(self, row: int, *values: np.ndarray) -> None:
        """Overwrite one row."""
        for c, v in zip(self.columns, values):
            c[row] = v

    def keep(self, rows: np.ndarray) -> None:
        """Keep only the rows where `rows` (size,) is True."""
        kept = [c[:self.size][rows] for c in self.columns]
        for c, k in zip(self.columns, kept):
            c[:len(k)] = k
        self.size = len(kept[0])


class _Table:
    """keeps_c of every completion of the whole patch, filled in as completions get evaluated
    (discrete domains with few enough completions): no completion is evaluated twice."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        K = len(problem.domain.values)
        self.K = K
        self.strides = K ** np.arange(problem.n, dtype=np.int64)
        self.table = np.full(K ** problem.n, -1, dtype=np.int8)

    def codes(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Codes (N,) of every completion of a query's box [lo, hi] (n,): fixed pixels have
        lo == hi, free ones range over every value."""
        free = np.flatnonzero(lo < hi)
        values = self.problem.domain.values
        base = int((np.abs(lo[:, None] - values).argmin(1) * self.strides)[lo == hi].sum())
        code = np.full(1, base, dtype=np.int64)
        steps = np.arange(self.K, dtype=np.int64)
        for i in free:
            code = (code[:, None] + steps * self.strides[i]).reshape(-1)
        return code

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Patch values (N, n) of codes (N,)."""
        return self.problem.domain.values[(codes[:, None] // self.strides) % self.K]

    def keeps(self, codes: np.ndarray) -> np.ndarray:
        """keeps_c (float64 forward pass) of the completions `codes`, evaluating the unknown ones."""
        known = self.table[codes]
        unknown = np.unique(codes[known < 0])
        if len(unknown):
            self.table[unknown] = self.problem.evaluate(self.decode(unknown))
            known = self.table[codes]
        return known.astype(bool)


class CascadeOracle(Oracle):
    """Cache -> attack -> re-concretised linear bounds -> Box / CROWN / alpha-CROWN -> search.

    See the module docstring for the stages and their soundness.
    """

    def __init__(self, problem: Problem, options: OracleOptions = OracleOptions()) -> None:
        super().__init__(problem)
        self.options = options
        n = problem.n
        self.stages = options.stages if options.stages is not None else \
            tuple(s for s in STAGES if not (s == "alpha-crown" and problem.domain.discrete))
        self._codes = _Codes(problem)
        self._points = {False: _Rows(options.cache_size), True: _Rows(options.cache_size)}  # witnesses: values, planes
        self._proofs = {False: _Rows(options.cache_size * 10), True: _Rows(options.cache_size * 10)}  # masks, planes
        discrete = problem.domain.discrete
        self._table = _Table(problem) if discrete and len(problem.domain.values) ** n <= options.table else None
        self._linear: dict[bool, list[_Linear]] = {False: [], True: []}
        self.search_nodes = 0

    # ---- the cascade
    def decide(self, queries: Sequence[Query], effort: str = "full",
               deadline: float | None = None) -> list[Answer]:
        with _one_thread():
            return self._decide(queries, effort, deadline)

    def _decide(self, queries: Sequence[Query], effort: str, deadline: float | None) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(queries)
        stages = [s for s in self.stages if effort == "full" or s in CHEAP_STAGES]
        for negate in (False, True):
            todo = [i for i, q in enumerate(queries) if q.negate == negate]
            if not todo:
                continue
            fixed = np.stack([queries[i].array for i in todo])
            for stage in stages:
                if not todo:
                    break
                start = time.perf_counter()
                found = self._run(stage, fixed, negate, deadline)
                self.seconds[stage] += time.perf_counter() - start
                keep, proved, witnesses = [], [], []
                for k, (i, answer) in enumerate(zip(todo, found)):
                    if answer is None:
                        keep.append(k)
                        continue
                    answers[i] = Answer(answer.verdict, answer.witness, stage)
                    self.calls[stage] += 1
                    if answer.verdict == Verdict.VERIFIED:
                        proved.append(fixed[k])
                    elif answer.witness is not None:
                        witnesses.append(answer.witness)
                if stage != "cache":
                    self._remember(proved, witnesses, negate)
                todo = [todo[k] for k in keep]
                fixed = fixed[keep]
            label = "unknown" if effort == "full" else "deferred"  # cheap passes leave the rest for later
            for i in todo:
                answers[i] = Answer(Verdict.UNKNOWN, None, label)
                self.calls[label] += 1
        return answers  # type: ignore[return-value]

    def _run(self, stage: str, fixed: np.ndarray, negate: bool, deadline: float | None) -> list[Answer | None]:
        if stage == "cache":
            return self._cache(fixed, negate)
        if stage == "attack":
            return self._attack(fixed, negate)
        if stage == "linear":
            return self._reuse(fixed, negate)
        if stage == "enumerate":
            return self._enumerate(fixed, negate)
        if stage == "search":
            return [self._search(f, negate, deadline) for f in fixed]
        return self._bound(stage, fixed, negate)

    def _remember(self, proved: list[np.ndarray], witnesses: list[np.ndarray], negate: bool) -> None:
        """Cache proved queries (dropping the proofs they imply) and witnesses."""
        if witnesses:
            values = np.stack(witnesses)
            self._points[negate].add(values, self._codes.encode(values)[1])
        if not proved:
            return
        masks, planes = self._codes.encode(np.stack(proved))
        proofs = self._proofs[negate]
        for mask, plane in zip(masks, planes):
            if proofs.size:  # drop the proofs this one implies (they fix a superset of its values)
                p_mask, p_planes = proofs.view()
                implied = ((mask & ~p_mask) == 0).all(axis=1) & \
                    (((p_planes ^ plane) & mask[None, None, :]) == 0).all(axis=(1, 2))
                index = np.flatnonzero(implied)
                if len(index):  # usually the previous step of a deletion chain: overwrite it
                    proofs.set(index[0], mask, plane)
                    if len(index) > 1:
                        implied[index[0]] = False
                        proofs.keep(~implied)
                    continue
            proofs.add(mask[None], plane[None])

    def _witnesses(self, negate: bool) -> tuple[np.ndarray, np.ndarray]:
        """Cached witnesses against the target: values (N, n) and planes (N, B, W)."""
        if not self._points[negate].size:
            return np.zeros((0, self.problem.n)), np.zeros((0, self._codes.planes, self._codes.words), np.uint64)
        values, planes = self._points[negate].view()
        return values, planes

    # ---- stage: cache
    def _cache(self, fixed: np.ndarray, negate: bool) -> list[Answer | None]:
        """A proved query fixing a subset of the query's values proves it; a cached witness
        consistent with the query's fixed values refutes it."""
        out: list[Answer | None] = []
        masks, planes = self._codes.encode(fixed)
        proofs = self._proofs[negate].view() if self._proofs[negate].size else None
        values, points = self._witnesses(negate)
        for mask, plane in zip(masks, planes):
            if proofs is not None:
                p_mask, p_planes = proofs
                inside = ((p_mask & ~mask) == 0).all(axis=1)
                same = (((p_planes ^ plane) & p_mask[:, None, :]) == 0).all(axis=(1, 2))
                if (inside & same).any():
                    out.append(Answer(Verdict.VERIFIED))
                    continue
            hit = np.flatnonzero((((points ^ plane) & mask) == 0).all(axis=(1, 2)))
            out.append(Answer(Verdict.FALSIFIED, values[hit[-1]].copy()) if len(hit) else None)
        return out

    # ---- stage: enumerate
    def _small(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Which boxes (Q, n) have few enough completions to enumerate, bool (Q,)."""
        K = len(self.problem.domain.values)
        free = (lo < hi).sum(axis=-1)
        width = 1 if self._table is not None else int(np.prod(self.problem.model.input_shape))
        return free * math.log2(K) + math.log2(width) <= math.log2(self.options.exhaustive)

    def _enumerate(self, fixed: np.ndarray, negate: bool) -> list[Answer | None]:
        """Small queries of a discrete domain: evaluate every completion (exact)."""
        out: list[Answer | None] = [None] * len(fixed)
        if not self.problem.domain.discrete:
            return out
        lo, hi = self.problem.bounds(fixed)
        for q in np.flatnonzero(self._small(lo, hi)):
            answer, doubt = self._exhaust([(lo[q], hi[q])], fixed[q], negate)
            out[q] = answer if answer is not None else None if doubt else Answer(Verdict.VERIFIED)
        return out

    def _exhaust(self, boxes: list[tuple[np.ndarray, np.ndarray]], fixed: np.ndarray, negate: bool
                 ) -> tuple[Answer | None, bool]:
        """Every completion of the boxes: a checked witness, and whether some float64 violation
        was not confirmed by onnxruntime (then the boxes are not proved)."""
        values = self.problem.domain.values
        if self._table is None:
            points = np.concatenate([completions(lo, hi, values) for lo, hi in boxes])
            return self._witness(points, fixed, negate)
        codes = np.concatenate([self._table.codes(lo, hi) for lo, hi in boxes])
        bad = codes[self._table.keeps(codes) == negate]
        if not len(bad):
            return None, False
        for start in range(0, len(bad), 64):
            points = self._table.decode(bad[start:start + 64])
            ok = self.problem.confirm(points, fixed, negate)
            if ok.any():
                return Answer(Verdict.FALSIFIED, points[np.argmax(ok)].copy()), False
        return None, True

    # ---- stage: attack
    def _attack(self, fixed: np.ndarray, negate: bool) -> list[Answer | None]:
        """Projected cached witnesses, then quick attack, then PGD, on the queries still open."""
        problem = self.problem
        Q = len(fixed)
        free = np.isnan(fixed)
        lo, hi = problem.bounds(fixed)
        out: list[Answer | None] = [None] * Q
        rows, values = self._projected(fixed, negate)
        self._accept(rows, values, fixed, negate, out)
        region = problem.model_box(lo, hi)
        spec = problem.spec(negate, Q)
        mask_t = problem.model_mask(free)
        for attack in (self._quick, self._pgd):
            pending = np.array([q for q in range(Q) if out[q] is None and free[q].any()], dtype=np.int64)
            if not len(pending):
                break
            index = torch.from_numpy(pending)
            x = attack(region[index], spec[index], mask_t[index])
            values = np.where(free[pending], np.clip(problem.domain.quantize(self._to_patch(x)), lo[pending],
                                                     hi[pending]), fixed[pending])
            self._accept(pending, values, fixed, negate, out)
        return out

    def _quick(self, region: Box, spec: Spec, mask: Tensor) -> Tensor:
        return quick_attack(self.problem.model32, region, spec, self.options.quick_samples, mask=mask)[0]

    def _pgd(self, region: Box, spec: Spec, mask: Tensor) -> Tensor:
        return pgd(self.problem.model32, region, spec, self.options.attack, mask=mask)[0]

    def _projected(self, fixed: np.ndarray, negate: bool, per_query: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Recent cached witnesses against the target, with each query's fixed values written in."""
        points = self._witnesses(negate)[0][-per_query:]
        if not len(points):
            return np.zeros(0, dtype=np.int64), np.zeros((0, fixed.shape[1]))
        Q, R = fixed.shape[0], points.shape[0]
        rows = np.repeat(np.arange(Q), R)
        values = np.where(np.isnan(fixed[rows]), np.tile(points, (Q, 1)), fixed[rows])
        return rows, values

    def _to_patch(self, x: Tensor) -> np.ndarray:
        """Patch values (N, n) of model inputs x."""
        flat = x.detach().double().reshape(x.shape[0], -1).numpy()
        return flat if self.problem.folded else flat[:, self.problem.patch_index]

    def _accept(self, rows: np.ndarray, values: np.ndarray, fixed: np.ndarray, negate: bool,
                out: list[Answer | None]) -> None:
        """Record, for each query row without an answer, its first candidate that is a checked witness."""
        violates = self.problem.evaluate(values) == negate
        for k in np.flatnonzero(violates):
            q = int(rows[k])
            if out[q] is None and self.problem.confirm(values[k], fixed[q], negate)[0]:
                out[q] = Answer(Verdict.FALSIFIED, values[k].copy())

    # ---- stages: bounds
    def _root(self, negate: bool) -> _Linear:
        """Linear bounds on the all-free patch (computed once per target)."""
        if not self._linear[negate]:
            lo, hi = self.problem.hull
            self._linear[negate].append(self._linear_bounds(lo[None], hi[None], negate)[0])
        return self._linear[negate][0]

    def _linear_bounds(self, lo: np.ndarray, hi: np.ndarray, negate: bool) -> list[_Linear]:
        """CROWN's linear lower bounds of the target rows over the boxes [lo, hi] (Q, n)."""
        problem = self.problem
        C, _, _ = problem.rows(negate)
        rows = torch.from_numpy(C).expand(lo.shape[0], *C.shape)
        box = (problem.model_inputs(lo), problem.model_inputs(hi))
        A, b = problem.patch_coefficients(*input_linear_bounds(problem.model, *box, rows), negate)
        return [_Linear(lo[q].copy(), hi[q].copy(), A[q], b[q]) for q in range(len(lo))]

    @staticmethod
    def _concretize(entry: _Linear, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """min over the boxes [lo, hi] (Q, n) of A p + b: (Q, m)."""
        center, radius = (lo + hi) / 2, (hi - lo) / 2
        return center @ entry.A.T - radius @ np.abs(entry.A).T + entry.b

    def _reuse(self, fixed: np.ndarray, negate: bool) -> list[Answer | None]:
        self._root(negate)
        lo, hi = self.problem.bounds(fixed)
        proven = np.zeros(len(fixed), dtype=bool)
        for entry in self._linear[negate]:
            inside = ((lo >= entry.lo) & (hi <= entry.hi)).all(axis=1) & ~proven
            if inside.any():
                proven[inside] = self.problem.proven(self._concretize(entry, lo[inside], hi[inside]), negate)
        return [Answer(Verdict.VERIFIED) if p else None for p in proven]

    def _bound(self, stage: str, fixed: np.ndarray, negate: bool) -> list[Answer | None]:
        problem = self.problem
        lo, hi = problem.bounds(fixed)
        Q = len(fixed)
        if stage == "crown":
            entries = self._linear_bounds(lo, hi, negate)
            lower = np.stack([self._concretize(e, lo[q:q + 1], hi[q:q + 1])[0] for q, e in enumerate(entries)])
            store = self._linear[negate]
            store.extend(entries)
            del store[1:max(1, len(store) - self.options.linear_entries)]
        else:
            domain = BoxDomain(problem.model) if stage == "box" else \
                AlphaCrown(problem.model, LinearBoundOptions(dtype=torch.float64), self.options.alpha)
            spec = problem.spec(negate, Q)
            result = domain.bound(problem.model_box(lo, hi), spec)
            lower = result.spec_lower.double().numpy()
            lower = lower - _F32_SLACK * np.abs(lower)  # the domain may round its result to float32
            lower = lower + (problem.rows(negate)[1] - spec.d[0].double().numpy())  # Spec rounded d down
        return [Answer(Verdict.VERIFIED) if p else None for p in problem.proven(lower, negate)]

    # ---- stage: complete search
    def _search(self, fixed: np.ndarray, negate: bool, deadline: float | None) -> Answer | None:
        start = time.monotonic()
        limit = deadline
        if self.options.timeout is not None:
            limit = start + self.options.timeout if limit is None else min(limit, start + self.options.timeout)
        if not self.problem.domain.discrete:
            return _branch_and_bound(self.problem, fixed, negate, limit)
        return self._split(fixed, negate, limit)

    def _split(self, fixed: np.ndarray, negate: bool, limit: float | None) -> Answer | None:
        """Input splitting over the free pixels of one discrete query (complete).

        A node is a box of patch values with a linear bound valid on it (its parent's, or
        its own when `own`). Nodes are taken depth first in batches: those with few
        completions are enumerated in one forward pass; the others are bounded by their
        parent's linear bound, then by their own CROWN bound (one batched call), their
        rows' minimising vertices are tried, and what stays open is split.
        """
        problem = self.problem
        lo0, hi0 = problem.bounds(fixed)
        own = next((e for e in self._linear[negate] if np.array_equal(e.lo, lo0) and np.array_equal(e.hi, hi0)),
                   None)
        stack: list[tuple[np.ndarray, np.ndarray, _Linear, bool]] = [
            (lo0, hi0, own or self._root(negate), own is not None)]
        unsure = False  # a float64 violation onnxruntime did not confirm: cannot answer VERIFIED
        while stack:
            if limit is not None and time.monotonic() > limit:
                return None
            batch, stack = stack[-self.options.batch:], stack[:-self.options.batch]
            self.search_nodes += len(batch)
            batch = [node for node in batch  # the parent's linear bound, re-concretised
                     if not problem.proven(self._concretize(node[2], node[0][None], node[1][None]), negate)[0]]
            if not batch:
                continue
            is_small = self._small(np.stack([node[0] for node in batch]), np.stack([node[1] for node in batch]))
            small = [node for node, flag in zip(batch, is_small) if flag]
            if small:
                answer, doubt = self._exhaust([(lo, hi) for lo, hi, _, _ in small], fixed, negate)
                if answer is not None:
                    return answer
                unsure |= doubt
            big = [node for node, flag in zip(batch, is_small) if not flag]
            fresh = [k for k, node in enumerate(big) if not node[3]]
            if fresh:
                entries = self._linear_bounds(np.stack([big[k][0] for k in fresh]),
                                              np.stack([big[k][1] for k in fresh]), negate)
                for k, entry in zip(fresh, entries):
                    big[k] = (big[k][0], big[k][1], entry, True)
            lowers = [self._concretize(entry, lo[None], hi[None])[0] for lo, hi, entry, _ in big]
            open_nodes = [(node, lower) for node, lower in zip(big, lowers)
                          if not problem.proven(lower[None], negate)[0]]
            if not open_nodes:
                continue
            vertices = np.concatenate([np.where(node[2].A > 0, node[0], node[1]) for node, _ in open_nodes])
            answer, doubt = self._witness(vertices, fixed, negate)
            if answer is not None:
                return answer
            unsure |= doubt
            for (lo, hi, entry, _), lower in open_nodes:
                stack.extend(self._children(lo, hi, entry, lower, negate))
        return None if unsure else Answer(Verdict.VERIFIED)

    def _witness(self, points: np.ndarray, fixed: np.ndarray, negate: bool) -> tuple[Answer | None, bool]:
        """A checked witness among `points` (N, n), and whether some float64 violation was not confirmed."""
        bad = np.flatnonzero(self.problem.evaluate(points) == negate)
        if not len(bad):
            return None, False
        ok = self.problem.confirm(points[bad], fixed, negate)
        if ok.any():
            return Answer(Verdict.FALSIFIED, points[bad[np.argmax(ok)]].copy()), False
        return None, True

    def _children(self, lo: np.ndarray, hi: np.ndarray, entry: _Linear, lower: np.ndarray,
                  negate: bool) -> list[tuple[np.ndarray, np.ndarray, _Linear, bool]]:
        """Split the free pixel that widens the open rows' bounds most into one child per value."""
        _, _, conj = self.problem.rows(negate)
        open_rows = lower <= REL_SLACK * (1 + np.abs(lower)) if conj else np.ones_like(lower, dtype=bool)
        score = (np.abs(entry.A[open_rows]) * (hi - lo)).max(axis=0)
        score[lo >= hi] = -1.0
        j = int(np.argmax(score))
        values = self.problem.domain.values
        values = values[(values >= lo[j]) & (values <= hi[j])]
        # push the value at the minimising vertex of the weakest row last, so it is explored first
        weakest = int(np.argmin(lower)) if conj else int(np.argmax(lower))
        first = lo[j] if entry.A[weakest, j] > 0 else hi[j]
        children = []
        for v in sorted(values, key=lambda v: v == first):
            clo, chi = lo.copy(), hi.copy()
            clo[j] = chi[j] = v
            children.append((clo, chi, entry, False))
        return children


def _branch_and_bound(problem: Problem, fixed: np.ndarray, negate: bool, limit: float | None) -> Answer | None:
    """The project's complete verifier (profit.bab) on one query of a continuous domain, over
    `model` (the patch values alone when folded); its counterexample is re-checked here."""
    timeout = None if limit is None else limit - time.monotonic()
    if timeout is not None and timeout <= 0:
        return None
    lo, hi = problem.bounds(fixed[None])
    outcome = bab_check(problem.model32, problem.model_box(lo, hi), problem.spec(negate, 1), timeout=timeout,
                        attack_first=False)
    if isinstance(outcome, Proven):
        return Answer(Verdict.VERIFIED)
    if isinstance(outcome, Counterexample):
        x = outcome.x.detach().double().reshape(1, -1).numpy()
        values = x if problem.folded else x[:, problem.patch_index]
        if problem.confirm(values, fixed, negate)[0]:
            return Answer(Verdict.FALSIFIED, values[0].copy())
    return None


class BruteForceOracle(Oracle):
    """Exact answers by evaluating every completion of the whole patch once (discrete domains,
    at most `max_points` completions). A completion counts as a witness only if onnxruntime
    agrees with the float64 forward pass; a query whose only violations disagree is UNKNOWN."""

    def __init__(self, problem: Problem, max_points: int = 2_000_000) -> None:
        super().__init__(problem)
        if not problem.domain.discrete:
            raise ProfitError("the brute-force oracle needs a discrete pixel domain")
        total = len(problem.domain.values) ** problem.n
        if total > max_points:
            raise ProfitError(f"the brute-force oracle would evaluate {total} completions (max {max_points})")
        lo, hi = problem.hull
        self.points = completions(lo, hi, problem.domain.values)  # (N, n)
        self.keeps = problem.evaluate(self.points)
        runtime = problem.runtime_keeps(self.points)
        self.agrees = np.ones(len(self.points), dtype=bool) if runtime is None else runtime == self.keeps

    def decide(self, queries: Sequence[Query], effort: str = "full",
               deadline: float | None = None) -> list[Answer]:
        answers = []
        for q in queries:
            f = q.array
            mask = ~np.isnan(f)
            consistent = (self.points[:, mask] == f[mask]).all(axis=1)
            bad = consistent & (self.keeps == q.negate)
            if not bad.any():
                answers.append(Answer(Verdict.VERIFIED, None, "brute-force"))
            elif (bad & self.agrees).any():
                answers.append(Answer(Verdict.FALSIFIED, self.points[np.argmax(bad & self.agrees)].copy(),
                                      "brute-force"))
            else:
                answers.append(Answer(Verdict.UNKNOWN, None, "unknown"))
            self.calls[answers[-1].stage] += 1
        return answers


__all__ = ["BruteForceOracle", "CascadeOracle", "Oracle", "OracleOptions", "STAGES"]
