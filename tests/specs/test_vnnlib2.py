"""VNN-LIB 2.0 -> 1.0 translation: indices flatten row-major, one network only, errors name the line."""

from __future__ import annotations

import pytest
import torch

from specs.vnnlib import VnnlibError
from specs.vnnlib2 import Vnnlib2Unsupported, translate

HEAD = """(vnnlib-version <2.0>)
(declare-network N
    (declare-input X float32 [2, 3])
    (declare-output Y real [1,2])
)
"""


def test_indices_flatten_row_major() -> None:
    text = HEAD + "".join(f"(assert (and (>= X[{i}, {j}] {i}) (<= X[{i},{j}] {j + 10})))\n"
                          for i in range(2) for j in range(3)) + "(assert (<= Y[0,1] Y[0, 0]))\n"
    query = translate(text)
    assert query.network == "N" and query.input.shape == (2, 3) and query.output.shape == (1, 2)
    (problem,) = query.problems()
    assert problem.box.lower.tolist() == [[0, 0, 0, 1, 1, 1]]
    assert problem.box.upper.tolist() == [[10, 11, 12, 10, 11, 12]]
    y_safe, y_unsafe = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert bool(problem.spec.holds(y_safe)[0]) and not bool(problem.spec.holds(y_unsafe)[0])


def test_exactly_representable_bounds_stay_in_the_attack_box() -> None:
    text = HEAD.replace("[2, 3]", "[1]") + "(assert (>= X[0] 1.0))\n(assert (<= X[0] 2.1))\n(assert (<= Y[0,0] 1))"
    (problem,) = translate(text).problems()
    assert problem.inner is not None and float(problem.inner.lower) == 1.0  # exact: kept
    assert float(problem.inner.upper) < 2.1 < float(problem.box.upper)  # rounded: inside / outside


def test_two_networks_are_unsupported() -> None:
    second = "(declare-network M (declare-input A float32 [1]) (declare-output B float32 [1]))\n"
    with pytest.raises(Vnnlib2Unsupported, match="2 networks"):
        translate(HEAD + second + "(assert (<= X[0,0] 1))")


def test_hidden_tensors_come_first_in_y() -> None:
    hidden = HEAD.replace("    (declare-output", '    (declare-hidden H float32 [3] "h")\n    (declare-output')
    query = translate(hidden + "(assert (<= H[2] Y[0, 1]))")
    assert [v.tensor for v in query.hidden] == ["h"] and query.n_outputs == 5
    assert "(<= Y_2 Y_4)" in query.text


def test_integer_types_are_unsupported() -> None:
    with pytest.raises(Vnnlib2Unsupported, match="int64"):
        translate(HEAD.replace("real", "int64"))


def test_errors_name_the_line_of_the_query() -> None:
    text = HEAD + "(assert (<= X[0,0] 1))\n\n(assert (<= X[2,0] 1))\n"
    with pytest.raises(VnnlibError, match=r"q.vnnlib:8: index X\[2,0\] out of range"):
        translate(text, "q.vnnlib")
    text = HEAD + "(assert (>= X[0,0] 0))\n(assert (<= Z[0] 1))\n"
    with pytest.raises(VnnlibError, match="q.vnnlib:7: undeclared variable 'Z'"):
        translate(text, "q.vnnlib")


def test_comparisons_on_one_line_tokenize() -> None:
    text = HEAD.replace("[2, 3]", "[1]") + "(assert (and (<= X[0] 1) (>= X[0] 0) (or (> Y[0,0] 2) (< Y[0,1] -1))))"
    (problem,) = translate(text).problems()
    assert problem.box.upper.tolist() == [[1.0]] and problem.spec.n_clauses == 2
