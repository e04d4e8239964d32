"""Minimal hitting sets of a growing family of sets, with python-sat's Hitman.

    sets = HittingSets(universe, htype="rc2")
    sets.hit({1, 2}); sets.hit({2, 3})
    sets.get()              # frozenset({2}): a minimal hitting set of everything hit so far
    sets.block({2})         # no later answer contains {2}
    sets.exclude({1, 3})    # no later answer is exactly {1, 3} (supersets stay allowed)

`htype` picks the enumerator: "rc2" (MaxSAT, cardinality-minimal sets first), "lbx"
or "mcsls" (minimal correction subsets, subset-minimal sets in no particular order).
Every answer is a subset-minimal set satisfying all constraints added so far: it hits
every hit set, contains no blocked set, is no excluded set and contains no pair of
`conflicts` (at most one of each pair: the literals (pixel, a), (pixel, b) of an
assignment). Reference: Ignatiev, Previti, Liffiton, Marques-Silva, "Smallest MUS
extraction with minimal hitting set dualization", CP 2015 (Hitman).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Sequence

from pysat.examples.hitman import Atom, Hitman

from profit.errors import ProfitError

HTYPES = ("rc2", "lbx", "mcsls")


class HittingSets:
    """A Hitman over the objects of `universe` (hashable, e.g. pixel indices or (pixel, value))."""

    def __init__(self, universe: Sequence[Hashable], htype: str = "rc2",
                 conflicts: Iterable[tuple[Hashable, Hashable]] = ()) -> None:
        if htype not in HTYPES:
            raise ProfitError(f"unknown hitting-set enumerator '{htype}' (choose from {', '.join(HTYPES)})")
        self.universe = list(universe)
        self.htype = htype
        self._hitman = Hitman(htype=htype)
        self.seconds = 0.0  # time spent inside the enumerator
        for a, b in conflicts:
            self._hitman.block([a, b])

    def hit(self, objects: Iterable[Hashable]) -> None:
        """Every later answer contains an element of `objects`."""
        self._hitman.hit(list(objects))

    def block(self, objects: Iterable[Hashable]) -> None:
        """No later answer contains all of `objects`."""
        self._hitman.block(list(objects))

    def exclude(self, objects: Iterable[Hashable]) -> None:
        """No later answer equals `objects` exactly: the clause (not all of it) or (some other object)."""
        chosen = set(objects)
        clause = [Atom(o, False) for o in chosen] + [Atom(o, True) for o in self.universe if o not in chosen]
        self._hitman.add_hard(clause)

    def get(self) -> frozenset | None:
        """A minimal set satisfying every constraint, or None when there is none left."""
        start = time.perf_counter()
        found = self._hitman.get()
        self.seconds += time.perf_counter() - start
        return None if found is None else frozenset(found)

    def close(self) -> None:
        """Free the SAT solvers."""
        self._hitman.delete()

    def __enter__(self) -> HittingSets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
