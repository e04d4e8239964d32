"""VNN-LIB parser: the SMT-LIB subset used by VNN-COMP, turned into (Box, Spec) problems.

Supported: `(declare-const X_i Real)` / `(declare-const Y_j Real)` for inputs and outputs;
`(assert F)` where F nests `and`, `or`, `true`, `false` and comparisons `<=`, `>=`, `<`, `>`,
`=` (chainable, e.g. `(<= 0 X_0 1)`) between linear terms: numbers (`1`, `-0.5`, `1e-3`), declared
variables, `(+ t ...)`, `(- t)`, `(- t t ...)`, `(* t ...)` with at most one non-constant
factor, `(/ t c)` with a non-zero constant c. `;` starts a comment to the end of the line.

Strict comparisons are read as non-strict: the parsed unsafe set is the closure of the
written one, which can only add counterexamples on its boundary (sound for proofs).

Semantics. The asserts are conjoined and the whole formula, which describes the *unsafe*
inputs/outputs, is expanded to disjunctive normal form. Each conjunct must bound every
input X_i from both sides by constants (general linear input constraints are rejected)
and constrains the outputs by linear inequalities A y <= b. Conjuncts with the same input
box are merged; each box becomes one `VnnlibProblem(box, spec)` whose `spec` is the
negation of the union of its unsafe output polytopes (see `specs.properties.from_unsafe`).
The property holds iff every problem's spec holds on its box. Conjuncts whose input box
is empty are dropped (nothing to violate there).

Input bounds are rounded outward to float32 (the box contains the written one); output
thresholds b are rounded so that `Spec.proven` stays sound.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, NoReturn

import torch
from torch import Tensor

from specs.properties import Spec, from_unsafe
from specs.regions import Box, inner_box


class VnnlibError(ValueError):
    """A VNN-LIB file outside the supported subset; the message starts with `file:line:`."""


@dataclass(frozen=True, eq=False)
class VnnlibProblem:
    """One input box and the property its outputs must satisfy."""

    box: Box  # batch 1, shape (n_inputs,)
    spec: Spec  # batch 1, n_out = n_outputs
    inner: Box | None = None  # the largest float32 box inside the bounds as written (attacks search it); None: none


_MAX_CONJUNCTS = 100_000
_TOKEN = re.compile(r"[()]|[^\s();]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_VARIABLE = re.compile(r"([XY])_(\d+)")
_COMPARISONS = {"<=", ">=", "<", ">", "="}


class _Atom(NamedTuple):
    """A token: its text and line (a NamedTuple: files have ~10^5 of them)."""

    text: str
    line: int


class _List(NamedTuple):
    """A parenthesised s-expression: its items and the line of its '('."""

    items: tuple[_Atom | _List, ...]
    line: int


@dataclass(frozen=True)
class _Linear:
    """sum coef[v] * v + const over variables v = ('X' | 'Y', index)."""

    coef: dict[tuple[str, int], float]
    const: float


@dataclass(frozen=True)
class _Bound:
    """X_index <= value (upper) or X_index >= value (not upper)."""

    index: int
    value: float
    upper: bool


@dataclass(frozen=True)
class _Row:
    """a . y <= b over outputs: a as a sparse {index: coef}."""

    a: tuple[tuple[int, float], ...]
    b: float


_Literal = _Bound | _Row
_Dnf = list[tuple[_Literal, ...]]  # OR over conjuncts, each an AND of literals


class _Parser:
    """Reads one VNN-LIB text; `problems()` does the work."""

    def __init__(self, text: str, name: str, n_inputs: int | None, n_outputs: int | None) -> None:
        self.text, self.name = text, name
        self.n_inputs, self.n_outputs = n_inputs, n_outputs
        self.declared: dict[tuple[str, int], int] = {}  # variable -> line of its declaration
        self.last_line = 1

    def error(self, line: int, message: str) -> VnnlibError:
        """The error to raise, located at `line` of this file."""
        return VnnlibError(f"{self.name}:{line}: {message}")

    def tokens(self) -> Iterator[_Atom]:
        """Parentheses and atoms with their line numbers; whitespace and comments are skipped."""
        lines = self.text.split("\n")
        self.last_line = len(lines)
        for number, line in enumerate(lines, 1):
            for tok in _TOKEN.findall(line.split(";", 1)[0]):
                yield _Atom(tok, number)

    def sexprs(self) -> list[_List]:
        """Top-level s-expressions; raises on unbalanced parentheses or bare atoms."""
        stack: list[tuple[list[_Atom | _List], int]] = []
        top: list[_List] = []
        for tok in self.tokens():
            if tok.text == "(":
                stack.append(([], tok.line))
            elif tok.text == ")":
                if not stack:
                    raise self.error(tok.line, "unbalanced parentheses: unexpected ')'")
                items, line = stack.pop()
                node = _List(tuple(items), line)
                (stack[-1][0] if stack else top).append(node)
            elif stack:
                stack[-1][0].append(tok)
            else:
                raise self.error(tok.line, f"unexpected token {tok.text!r} outside parentheses")
        if stack:
            raise self.error(stack[-1][1], "unbalanced parentheses: '(' is never closed")
        return top

    def head(self, node: _List) -> str:
        """The operator of a list: its first item, which must be an atom."""
        if not node.items or not isinstance(node.items[0], _Atom):
            raise self.error(node.line, "expected an operator after '('")
        return node.items[0].text

    def declare(self, node: _List) -> None:
        """Record `(declare-const X_i Real)` / `(declare-const Y_j Real)`."""
        if len(node.items) != 3 or not all(isinstance(i, _Atom) for i in node.items):
            raise self.error(node.line, "expected (declare-const NAME Real)")
        name, sort = node.items[1].text, node.items[2].text
        m = _VARIABLE.fullmatch(name)
        if m is None:
            raise self.error(node.line, f"unsupported variable name {name!r} (expected X_i or Y_j)")
        if sort != "Real":
            raise self.error(node.line, f"unsupported sort {sort!r} for {name} (expected Real)")
        var = (m.group(1), int(m.group(2)))
        limit = self.n_inputs if var[0] == "X" else self.n_outputs
        if limit is not None and var[1] >= limit:
            kind = "n_inputs" if var[0] == "X" else "n_outputs"
            raise self.error(node.line, f"{name} out of range for {kind}={limit}")
        if var in self.declared:
            raise self.error(node.line, f"{name} declared twice (first on line {self.declared[var]})")
        self.declared[var] = node.line

    def term(self, node: _Atom | _List) -> _Linear:
        """A linear term."""
        if isinstance(node, _Atom):
            t = node.text
            if _NUMBER.fullmatch(t):
                return _Linear({}, float(t))
            m = _VARIABLE.fullmatch(t)
            if m is not None:
                var = (m.group(1), int(m.group(2)))
                if var not in self.declared:
                    raise self.error(node.line, f"undeclared variable {t!r}")
                return _Linear({var: 1.0}, 0.0)
            raise self.error(node.line, f"unknown token {t!r}")
        op = self.head(node)
        args = [self.term(a) for a in node.items[1:]]
        if op == "+" and args:
            return _add(args)
        if op == "-" and len(args) == 1:
            return _scale(args[0], -1.0)
        if op == "-" and args:
            return _add([args[0], *(_scale(a, -1.0) for a in args[1:])])
        if op == "*" and args:
            variable = [a for a in args if a.coef]
            if len(variable) > 1:
                raise self.error(node.line, "nonlinear term: '*' of two non-constant terms")
            factor = 1.0
            for a in args:
                if not a.coef:
                    factor *= a.const
            return _scale(variable[0], factor) if variable else _Linear({}, factor)
        if op == "/" and len(args) == 2:
            if args[1].coef or args[1].const == 0:
                raise self.error(node.line, "'/' needs a non-zero constant divisor")
            return _scale(args[0], 1.0 / args[1].const)
        if op in ("+", "-", "*", "/"):
            raise self.error(node.line, f"wrong number of arguments for {op!r}")
        raise self.error(node.line, f"unknown operator {op!r}")

    def literal(self, lhs: _Linear, rhs: _Linear, line: int) -> _Dnf:
        """lhs <= rhs as a DNF: one literal, or true ([()]) / false ([]) when constant."""
        diff = _add([lhs, _scale(rhs, -1.0)])  # diff <= 0
        coef = {v: c for v, c in diff.coef.items() if c != 0.0}
        kinds = {v[0] for v in coef}
        if not coef:
            return [()] if diff.const <= 0 else []
        if kinds == {"X", "Y"}:
            raise self.error(line, "a constraint mixes inputs X and outputs Y")
        if "X" in kinds:
            if len(coef) > 1:
                raise self.error(line, "only bounds on single inputs are supported, not linear input constraints")
            ((_, i), c), = coef.items()
            return [(_Bound(i, -diff.const / c, upper=c > 0),)]
        row = tuple(sorted((v[1], c) for v, c in coef.items()))
        return [(_Row(row, -diff.const),)]

    def formula(self, node: _Atom | _List) -> _Dnf:
        """A boolean formula as a DNF."""
        if isinstance(node, _Atom):
            if node.text == "true":
                return [()]
            if node.text == "false":
                return []
            raise self.error(node.line, f"expected a formula, got {node.text!r}")
        op = self.head(node)
        args = node.items[1:]
        if op == "and":
            return self.conjoin([self.formula(a) for a in args], node.line)
        if op == "or":
            return [c for a in args for c in self.formula(a)]
        if op in _COMPARISONS:
            if len(args) < 2:
                raise self.error(node.line, f"{op!r} needs at least two arguments")
            terms = [self.term(a) for a in args]
            pairs = list(zip(terms, terms[1:]))
            if op in (">=", ">"):
                pairs = [(b, a) for a, b in pairs]
            elif op == "=":
                pairs += [(b, a) for a, b in pairs]
            return self.conjoin([self.literal(a, b, node.line) for a, b in pairs], node.line)
        raise self.error(node.line, f"unknown operator {op!r}")

    def conjoin(self, dnfs: list[_Dnf], line: int) -> _Dnf:
        """AND of DNFs, distributing over the disjunctions (single conjuncts are cheap)."""
        common: list[_Literal] = []
        result: _Dnf = [()]
        for dnf in dnfs:
            if len(dnf) == 1:
                common.extend(dnf[0])
                continue
            if len(result) * len(dnf) > _MAX_CONJUNCTS:
                raise self.error(line, f"formula expands to more than {_MAX_CONJUNCTS} disjuncts")
            result = [a + b for a in result for b in dnf]
        shared = tuple(common)
        return [shared + c for c in result]

    def problems(self) -> list[VnnlibProblem]:
        """Declarations and asserts in file order, then the DNF of all asserts grouped by input box."""
        asserts: list[_Dnf] = []
        for node in self.sexprs():
            op = self.head(node)
            if op == "declare-const":
                self.declare(node)
            elif op == "assert":
                if len(node.items) != 2:
                    raise self.error(node.line, "expected (assert FORMULA)")
                asserts.append(self.formula(node.items[1]))
            else:
                raise self.error(node.line, f"unknown command {op!r}")
        n_in = self.n_inputs if self.n_inputs is not None else _count(self.declared, "X")
        n_out = self.n_outputs if self.n_outputs is not None else _count(self.declared, "Y")
        return self.group(self.conjoin(asserts, self.last_line), n_in, n_out)

    def missing_bound(self, i: int, side: str) -> NoReturn:
        """Raise for X_i lacking a bound, at its declaration (or the end of the file if undeclared)."""
        if ("X", i) in self.declared:
            raise self.error(self.declared[("X", i)], f"X_{i} has no {side} bound")
        raise self.error(self.last_line, f"X_{i} has no {side} bound (not declared, n_inputs={self.n_inputs})")

    def group(self, dnf: _Dnf, n_in: int, n_out: int) -> list[VnnlibProblem]:
        """One problem per distinct input box, holding that box's unsafe output polytopes."""
        boxes: dict[tuple[tuple[float, ...], tuple[float, ...]], list[list[_Row]]] = {}
        for conjunct in dnf:
            lower = [-float("inf")] * n_in
            upper = [float("inf")] * n_in
            rows: list[_Row] = []
            for lit in conjunct:
                if isinstance(lit, _Row):
                    rows.append(lit)
                elif lit.upper:
                    upper[lit.index] = min(upper[lit.index], lit.value)
                else:
                    lower[lit.index] = max(lower[lit.index], lit.value)
            for i in range(n_in):
                if lower[i] == -float("inf") or upper[i] == float("inf"):
                    self.missing_bound(i, "lower" if lower[i] == -float("inf") else "upper")
            if any(lo > hi for lo, hi in zip(lower, upper)):
                continue
            boxes.setdefault((tuple(lower), tuple(upper)), []).append(rows)
        problems = []
        for (lower, upper), disjuncts in boxes.items():
            exact = torch.tensor([lower], dtype=torch.float64), torch.tensor([upper], dtype=torch.float64)
            inner, feasible = inner_box(*exact)
            A_list, b_list = zip(*(_polytope(rows, n_out) for rows in disjuncts))
            problems.append(VnnlibProblem(Box(*exact), from_unsafe(A_list, b_list), inner if bool(feasible[0]) else None))
        return problems


def _add(terms: list[_Linear]) -> _Linear:
    coef: dict[tuple[str, int], float] = {}
    for t in terms:
        for v, c in t.coef.items():
            coef[v] = coef.get(v, 0.0) + c
    return _Linear(coef, sum(t.const for t in terms))


def _scale(t: _Linear, factor: float) -> _Linear:
    return _Linear({v: c * factor for v, c in t.coef.items()}, t.const * factor)


def _count(declared: dict[tuple[str, int], int], kind: str) -> int:
    """1 + the largest declared index of this kind (0 if none)."""
    return 1 + max((i for k, i in declared if k == kind), default=-1)


def _polytope(rows: list[_Row], n_out: int) -> tuple[Tensor, Tensor]:
    """Dense A (r, n_out) float64 and b (r,) of the rows a . y <= b."""
    A = torch.zeros(len(rows), n_out, dtype=torch.float64)
    for r, row in enumerate(rows):
        for j, c in row.a:
            A[r, j] = c
    b = torch.tensor([row.b for row in rows], dtype=torch.float64)
    return A, b


def parse_vnnlib(
    path_or_text: str | Path,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
) -> list[VnnlibProblem]:
    """Parse a VNN-LIB file (a Path, a str path, `.gz` allowed) or text (a str containing '(').

    n_inputs / n_outputs, when given, fix the sizes (larger variable indices are errors,
    undeclared inputs are reported as missing bounds); otherwise they are 1 + the largest
    declared index. Returns problems whose boxes have batch 1 and shape (n_inputs,) and
    whose specs have batch 1 and n_outputs columns; the property holds iff each holds.
    Raises VnnlibError("name:line: message") on anything outside the supported subset.
    """
    if isinstance(path_or_text, Path) or "(" not in path_or_text:
        path = Path(path_or_text)
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt") as f:
                text = f.read()
        except OSError as e:
            raise VnnlibError(f"{path}:0: cannot read: {e.strerror or e}") from None
        name = str(path)
    else:
        text, name = path_or_text, "<string>"
    return _Parser(text, name, n_inputs, n_outputs).problems()


def write_counterexample(x: Tensor, y: Tensor) -> str:
    """VNN-COMP result text for a counterexample: 'sat' then ((X_0 v) ... (Y_0 v) ...).

    x, y: the network input and output (any shape, flattened row-major). Values are written
    with repr of the exact float, so they read back bit-for-bit.
    """
    xs = torch.as_tensor(x).detach().reshape(-1).double().tolist()
    ys = torch.as_tensor(y).detach().reshape(-1).double().tolist()
    entries = [f"(X_{i} {v!r})" for i, v in enumerate(xs)] + [f"(Y_{j} {v!r})" for j, v in enumerate(ys)]
    return "sat\n(" + "\n ".join(entries) + ")\n"
