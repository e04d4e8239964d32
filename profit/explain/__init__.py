"""Formal explanations without MILP: abductive (AXp) and contrastive (CXp) explanations of a
decision over a pixel patch, enumerated by hitting-set duality with the project's verifier as
the oracle.

    explainer = Explainer(net, x, patch, PixelDomain.parse("binary"))
    for e in explainer.enumerate("both", limit=100, timeout=60):     # an Enumeration
        print(e.kind, e.literals, e.minimality)

`problem`: the question (PixelDomain, Problem, Query, Answer); `oracle`: the cascade of
attacks, bounds and complete search that answers queries; `hitting`: the hitting-set
enumerator (python-sat); `explainer`: the enumeration. Pictures: `profit.viz.explain`.
"""

from profit.explain.explainer import (
    CERTIFIED, ENUMS, MODES, Adversarial, Enumeration, ExplainOptions, Explainer, Explanation, Step, format_item,
    format_step, parse_target, read_patch, summary_lines,
)
from profit.explain.hitting import HTYPES, HittingSets
from profit.explain.oracle import STAGES, BruteForceOracle, CascadeOracle, Oracle, OracleOptions
from profit.explain.problem import Answer, PixelDomain, Problem, Query, completions

__all__ = [
    "Adversarial", "Answer", "BruteForceOracle", "CERTIFIED", "CascadeOracle", "ENUMS", "Enumeration",
    "ExplainOptions", "Explainer", "Explanation", "HTYPES", "HittingSets", "MODES", "Oracle", "OracleOptions",
    "PixelDomain", "Problem", "Query", "STAGES", "Step", "completions", "format_item", "format_step",
    "parse_target", "read_patch", "summary_lines",
]
