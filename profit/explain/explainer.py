"""Formal explanations over a pixel patch, enumerated by hitting-set duality.

    explainer = Explainer(net, x, patch=[431, 432, 458], domain="binary")
    for e in explainer.enumerate("both", limit=100, timeout=60):    # an Enumeration
        print(e.kind, e.literals, e.minimality)
    one = explainer.axp(order="sensitivity")                        # one AXp
    cxp = explainer.cxp(witness)                                    # witness -> a minimal CXp

The question (Ignatiev, Narodytska, Marques-Silva, "On Relating Explanations and
Adversarial Examples", NeurIPS 2019): which parts of a patch P of an image v decide the
network's class? All pixels outside P stay fixed to v; each patch pixel ranges over a
`PixelDomain` (binary, K levels, [0, 1], v +- eps). The target is a class c, or with
target "opposite" the event "some class other than the predicted one" (see
`profit.explain.problem` for the margin and tie rule: another class must beat c by
`margin`, the lowest index wins ties).

Two modes:

- **local** (default; AXp/CXp): literals are patch pixels at v's values. An AXp is a
  subset-minimal set of pixels that, fixed to v, forces the target for every value of
  the other patch pixels; a CXp is a subset-minimal set of pixels that, freed (the rest
  fixed to v), admits a point violating the target. AXps are exactly the minimal
  hitting sets of the CXps and vice versa.
- **absolute** (the paper's): literals are (pixel, value) pairs with any value of a
  discrete domain. An explanation is a subset-minimal partial assignment all of whose
  completions satisfy the target; a counterexample one all of whose completions violate
  it. Explanations are exactly the minimal sets that *break* every counterexample
  (assign one of its pixels another value) and vice versa.

In both modes kind "axp" names the explanations and "cxp" the counterexamples.

Enumeration (`Explainer.enumerate`): python-sat's Hitman (`profit.explain.hitting`) proposes a
minimal candidate H that hits/breaks every dual item found so far; the oracle decides
it. VERIFIED: H is an item, minimal by duality (each proper subset misses a known dual
item, which refutes it), reported and blocked. FALSIFIED: the witness is reduced
(deletion) to a minimal dual item, reported and added as a set to hit. UNKNOWN: nothing
is reported, exactly H is excluded, and the run is `partial`. An item is only
reported after a VERIFIED answer or with a witness checked by a float64 forward pass
and onnxruntime; `minimality` is "certified" when every one-literal weakening is
refuted, else "sufficient-only". A run that ends without UNKNOWN, limit or timeout is
`complete`: every item of the enumerated kind was found (local mode: by duality, the
dual kind too). In absolute mode the counterexamples met while enumerating explanations
need not be all of them; kind "both" enumerates each kind in turn.

Single explanations: `axp(order, method)` deletes pixels from v's full patch in a
traversal order ("index", "sensitivity" as in VeriX (Wu, Wu, Barrett, NeurIPS 2023):
least sensitive pixel first, "random"), or by QuickXplain (Junker, AAAI 2004), a
dichotomic search with fewer oracle calls when the explanation is small.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from networks.ir import Network
from profit.attacks import onnx_outputs
from profit.errors import ProfitError
from profit.explain.hitting import HTYPES, HittingSets
from profit.explain.oracle import CascadeOracle, Oracle
from profit.explain.problem import Answer, PixelDomain, Problem, Query
from profit.outcomes import Verdict

if TYPE_CHECKING:
    import onnxruntime as ort

ENUMS = ("axp", "cxp", "both")
MODES = ("local", "absolute")
ORDERS = ("index", "sensitivity", "random")
METHODS = ("deletion", "quickxplain")
CERTIFIED = "certified"
SUFFICIENT_ONLY = "sufficient-only"


@dataclass(frozen=True)
class ExplainOptions:
    """What to explain and how.

    target: "true" (the predicted class), "opposite" (any class but the predicted one
    beats it by the margin) or a class index; margin: how much another class must win
    by (>= 0; ties: lowest index); htype: hitting-set enumerator (rc2, lbx, mcsls);
    order: traversal order of the deletion-based reductions inside `enumerate`;
    seed: for the "random" order.
    """

    target: int | str = "true"
    margin: float = 0.0
    htype: str = "rc2"
    order: str = "index"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.target, int) and self.target not in ("true", "opposite"):
            raise ProfitError(f"target must be 'true', 'opposite' or a class index, got {self.target!r}")
        if self.htype not in HTYPES:
            raise ProfitError(f"unknown hitting-set enumerator '{self.htype}' (choose from {', '.join(HTYPES)})")
        if self.order not in ORDERS:
            raise ProfitError(f"unknown order '{self.order}' (choose from {', '.join(ORDERS)})")


@dataclass(frozen=True, eq=False)
class Explanation:
    """One explanation ("axp") or counterexample ("cxp").

    literals: (pixel, value) pairs, pixels ascending (local mode: the instance's values);
    minimality: "certified" or "sufficient-only"; witness: for a cxp, a flat input
    (n_in,) inside the region that violates the target, checked by a float64 forward pass
    and onnxruntime (None for an axp); oracle_calls: queries spent since the previous item.
    """

    kind: str
    literals: tuple[tuple[int, float], ...]
    minimality: str
    witness: np.ndarray | None
    oracle_calls: int

    @property
    def pixels(self) -> tuple[int, ...]:
        return tuple(p for p, _ in self.literals)

    @property
    def size(self) -> int:
        return len(self.literals)

    def __repr__(self) -> str:
        return f"Explanation({self.kind}, {list(self.literals)}, {self.minimality})"


@dataclass(frozen=True)
class Step:
    """One candidate of the enumeration loop, for tracing: its kind, literals and the oracle's answer."""

    index: int
    kind: str
    literals: tuple[tuple[int, float], ...]
    verdict: Verdict
    stage: str


Key = frozenset  # an item: positions (local) or (position, value index) pairs (absolute)


class Explainer:
    """Explanations of one instance over one patch (see the module docstring).

    net: the network; instance: the input ((1, *input_shape), input_shape or flat), whose
    patch values must lie in a discrete domain (quantise it with `PixelDomain.quantize`);
    patch: flat row-major pixel indices; domain: a PixelDomain or its name ("binary",
    "levels:K", "box", "linf:EPS"); oracle: None (a `CascadeOracle`), an Oracle for this
    explainer's problem, or a callable Problem -> Oracle; mode: "local" or "absolute";
    onnx: the ONNX file (or session) witnesses are re-run on (default: the file the
    network was loaded from).
    """

    def __init__(self, net: Network, instance: Tensor | np.ndarray, patch: Sequence[int],
                 domain: PixelDomain | str = "binary",
                 oracle: Oracle | Callable[[Problem], Oracle] | None = None,
                 mode: str = "local", options: ExplainOptions = ExplainOptions(),
                 onnx: str | Path | ort.InferenceSession | None = None) -> None:
        if mode not in MODES:
            raise ProfitError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
        domain = PixelDomain.parse(domain)
        if mode == "absolute" and not domain.discrete:
            raise ProfitError(f"absolute mode needs a discrete pixel domain (binary or levels:K), not {domain}")
        x = np.asarray(torch.as_tensor(instance).detach().double().reshape(-1))
        n_in = int(np.prod(net.input_shape))
        if x.size != n_in:
            raise ProfitError(f"the instance has {x.size} values but the network input {net.input_shape} "
                              f"takes {n_in}")
        if onnx is None and net.source and Path(net.source).is_file():
            onnx = net.source
        self.net, self.mode, self.options = net, mode, options
        probe = Problem(net, x, tuple(int(p) for p in patch), domain, 0, options.margin, onnx)  # validates
        y = probe.logits(probe.center[None])[0]
        self.predicted = int(np.argmax(y))
        target, self.negate = options.target, False
        if target in ("true", "opposite"):
            self.negate = target == "opposite"
            target = self.predicted
        self.problem = Problem(net, x, tuple(int(p) for p in patch), domain, int(target), options.margin, onnx)
        if domain.discrete and not np.isin(self.problem.center, domain.values).all():
            raise ProfitError(f"the instance's patch values are not all in the {domain} domain: "
                              f"quantise the instance first")
        if mode == "local" and self.problem.keeps(y[None])[0] == self.negate:
            raise ProfitError(f"local mode explains what the instance satisfies, but the instance "
                              f"(predicted class {self.predicted}) does not satisfy target "
                              f"{self.target_name}: use --mode absolute or another class")
        if oracle is None:
            oracle = CascadeOracle(self.problem)
        elif not isinstance(oracle, Oracle):
            oracle = oracle(self.problem)
        self.oracle = oracle
        K = len(domain.values) if domain.discrete else 1
        n = self.problem.n
        self._universe: list[Hashable] = list(range(n)) if mode == "local" else \
            [(i, k) for i in range(n) for k in range(K)]
        self._conflicts = [] if mode == "local" else \
            [((i, a), (i, b)) for i in range(n) for a in range(K) for b in range(a + 1, K)]
        self._queries = 0

    # ---------------------------------------------------------------- the target
    @property
    def target_name(self) -> str:
        """'c' for a class, 'not c' for the opposite of the predicted class c."""
        return f"not {self.problem.target}" if self.negate else str(self.problem.target)

    @property
    def target_classes(self) -> list[int]:
        """The classes the explained event stands for: [c], or every class but c for 'opposite'."""
        c = self.problem.target
        return [j for j in range(self.problem.n_classes) if j != c] if self.negate else [c]

    # ---------------------------------------------------------------- literals and queries
    def _value_index(self, value: float) -> int:
        return int(np.argmin(np.abs(self.problem.domain.values - value)))

    def _instance_key(self) -> Key:
        """The instance's full patch as an item of literals."""
        if self.mode == "local":
            return frozenset(range(self.problem.n))
        return frozenset((i, self._value_index(v)) for i, v in enumerate(self.problem.center))

    def _witness_key(self, values: np.ndarray) -> Key:
        """A completion (n,) as a set of absolute literals."""
        return frozenset((i, self._value_index(v)) for i, v in enumerate(values))

    def _query(self, kind: str, key: Key) -> Query:
        """The query deciding whether `key` is an item of `kind` (see `_positive`)."""
        n = self.problem.n
        center = self.problem.center
        if self.mode == "local":
            fixed = key if kind == "axp" else frozenset(range(n)) - key
            return Query(tuple(float(center[i]) if i in fixed else None for i in range(n)), self.negate)
        values: list[float | None] = [None] * n
        for i, k in key:
            values[i] = float(self.problem.domain.values[k])
        return Query(tuple(values), self.negate if kind == "axp" else not self.negate)

    def _positive(self, kind: str, answer: Answer) -> bool:
        """Whether the answer to `_query(kind, key)` makes key an item of `kind`."""
        wanted = Verdict.FALSIFIED if self.mode == "local" and kind == "cxp" else Verdict.VERIFIED
        return answer.verdict == wanted

    def _negative(self, kind: str, answer: Answer) -> bool:
        return answer.verdict != Verdict.UNKNOWN and not self._positive(kind, answer)

    def _ask(self, queries: Sequence[Query], effort: str = "full", deadline: float | None = None) -> list[Answer]:
        """The oracle's answers, with every witness re-checked (FALSIFIED without a check is UNKNOWN)."""
        answers = self.oracle.decide(list(queries), effort=effort, deadline=deadline)
        self._queries += len(queries)
        checked = []
        for q, a in zip(queries, answers):
            if a.verdict == Verdict.FALSIFIED and (
                    a.witness is None or not self.problem.confirm(a.witness, q.array, q.negate)[0]):
                a = Answer(Verdict.UNKNOWN, None, "unchecked-witness")
            checked.append(a)
        return checked

    def _literals(self, kind: str, key: Key) -> tuple[tuple[int, float], ...]:
        patch = self.problem.patch
        if self.mode == "local":
            return tuple(sorted((patch[i], float(self.problem.center[i])) for i in key))
        values = self.problem.domain.values
        return tuple(sorted((patch[i], float(values[k])) for i, k in key))

    def _breakers(self, key: Key) -> list[Hashable]:
        """The objects a candidate of the dual kind must contain one of: the item itself in
        local mode, the literals giving one of its pixels another value in absolute mode."""
        if self.mode == "local":
            return list(key)
        K = len(self.problem.domain.values)
        return [(i, b) for i, k in key for b in range(K) if b != k]

    def _item(self, kind: str, key: Key, minimality: str, witness: np.ndarray | None) -> Explanation:
        calls, self._queries = self._queries, 0
        full = None if witness is None else self.problem.inputs(np.asarray(witness)[None])[0]
        return Explanation(kind, self._literals(kind, key), minimality, full, calls)

    # ---------------------------------------------------------------- orders
    def _order(self, order: str, seed: int = 0) -> np.ndarray:
        """Patch positions in traversal order."""
        n = self.problem.n
        if order == "index":
            return np.arange(n)
        if order == "random":
            return np.random.default_rng(seed).permutation(n)
        if order == "sensitivity":
            return np.argsort(self.sensitivity(), kind="stable")
        raise ProfitError(f"unknown order '{order}' (choose from {', '.join(ORDERS)})")

    def sensitivity(self) -> np.ndarray:
        """(n,) how much the target's score at the instance drops, at worst, when one patch
        pixel alone takes another value of its domain (hull ends for intervals). The score
        is min_j (y_c - y_j) + margin for a class, max_j (y_j - y_c) - margin for 'opposite'."""
        problem = self.problem
        lo, hi = problem.hull
        options = [problem.domain.values] * problem.n if problem.domain.discrete else \
            [np.array([lo[i], hi[i]]) for i in range(problem.n)]
        rows, points = [], [problem.center]
        for i, vals in enumerate(options):
            for v in vals:
                p = problem.center.copy()
                p[i] = v
                points.append(p)
                rows.append(i)
        y = problem.logits(np.stack(points))
        diff = y - y[:, problem.target:problem.target + 1]
        diff[:, problem.target] = -np.inf
        best_other = diff.max(axis=1)  # max_j (y_j - y_c)
        score = best_other - problem.margin if self.negate else problem.margin - best_other
        drop = np.zeros(problem.n)
        np.maximum.at(drop, np.asarray(rows), score[0] - score[1:])
        return drop

    def _sorted(self, key: Key, order: Sequence[int]) -> list[Hashable]:
        """The elements of an item in the traversal order of their positions."""
        rank = {int(p): r for r, p in enumerate(order)}
        position = (lambda e: e) if self.mode == "local" else (lambda e: e[0])
        return sorted(key, key=lambda e: rank[position(e)])

    # ---------------------------------------------------------------- reductions
    def _reduce(self, kind: str, key: Key, witness: np.ndarray | None, order: Sequence[int],
                deadline: float | None = None) -> tuple[Key, str, np.ndarray | None]:
        """Deletion: drop each element of `key` (an item of `kind`) whose removal keeps it an item.

        A batched cheap pre-pass first marks the elements whose removal is refuted (that
        stays true for every subset, by monotonicity); the others are tried one by one.
        Local CXps also shrink to the pixels their latest witness changes.
        Returns the reduced item, its minimality and (cxp) a witness.
        """
        current = set(key)
        if self.mode == "local" and kind == "cxp" and witness is not None:
            current &= self._changed(witness)
        elements = self._sorted(frozenset(current), order)
        pre = self._ask([self._query(kind, frozenset(current - {e})) for e in elements], effort="cheap",
                        deadline=deadline)
        certified, changed = True, False
        for e, first in zip(elements, pre):
            if e not in current:
                continue
            if self._negative(kind, first):
                continue
            trial = frozenset(current - {e})
            answer = first if not changed and self._positive(kind, first) else \
                self._ask([self._query(kind, trial)], deadline=deadline)[0]
            if self._positive(kind, answer):
                current, changed = set(trial), True
                if answer.witness is not None:
                    witness = answer.witness
                    if self.mode == "local" and kind == "cxp":
                        current &= self._changed(witness)
            elif answer.verdict == Verdict.UNKNOWN:
                certified = False
        return frozenset(current), CERTIFIED if certified else SUFFICIENT_ONLY, witness

    def _changed(self, witness: np.ndarray) -> set[int]:
        return set(np.flatnonzero(np.asarray(witness) != self.problem.center).tolist())

    def _quickxplain(self, kind: str, key: Key, order: Sequence[int]) -> tuple[Key, str, np.ndarray | None]:
        """QuickXplain: a minimal item inside `key` by recursive halving (Junker, AAAI 2004).

        UNKNOWN counts as "not an item", which keeps the result an item; the result is then
        re-checked by deletion, which labels its minimality."""
        unknown = False

        def positive(elements: list[Hashable]) -> bool:
            nonlocal unknown
            answer = self._ask([self._query(kind, frozenset(elements))])[0]
            unknown |= answer.verdict == Verdict.UNKNOWN
            return self._positive(kind, answer)

        def qx(base: list[Hashable], delta: bool, candidates: list[Hashable]) -> list[Hashable]:
            if delta and positive(base):
                return []
            if len(candidates) == 1:
                return candidates
            half = len(candidates) // 2
            first, second = candidates[:half], candidates[half:]
            kept_second = qx(base + first, bool(first), second)
            kept_first = qx(base + kept_second, bool(kept_second), first)
            return kept_first + kept_second

        elements = self._sorted(key, order)
        result = frozenset([] if positive([]) or not elements else qx([], False, elements))
        if unknown:
            return self._reduce(kind, result, None, order)
        final = self._ask([self._query(kind, result)])[0]  # a witness of the result itself (cache hit)
        if not self._positive(kind, final):
            return self._reduce(kind, result, None, order)
        return result, CERTIFIED, final.witness

    def _cxp_witness(self, key: Key, witness: np.ndarray | None) -> np.ndarray | None:
        """A checked witness for the counterexample `key`: the given one or (absolute mode) the
        completion of its literals by the instance's values; None if neither checks."""
        fixed = self._query("cxp", key).array
        candidates = [] if witness is None else [np.asarray(witness, dtype=np.float64)]
        if self.mode == "absolute":
            candidates.append(np.where(np.isnan(fixed), self.problem.center, fixed))
        for values in candidates:
            if self.problem.confirm(values, fixed, self.negate)[0]:
                return values
        return None

    # ---------------------------------------------------------------- single explanations
    def axp(self, order: str = "index", method: str = "deletion", seed: int = 0) -> Explanation:
        """One explanation contained in the instance's own patch: deletion in a traversal order
        ("index", "sensitivity", "random") or QuickXplain (method="quickxplain")."""
        if method not in METHODS:
            raise ProfitError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
        start = self._instance_key()
        if self.problem.keeps(self.problem.logits(self.problem.center[None]))[0] == self.negate:
            raise ProfitError(f"the instance does not satisfy target {self.target_name}: no explanation "
                              f"is contained in its patch")
        ranks = self._order(order, seed)
        if method == "quickxplain":
            key, minimality, _ = self._quickxplain("axp", start, ranks)
        else:
            key, minimality, _ = self._reduce("axp", start, None, ranks)
        return self._item("axp", key, minimality, None)

    def cxp(self, witness: Tensor | np.ndarray, order: str = "index", method: str = "deletion",
            seed: int = 0) -> Explanation:
        """A minimal counterexample (CXp) contained in a witness: an input inside the region
        (flat, (n_in,) or the network's shape; or just the n patch values) violating the target."""
        w = np.asarray(torch.as_tensor(witness).detach().double().reshape(-1))
        problem = self.problem
        if w.size == problem.instance.size:
            outside = np.ones(w.size, dtype=bool)
            outside[problem.patch_index] = False
            if not np.array_equal(w[outside], problem.instance[outside]):
                raise ProfitError("the witness changes pixels outside the patch")
            w = w[problem.patch_index]
        if w.size != problem.n:
            raise ProfitError(f"a witness has {problem.instance.size} values (or {problem.n} patch values), "
                              f"got {w.size}")
        all_free = np.full(problem.n, np.nan)
        if not problem.confirm(w, all_free, self.negate)[0]:
            raise ProfitError(f"the witness is not a checked counterexample: it lies outside the domain or "
                              f"satisfies target {self.target_name}")
        start = frozenset(range(problem.n)) if self.mode == "local" else self._witness_key(w)
        ranks = self._order(order, seed)
        if method == "quickxplain":
            key, minimality, found = self._quickxplain("cxp", start, ranks)
        else:
            key, minimality, found = self._reduce("cxp", start, w, ranks)
        checked = self._cxp_witness(key, found if found is not None else w)
        if checked is None:
            raise ProfitError("could not check a witness for the reduced counterexample")
        return self._item("cxp", key, minimality, checked)

    # ---------------------------------------------------------------- enumeration
    def enumerate(self, kind: str = "axp", limit: int | None = None, timeout: float | None = None,
                  trace: Callable[[Step], None] | None = None) -> Enumeration:
        """An Enumeration enumerating explanations ("axp"), counterexamples ("cxp") or both, in turn.

        limit: at most this many items of each enumerated kind; timeout: seconds for the
        whole run; trace: called with every candidate the hitting-set solver proposes.
        Iterating the Enumeration yields every item found (of either kind) as it is found.
        """
        if kind not in ENUMS:
            raise ProfitError(f"unknown kind '{kind}' (choose from {', '.join(ENUMS)})")
        if limit is not None and limit < 1:
            raise ProfitError(f"limit must be >= 1, got {limit}")
        if timeout is not None and not timeout > 0:
            raise ProfitError(f"timeout must be > 0 seconds, got {timeout}")
        return Enumeration(self, kind, limit, timeout, trace)

    def _loop(self, run: Enumeration, kind: str, deadline: float | None) -> Iterator[Explanation]:
        """Enumerate items of `kind` by hitting the dual items (see the module docstring)."""
        dual = "cxp" if kind == "axp" else "axp"
        order = self._order(self.options.order, self.options.seed)
        excluded: list[Key] = []
        with HittingSets(self._universe, self.options.htype, self._conflicts) as sets:
            for key in run.keys[dual]:
                sets.hit(self._breakers(key))
            for key in run.keys[kind]:
                sets.block(key)
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    run._stop("timeout")
                    break
                candidate = sets.get()
                run.hitting_seconds += sets.seconds
                sets.seconds = 0.0
                if candidate is None:
                    run.complete.add(kind)
                    break
                if run.limit is not None and run.found[kind] >= run.limit:
                    run._stop("limit")
                    break
                answer = self._ask([self._query(kind, candidate)], deadline=deadline)[0]
                run.candidates += 1
                if run.trace is not None:
                    run.trace(Step(run.candidates, kind, self._literals(kind, candidate), answer.verdict,
                                   answer.stage))
                if answer.verdict == Verdict.UNKNOWN:
                    run._stop("unknown")
                    excluded.append(candidate)
                    sets.exclude(candidate)
                elif self._positive(kind, answer):
                    key, minimality, witness = candidate, CERTIFIED, answer.witness
                    if any(u < candidate for u in excluded):
                        key, minimality, witness = self._reduce(kind, candidate, witness, order, deadline)
                    item = self._report(run, kind, key, minimality, witness)
                    if item is None:
                        excluded.append(candidate)
                        sets.exclude(candidate)
                        continue
                    sets.block(key)
                    yield item
                else:
                    seed, witness = self._seed(kind, candidate, answer)
                    key, minimality, witness = self._reduce(dual, seed, witness, order, deadline)
                    item = self._report(run, dual, key, minimality, witness)
                    if item is None:
                        excluded.append(candidate)
                        sets.exclude(candidate)
                        continue
                    sets.hit(self._breakers(key))
                    yield item

    def _seed(self, kind: str, candidate: Key, answer: Answer) -> tuple[Key, np.ndarray | None]:
        """The dual item a refuted candidate yields, before reduction."""
        n = self.problem.n
        if self.mode == "local":
            if kind == "axp":  # fixing the candidate admits the witness: free what it changes
                return frozenset(self._changed(answer.witness)), answer.witness
            return frozenset(range(n)) - candidate, None  # freeing it is proved safe: fix the rest
        return self._witness_key(answer.witness), answer.witness

    def _report(self, run: Enumeration, kind: str, key: Key, minimality: str, witness: np.ndarray | None
                ) -> Explanation | None:
        """Record a new item (None if a cxp's witness fails its check, which makes the run partial)."""
        if kind == "cxp":
            witness = self._cxp_witness(key, witness)
            if witness is None:
                run._stop("unknown")
                return None
        else:
            witness = None
        if key in run.known[kind]:
            return None
        run.keys[kind].append(key)
        run.known[kind].add(key)
        run.found[kind] += 1
        item = self._item(kind, key, minimality, witness)
        run.items.append(item)
        if minimality != CERTIFIED:
            run._stop("unknown")
        return item

    def adversarial(self, cxp: Explanation) -> Adversarial:
        """The instance with a counterexample's literal values written in (local mode: its
        witness), and the class the network predicts for it in float64 and onnxruntime."""
        problem = self.problem
        if self.mode == "local":
            x = np.asarray(cxp.witness, dtype=np.float64)
        else:
            x = problem.instance.copy()
            for pixel, value in cxp.literals:
                x[pixel] = value
        y = problem.logits(x[problem.patch_index][None])[0]
        runtime = None
        if problem.onnx is not None:
            t = torch.from_numpy(x).float().reshape(1, *self.net.input_shape)
            runtime = int(np.argmax(onnx_outputs(problem.onnx, self.net, t).numpy()[0]))
        violates = bool(problem.keeps(y[None])[0] == self.negate)
        return Adversarial(x, int(np.argmax(y)), runtime, violates)


@dataclass(frozen=True, eq=False)
class Adversarial:
    """An adversarial example built from a counterexample, and what the network makes of it."""

    input: np.ndarray  # (n_in,) flat
    predicted: int  # class by the float64 forward pass (argmax, lowest index on ties)
    runtime_predicted: int | None  # class by onnxruntime (None without an ONNX file)
    violates: bool  # whether it violates the target (float64 forward pass)


class Enumeration:
    """An enumeration: iterate it for Explanations; afterwards `status` is "complete" or
    "partial" (why: `reasons`, among "unknown", "limit", "timeout") and `stats()` sums it up."""

    def __init__(self, explainer: Explainer, kind: str, limit: int | None, timeout: float | None,
                 trace: Callable[[Step], None] | None) -> None:
        self.explainer, self.kind, self.limit, self.timeout, self.trace = explainer, kind, limit, timeout, trace
        self.items: list[Explanation] = []
        self.keys: dict[str, list[Key]] = {"axp": [], "cxp": []}
        self.known: dict[str, set[Key]] = {"axp": set(), "cxp": set()}
        self.found: Counter[str] = Counter()
        self.complete: set[str] = set()
        self.reasons: set[str] = set()
        self.candidates = 0
        self.hitting_seconds = 0.0
        self.started = time.monotonic()
        self.seconds = 0.0
        self._nodes_before = getattr(explainer.oracle, "search_nodes", 0)
        self._calls_before = Counter(explainer.oracle.calls)
        self._seconds_before = Counter(explainer.oracle.seconds)
        self._done = False

    def _stop(self, reason: str) -> None:
        self.reasons.add(reason)

    def __iter__(self) -> Iterator[Explanation]:
        if self._done:
            yield from self.items
            return
        self.started = time.monotonic()
        deadline = None if self.timeout is None else self.started + self.timeout
        kinds = ["axp", "cxp"] if self.kind == "both" else [self.kind]
        for kind in kinds:
            yield from self.explainer._loop(self, kind, deadline)
        self.seconds = time.monotonic() - self.started
        self._done = True

    def run(self) -> Enumeration:
        """Iterate to the end; returns self."""
        for _ in self:
            pass
        return self

    @property
    def status(self) -> str:
        wanted = {"axp", "cxp"} if self.kind == "both" else {self.kind}
        return "complete" if wanted <= self.complete and not self.reasons else "partial"

    @property
    def explanations(self) -> list[Explanation]:
        return [e for e in self.items if e.kind == "axp"]

    @property
    def counterexamples(self) -> list[Explanation]:
        return [e for e in self.items if e.kind == "cxp"]

    def stats(self) -> dict:
        """Counts, sizes, oracle calls and seconds by stage, times."""
        oracle = self.explainer.oracle
        calls = Counter(oracle.calls)
        calls.subtract(self._calls_before)
        seconds = Counter(oracle.seconds)
        seconds.subtract(self._seconds_before)

        def sizes(items: list[Explanation]) -> dict:
            s = [e.size for e in items]
            return {"min": min(s), "max": max(s), "avg": round(sum(s) / len(s), 3)} if s else \
                {"min": None, "max": None, "avg": None}

        n_expl = len(self.explanations)
        return {
            "free_pixels": self.explainer.problem.n,
            "explanations": n_expl,
            "counterexamples": len(self.counterexamples),
            "explanation_sizes": sizes(self.explanations),
            "counterexample_sizes": sizes(self.counterexamples),
            "status": self.status,
            "partial_because": sorted(self.reasons),
            "complete_kinds": sorted(self.complete),
            "candidates": self.candidates,
            "oracle_calls": {k: v for k, v in calls.items() if v},
            "oracle_seconds": {k: round(v, 4) for k, v in seconds.items() if v > 0},
            "hitting_set_seconds": round(self.hitting_seconds, 4),
            "seconds": round(self.seconds, 4),
            "seconds_per_explanation": round(self.seconds / n_expl, 4) if n_expl else None,
            "search_nodes": getattr(oracle, "search_nodes", 0) - self._nodes_before,
        }

    def to_json(self) -> dict:
        """The --json document (network, instance, class, mode, domain, patch, explanations,
        counterexamples, status, stats); the caller adds the instance index."""
        ex = self.explainer
        classes = ex.target_classes
        return {
            "network": ex.net.source,
            "class": classes[0] if not ex.negate else classes,
            "mode": ex.mode,
            "domain": str(ex.problem.domain),
            "margin": ex.problem.margin,
            "patch": list(ex.problem.patch),
            "explanations": [{"literals": [[p, v] for p, v in e.literals], "minimality": e.minimality}
                             for e in self.explanations],
            "counterexamples": [{"literals": [[p, v] for p, v in e.literals], "minimality": e.minimality,
                                 "witness": [float(v) for v in e.witness]} for e in self.counterexamples],
            "status": self.status,
            "stats": self.stats(),
        }


# ---------------------------------------------------------------------------- text

def read_patch(text: str | Path) -> list[int]:
    """Pixel indices from a file of comma- (or whitespace-) separated row-major indices, or from
    the list itself ("431,432,458"). ProfitError if neither parses."""
    path = Path(text)
    source = str(text)
    if path.is_file():
        source = path.read_text()
    elif not any(ch.isdigit() for ch in source) or any(ch.isalpha() for ch in source):
        raise ProfitError(f"{text}: no such patch file (give a file of pixel indices or a list like 431,432)")
    tokens = source.replace(",", " ").split()
    try:
        pixels = [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise ProfitError(f"{text}: '{bad}' is not a pixel index") from None
    if not pixels:
        raise ProfitError(f"{text}: the patch lists no pixels")
    return pixels


def parse_target(text: str) -> int | str:
    """'true', 'opposite' or a class index."""
    if text in ("true", "opposite"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ProfitError(f"class must be 'true', 'opposite' or a class index, got '{text}'") from None


def _literal_text(literals: Sequence[tuple[int, float]]) -> str:
    return " ".join(f"{p}={v:.4g}" for p, v in literals) or "(empty)"


def format_item(e: Explanation, number: int) -> str:
    """One terminal line for an explanation or counterexample."""
    name = "expl" if e.kind == "axp" else "cex "
    return f"{name} {number:>5}: size {e.size:>3}  {_literal_text(e.literals)}  [{e.minimality}, " \
           f"{e.oracle_calls} oracle calls]"


def format_step(step: Step) -> str:
    """One terminal line for a candidate of the enumeration."""
    return f"cand {step.index:>5}: {step.kind} {_literal_text(step.literals)} -> {step.verdict.value} ({step.stage})"


def summary_lines(run: Enumeration) -> list[str]:
    """The closing summary: counts, sizes, status, oracle calls by stage, times."""
    st = run.stats()

    def sizes(key: str) -> str:
        s = st[key]
        return "" if s["min"] is None else f" (sizes {s['min']}-{s['max']}, avg {s['avg']:.2f})"
    status = st["status"] + (f" ({', '.join(st['partial_because'])})" if st["partial_because"] else "")
    calls = st["oracle_calls"]
    per = st["seconds_per_explanation"]
    return [
        f"free pixels: {st['free_pixels']}",
        f"explanations: {st['explanations']}{sizes('explanation_sizes')}",
        f"counterexamples: {st['counterexamples']}{sizes('counterexample_sizes')}",
        f"status: {status}",
        f"oracle calls: {sum(calls.values())} (" + ", ".join(f"{k} {v}" for k, v in calls.items()) + ")",
        "oracle seconds: " + (", ".join(f"{k} {v:.2f}" for k, v in st["oracle_seconds"].items()) or "-"),
        f"time: {st['seconds']:.2f} s, {'-' if per is None else f'{per:.3f}'} s per explanation, "
        f"hitting sets {st['hitting_set_seconds']:.2f} s, {st['candidates']} candidates",
    ]


__all__ = [
    "Adversarial", "CERTIFIED", "ENUMS", "Enumeration", "ExplainOptions", "Explainer", "Explanation", "MODES",
    "Step", "format_item", "format_step", "parse_target", "read_patch", "summary_lines",
]
