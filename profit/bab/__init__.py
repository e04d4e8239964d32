"""Complete verification: branch and bound over the domains, with counterexample search.

    outcome = check(net, region, spec, timeout=60)     # Proven | Counterexample | Unknown

`check` / `check_problems` (`profit.bab.driver`) are the entry points; `search` holds the
loop's shared parts (options, pool, clock); `input_split` and `relu_split` are the two
splitting modes. Imports go driver -> {input_split, relu_split} -> search: no circle.
"""

from profit.bab.driver import check, check_problems
from profit.bab.search import BabOptions
from profit.outcomes import BabStats, Counterexample, Outcome, Proven, Unknown

__all__ = ["BabOptions", "BabStats", "Counterexample", "Outcome", "Proven", "Unknown", "check", "check_problems"]
