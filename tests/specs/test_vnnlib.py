"""Tests of specs.vnnlib: hand-written texts for each construct and error, the VNN-COMP 2021 files."""

import csv
import gzip
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from specs import VnnlibError, linf_ball, parse_vnnlib, robustness, write_counterexample

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VNNCOMP = SHARED / "benchmarks" / "vnncomp2021"
needs_vnncomp = pytest.mark.skipif(not VNNCOMP.is_dir(), reason=f"VNN-COMP 2021 benchmarks not found at {VNNCOMP}")

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOUNDS = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n(assert (<= X_1 1))\n"


# ---------------------------------------------------------------- constructs


def test_simple_box_and_output_constraint() -> None:
    (p,) = parse_vnnlib(HEADER + BOUNDS + "(assert (>= Y_0 Y_1))")
    assert p.box.lower.tolist() == [[0.0, -1.0]]
    assert p.box.upper.tolist() == [[1.0, 1.0]]
    # unsafe Y_1 - Y_0 <= 0  ->  safe Y_1 - Y_0 > 0
    assert p.spec.C.tolist() == [[[-1.0, 1.0]]]
    assert p.spec.d.tolist() == [[0.0]]
    assert p.spec.holds(torch.tensor([[0.0, 1.0]])).item()
    assert not p.spec.holds(torch.tensor([[1.0, 1.0]])).item()  # equality is unsafe


def test_numbers_comments_and_constant_on_the_left() -> None:
    text = """; a comment (with parentheses
(declare-const X_0 Real) ; trailing comment
(declare-const Y_0 Real)
(assert (<= -5e-1 X_0))
(assert (>= 2.5E+0 X_0))
(assert (>= (- 0.25) Y_0))
"""
    (p,) = parse_vnnlib(text)
    assert p.box.lower.tolist() == [[-0.5]]
    assert p.box.upper.tolist() == [[2.5]]
    # unsafe Y_0 <= -0.25 -> safe Y_0 + 0.25 > 0
    assert p.spec.C.tolist() == [[[1.0]]] and p.spec.d.tolist() == [[0.25]]


def test_linear_output_expressions() -> None:
    text = HEADER + BOUNDS + "(assert (<= (+ Y_0 (* 2 Y_1) -1) (- (* Y_1 0.5) (/ Y_0 4) 3)))"
    (p,) = parse_vnnlib(text)
    # Y_0 + 2 Y_1 - 1 <= 0.5 Y_1 - 0.25 Y_0 - 3  <=>  1.25 Y_0 + 1.5 Y_1 <= -2
    assert p.spec.C.tolist() == [[[1.25, 1.5]]]
    assert p.spec.d.tolist() == [[2.0]]


def test_strict_comparisons_read_as_non_strict() -> None:
    strict_text = "(assert (> X_0 0)) (assert (< X_0 1)) (assert (> X_1 0)) (assert (< X_1 1)) (assert (< Y_0 1))"
    loose_text = "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0)) (assert (<= X_1 1)) (assert (<= Y_0 1))"
    (strict,) = parse_vnnlib(HEADER + strict_text)
    (loose,) = parse_vnnlib(HEADER + loose_text)
    assert torch.equal(strict.box.lower, loose.box.lower) and torch.equal(strict.box.upper, loose.box.upper)
    assert torch.equal(strict.spec.C, loose.spec.C) and torch.equal(strict.spec.d, loose.spec.d)


def test_chained_comparison_equality_and_tightest_bound() -> None:
    text = HEADER + "(assert (<= -1 X_0 1)) (assert (<= X_0 0.5)) (assert (= X_1 0.25)) (assert (<= Y_0 0))"
    (p,) = parse_vnnlib(text)
    assert p.box.lower.tolist() == [[-1.0, 0.25]]
    assert p.box.upper.tolist() == [[0.5, 0.25]]


def test_output_disjunction_becomes_clauses() -> None:
    text = HEADER + BOUNDS + "(assert (or (and (<= Y_0 1) (<= Y_1 2)) (and (>= Y_0 Y_1))))"
    (p,) = parse_vnnlib(text)
    assert p.spec.n_clauses == 2
    assert p.spec.clause.tolist() == [0, 0, 1]
    y = torch.tensor([[0.0, 0.0], [5.0, 7.0], [5.0, 1.0]])
    assert p.spec.expand(3).holds(y).tolist() == [False, True, False]


def test_nested_formula_is_expanded() -> None:
    # Y_0 <= 0 and (Y_1 <= 0 or (Y_1 >= 5 and (Y_0 >= -1 or Y_1 >= 9)))
    text = HEADER + BOUNDS + "(assert (and (<= Y_0 0) (or (<= Y_1 0) (and (>= Y_1 5) (or (>= Y_0 -1) (>= Y_1 9))))))"
    (p,) = parse_vnnlib(text)
    assert p.spec.n_clauses == 3
    for y0, y1 in [(-0.5, -1.0), (1.0, -1.0), (-0.5, 6.0), (-3.0, 6.0), (-3.0, 10.0), (-0.5, 3.0)]:
        unsafe = y0 <= 0 and (y1 <= 0 or (y1 >= 5 and (y0 >= -1 or y1 >= 9)))
        assert bool(p.spec.holds(torch.tensor([[y0, y1]]))) == (not unsafe), (y0, y1)


def test_input_disjunction_gives_one_problem_per_box() -> None:
    text = HEADER + """
(assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 2) (<= X_0 3))))
(assert (>= X_1 0)) (assert (<= X_1 1))
(assert (or (>= Y_0 1) (<= Y_1 -1)))
"""
    problems = parse_vnnlib(text)
    assert [p.box.lower[0, 0].item() for p in problems] == [0.0, 2.0]
    assert [p.spec.n_clauses for p in problems] == [2, 2]


def test_mixed_or_is_grouped_by_box() -> None:
    text = HEADER + """
(assert (>= X_1 0)) (assert (<= X_1 1))
(assert (or
    (and (>= X_0 0) (<= X_0 1) (>= Y_0 1))
    (and (>= X_0 2) (<= X_0 3) (>= Y_0 1))
    (and (<= X_0 1) (>= X_0 0) (<= Y_0 -1) (<= Y_1 0))
    (and (>= X_0 5) (<= X_0 4) (>= Y_0 1))
))
"""
    problems = parse_vnnlib(text)  # the last conjunct's box is empty: dropped
    assert [(p.box.lower[0, 0].item(), p.box.upper[0, 0].item()) for p in problems] == [(0.0, 1.0), (2.0, 3.0)]
    first, second = problems
    assert first.spec.n_clauses == 2 and first.spec.clause.tolist() == [0, 1, 1]
    assert second.spec.n_clauses == 1


def test_input_only_conjunct_is_always_unsafe() -> None:
    (p,) = parse_vnnlib(HEADER + BOUNDS)
    assert not p.spec.holds(torch.tensor([[123.0, -45.0]])).any()


def test_unsatisfiable_formula_has_no_problems() -> None:
    assert parse_vnnlib(HEADER + BOUNDS + "(assert (<= Y_0 0)) (assert (or false (<= 1 0)))") == []


def test_dnf_blow_up_is_refused() -> None:
    ors = "".join(f"(assert (or (<= Y_0 {k}) (<= Y_1 {k})))\n" for k in range(17))
    with pytest.raises(VnnlibError, match="more than 100000 disjuncts"):
        parse_vnnlib(HEADER + BOUNDS + ors)


def test_sizes_from_arguments() -> None:
    (p,) = parse_vnnlib(HEADER + BOUNDS + "(assert (<= Y_0 0))", n_inputs=2, n_outputs=4)
    assert p.box.shape == (2,) and p.spec.n_outputs == 4


def test_reads_files_and_gzip(tmp_path: Path) -> None:
    text = HEADER + BOUNDS + "(assert (<= Y_0 0))"
    plain, packed = tmp_path / "p.vnnlib", tmp_path / "p.vnnlib.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    for source in (plain, str(plain), packed):
        (p,) = parse_vnnlib(source)
        assert p.box.upper.tolist() == [[1.0, 1.0]]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("(assert (<= Y_0 0)\n", 5, r"'\(' is never closed"),
        ("(assert (<= Y_0 0)))\n", 5, r"unexpected '\)'"),
        ("\n(assert (foo Y_0 0))", 6, "unknown operator 'foo'"),
        ("(assert (<= (sin Y_0) 0))", 5, "unknown operator 'sin'"),
        ("(assert (<= Y_7 0))", 5, "undeclared variable 'Y_7'"),
        ("(assert (<= Y_0 @))", 5, "unknown token '@'"),
        ("(assert (<= Y_0 1.2.3))", 5, "unknown token '1.2.3'"),
        ("(assert (<= X_0 Y_0))", 5, "mixes inputs X and outputs Y"),
        ("(assert (<= (+ X_0 X_1) 1))", 5, "linear input constraints"),
        ("(assert (<= (* Y_0 Y_1) 1))", 5, "nonlinear"),
        ("(assert (<= (/ Y_0 0) 1))", 5, "non-zero constant divisor"),
        ("(assert (<= Y_0))", 5, "at least two arguments"),
        ("(check-sat)", 5, "unknown command 'check-sat'"),
        ("(declare-const Z_0 Real)", 5, "unsupported variable name 'Z_0'"),
        ("(declare-const X_2 Int)", 5, "unsupported sort 'Int'"),
        ("(declare-const X_0 Real)", 5, "X_0 declared twice"),
        ("(assert (or (<= Y_0 0) Y_1))", 5, "expected a formula"),
        ("X_0", 5, "outside parentheses"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = tmp_path / "spec.vnnlib"
    path.write_text(HEADER + body)  # HEADER is lines 1-4
    with pytest.raises(VnnlibError, match=f"^{re.escape(str(path))}:{line}: .*{message}"):
        parse_vnnlib(path)


def test_error_in_text_names_string() -> None:
    with pytest.raises(VnnlibError, match="^<string>:1: unknown operator 'foo'"):
        parse_vnnlib("(assert (foo 1 2))")


def test_missing_bound_points_at_the_declaration() -> None:
    text = HEADER + "(assert (>= X_0 0)) (assert (<= X_0 1)) (assert (>= X_1 0))"
    with pytest.raises(VnnlibError, match="^<string>:2: X_1 has no upper bound"):
        parse_vnnlib(text)
    with pytest.raises(VnnlibError, match="X_2 has no lower bound .not declared"):
        parse_vnnlib(HEADER + BOUNDS, n_inputs=3)


def test_missing_bound_in_one_disjunct() -> None:
    text = HEADER + "(assert (>= X_1 0)) (assert (<= X_1 1)) (assert (or (and (>= X_0 0) (<= X_0 1)) (>= X_0 2)))"
    with pytest.raises(VnnlibError, match="<string>:1: X_0 has no upper bound"):
        parse_vnnlib(text)


def test_indices_beyond_given_sizes() -> None:
    with pytest.raises(VnnlibError, match="<string>:2: X_1 out of range for n_inputs=1"):
        parse_vnnlib(HEADER + BOUNDS, n_inputs=1)
    with pytest.raises(VnnlibError, match="<string>:4: Y_1 out of range for n_outputs=1"):
        parse_vnnlib(HEADER + BOUNDS, n_outputs=1)


def test_missing_file() -> None:
    with pytest.raises(VnnlibError, match="nope.vnnlib:0: cannot read"):
        parse_vnnlib(Path("/nonexistent/nope.vnnlib"))


# ---------------------------------------------------------------- counterexample text


def test_write_counterexample_exact_text() -> None:
    text = write_counterexample(torch.tensor([0.5, -1.0]), torch.tensor([[2.25]]))
    assert text == "sat\n((X_0 0.5)\n (X_1 -1.0)\n (Y_0 2.25))\n"


def test_write_counterexample_round_trips_float32() -> None:
    x = torch.rand(7, generator=torch.Generator().manual_seed(0))
    y = torch.randn(3, generator=torch.Generator().manual_seed(1))
    text = write_counterexample(x, y)
    pairs = re.findall(r"\((X|Y)_(\d+) ([^\s)]+)\)", text)
    assert len(pairs) == 10
    values = [float(v) for _, _, v in pairs]
    assert torch.equal(torch.tensor(values[:7], dtype=torch.float32), x)
    assert torch.equal(torch.tensor(values[7:], dtype=torch.float32), y)


# ---------------------------------------------------------------- VNN-COMP 2021 files


@needs_vnncomp
@pytest.mark.parametrize("folder", ["test", "mnistfc", "acasxu"])
def test_every_benchmark_file_parses(folder: str) -> None:
    files = sorted((VNNCOMP / folder).glob("*.vnnlib"))
    assert files
    for f in files:
        problems = parse_vnnlib(f)
        assert problems, f
        for p in problems:
            assert p.box.batch_size == 1 and p.spec.batch_size == 1


def _mnist_test_image(index: int) -> tuple[torch.Tensor, int]:
    mnist = SHARED / "data" / "mnist"
    with gzip.open(mnist / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 784)
    with gzip.open(mnist / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    return torch.tensor(images[index], dtype=torch.float32) / 255, int(labels[index])


@needs_vnncomp
@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="MNIST test set not in shared/data")
def test_mnistfc_prop_0_is_the_linf_ball_of_test_image_8661() -> None:
    (p,) = parse_vnnlib(VNNCOMP / "mnistfc" / "prop_0_0.03.vnnlib", n_inputs=784, n_outputs=10)
    image, label = _mnist_test_image(8661)  # the image generate.py drew for prop_0
    assert label == 8
    expected = linf_ball(image[None], 0.03)
    assert p.box.shape == (784,)
    assert torch.equal(p.box.lower, expected.lower) and torch.equal(p.box.upper, expected.upper)
    assert p.spec.n_clauses == 9
    reference = robustness(torch.tensor([label]), 10)
    assert torch.equal(p.spec.C, reference.C) and torch.equal(p.spec.d, reference.d)
    assert torch.equal(p.spec.clause, reference.clause)


ACASXU_SHAPES = {  # prop -> [(clauses, rows)] per problem
    1: [(1, 1)],
    2: [(1, 4)],
    3: [(1, 4)],
    4: [(1, 4)],
    5: [(4, 4)],
    6: [(4, 4), (4, 4)],
    7: [(2, 6)],
    8: [(3, 6)],
    9: [(4, 4)],
    10: [(4, 4)],
}


@needs_vnncomp
@pytest.mark.parametrize("prop", sorted(ACASXU_SHAPES))
def test_acasxu_problem_and_clause_counts(prop: int) -> None:
    problems = parse_vnnlib(VNNCOMP / "acasxu" / f"prop_{prop}.vnnlib", n_inputs=5, n_outputs=5)
    assert [(p.spec.n_clauses, p.spec.n_rows) for p in problems] == ACASXU_SHAPES[prop]
    assert all(p.box.shape == (5,) for p in problems)


@needs_vnncomp
def test_acasxu_prop_1_by_hand() -> None:
    (p,) = parse_vnnlib(VNNCOMP / "acasxu" / "prop_1.vnnlib")
    lower = torch.tensor([[0.6, -0.5, -0.5, 0.45, -0.5]], dtype=torch.float64)
    upper = torch.tensor([[0.679857769, 0.5, 0.5, 0.5, -0.45]], dtype=torch.float64)
    assert (p.box.lower.double() <= lower).all() and (p.box.upper.double() >= upper).all()
    torch.testing.assert_close(p.box.lower.double(), lower, rtol=0, atol=1e-7)
    torch.testing.assert_close(p.box.upper.double(), upper, rtol=0, atol=1e-7)
    threshold = 3.991125645861615  # unsafe iff Y_0 >= threshold (COC >= 1500 unscaled)
    y0 = torch.tensor([-10.0, 0.0, 3.99, 3.9911, 3.9912, 4.0, 100.0])
    y = torch.cat([y0[:, None], torch.zeros(7, 4)], dim=1)
    assert p.spec.expand(7).holds(y).tolist() == (y0 < threshold).tolist()


# ----------------------- parsed problems vs. an independent evaluation on ONNX outputs


def _raw_sexprs(text: str) -> list:
    """Nested lists of tokens; comments dropped. Independent of specs.vnnlib on purpose."""
    stack: list[list] = [[]]
    for tok in re.findall(r"\(|\)|[^\s()]+", re.sub(r";[^\n]*", "", text)):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    return stack[0]


def _raw_term(e: object, env: dict[str, float]) -> float:
    if isinstance(e, str):
        return env[e] if e in env else float(e)
    op, *args = e
    v = [_raw_term(a, env) for a in args]
    if op == "+":
        return sum(v)
    if op == "-":
        return -v[0] if len(v) == 1 else v[0] - sum(v[1:])
    if op == "*":
        return math.prod(v)
    raise AssertionError(op)


def _raw_names(e: object) -> set[str]:
    if isinstance(e, list):
        return set().union(*map(_raw_names, e))
    return {e} if isinstance(e, str) and e[:2] in ("X_", "Y_") else set()


def _raw_slack(e: list, env: dict[str, float]) -> float:
    """>= 0 iff the formula holds; input comparisons count as +-inf (their truth is exact)."""
    op, *args = e
    if op == "and":
        return min(_raw_slack(a, env) for a in args)
    if op == "or":
        return max(_raw_slack(a, env) for a in args)
    a, b = (_raw_term(t, env) for t in args)
    slack = b - a if op in ("<=", "<") else a - b
    if all(n.startswith("X_") for n in _raw_names(e)):
        return math.inf if slack >= 0 else -math.inf
    return slack


def _instances(folder: str) -> list[tuple[Path, Path]]:
    with open(VNNCOMP / folder / f"{folder}_instances.csv") as f:
        return [(VNNCOMP / folder / row[0], VNNCOMP / folder / row[1]) for row in csv.reader(f) if row]


def _agreement_cases() -> list[tuple[Path, Path]]:
    if not VNNCOMP.is_dir():
        return []
    acas = _instances("acasxu")
    single = [i for i in acas if i[1].name not in {f"prop_{k}.vnnlib" for k in range(1, 5)}]
    rest = [i for i in acas if i not in single]
    return _instances("test") + single + random.Random(0).sample(rest, 20 - len(single))


@needs_vnncomp
@pytest.mark.parametrize("case", _agreement_cases(), ids=lambda c: f"{c[0].stem}-{c[1].stem}")
def test_parsed_problems_agree_with_raw_formula_on_network_outputs(case: tuple[Path, Path]) -> None:
    """Sample each parsed box, run the ONNX net, compare Spec verdicts with a raw evaluation of the file."""
    ort = pytest.importorskip("onnxruntime")
    onnx_path, vnnlib_path = case
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    text = vnnlib_path.read_text()
    asserts = [e[1] for e in _raw_sexprs(text) if e[0] == "assert"]
    n_in = sum(1 for e in _raw_sexprs(text) if e[0] == "declare-const" and e[1].startswith("X_"))
    problems = parse_vnnlib(vnnlib_path)
    g = torch.Generator().manual_seed(0)
    outcomes = []
    for problem in problems:
        for x in problem.box.sample(8, generator=g)[0]:
            y_net = torch.from_numpy(session.run(None, {inp.name: x.numpy().reshape(shape)})[0]).reshape(-1)
            scale = 1.0 + y_net.abs().max()
            candidates = [y_net, y_net + 0.1 * scale * torch.randn(y_net.shape, generator=g)]
            candidates += [(torch.rand(y_net.shape, generator=g) * 2 - 1) * s for s in (1.0, 5.0, 200.0)]
            for y in candidates:
                env = {f"X_{i}": float(v) for i, v in enumerate(x)} | {f"Y_{j}": float(v) for j, v in enumerate(y)}
                raw = min(_raw_slack(a, env) for a in asserts)
                if abs(raw) < 1e-5 * (1.0 + float(y.abs().max())):
                    continue  # on a boundary: decided by rounding
                parsed_unsafe = any(
                    bool(p.box.contains(x[None])) and not bool(p.spec.holds(y[None].float())) for p in problems
                )
                assert parsed_unsafe == (raw >= 0), (x.tolist(), y.tolist())
                outcomes.append(parsed_unsafe)
    assert n_in == problems[0].box.shape[0]
    assert len(outcomes) >= 8 * len(problems)
    assert any(outcomes) and not all(outcomes)  # both verdicts were exercised
