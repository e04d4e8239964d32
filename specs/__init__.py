"""Specifications: what a verifier is asked to prove.

- Input regions (`specs.regions`): batched boxes `Box(lower, upper)` of shape (B, *input_shape)
  and the constructors `linf_ball`, `patch`, `patch_linf`; `inner_box` / `strictly_inside` for
  the float32 boxes inside a real one where counterexamples must lie.
- Output properties (`specs.properties`): `Spec`, a conjunction of clauses, each a disjunction
  of linear rows C y + d > 0 over the network outputs y; `margin` decides it at a point and
  `proven` decides it soundly from lower bounds on the rows. `robustness` and `from_unsafe`
  build the common cases.
- VNN-LIB (`specs.vnnlib`): `parse_vnnlib` turns a VNN-COMP property file into a list of
  `VnnlibProblem(box, spec)`; `write_counterexample` writes the VNN-COMP 'sat' answer.
"""

from specs.properties import Spec, SpecError, from_unsafe, robustness
from specs.regions import Box, RegionError, inner_box, linf_ball, patch, patch_linf, strictly_inside
from specs.vnnlib import VnnlibError, VnnlibProblem, parse_vnnlib, write_counterexample

__all__ = [
    "Box",
    "RegionError",
    "Spec",
    "SpecError",
    "VnnlibError",
    "VnnlibProblem",
    "from_unsafe",
    "inner_box",
    "linf_ball",
    "parse_vnnlib",
    "patch",
    "patch_linf",
    "robustness",
    "strictly_inside",
    "write_counterexample",
]
