"""VNN-LIB 2.0 queries, translated to the VNN-LIB 1.0 subset `specs.vnnlib` parses.

Supported: `(vnnlib-version <2.0>)`; one `(declare-network N (declare-input X T [shape])
(declare-output Y T [shape]))` with one input and one output of a floating-point type
(`real`, `float16/32/64`); asserts over `X[i, j, ...]` and `Y[...]` with the operators of
VNN-LIB 1.0. An indexed variable becomes its row-major position in the declared shape
(`X[1,0]` of a [2, 3] input is X_3), the order in which a network's input and output are
flattened. Hidden tensors (`(declare-hidden H T [shape] "onnx-name")`) become the first Y_j,
the output follows them: the network to decide is the ONNX model with those tensors and its
output flattened and concatenated (`profit.verify.vnnlib.run_vnnlib2` builds it). Everything
else (several networks or inputs or outputs, integer types) raises `Vnnlib2Unsupported`: a solver answers `unknown` to such a query, it is not
malformed. Line numbers of later errors (`VnnlibError` from `parse_vnnlib`) are those of
the 2.0 text: every top-level expression is written back on the line it started on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from specs.vnnlib import VnnlibError, VnnlibProblem, parse_vnnlib


class Vnnlib2Unsupported(VnnlibError):
    """A well-formed VNN-LIB 2.0 query outside what profit can decide (e.g. two networks)."""


@dataclass(frozen=True)
class Variable:
    """A declared tensor: its kind ('input' | 'output'), name, element type and shape."""

    kind: str  # 'input' | 'hidden' | 'output'
    name: str
    dtype: str
    shape: tuple[int, ...]
    tensor: str = ""  # a hidden variable's ONNX tensor name


@dataclass(frozen=True)
class Query:
    """A VNN-LIB 2.0 query of one network, as VNN-LIB 1.0 text over X_i / Y_j."""

    network: str  # the declared network name, e.g. "N"
    input: Variable
    output: Variable
    text: str  # VNN-LIB 1.0, same line numbers as the 2.0 text
    hidden: tuple[Variable, ...] = ()  # hidden tensors: Y_j for j < their total size, then the output
    name: str = "<string>"  # the file, for messages

    @property
    def n_outputs(self) -> int:
        """The width of Y in the 1.0 text: the hidden tensors' sizes, then the output's."""
        return sum(math.prod(v.shape) for v in (*self.hidden, self.output))

    def problems(self) -> list[VnnlibProblem]:
        """The 1.0 text parsed against the declared sizes (see `specs.vnnlib.parse_vnnlib`)."""
        try:
            return parse_vnnlib(self.text, math.prod(self.input.shape), self.n_outputs)
        except VnnlibError as exc:
            raise VnnlibError(str(exc).replace("<string>", self.name, 1)) from None


_TOKEN = re.compile(r"\[[^\]]*\]|<[^>\s()]*>|\"[^\"]*\"|[()]|[^\s();\[\"]+(?:\[[^\]]*\])?")
_FLOAT_TYPES = {"real", "float16", "float32", "float64", "bfloat16"}


def _sexprs(text: str, name: str) -> list[tuple[list, int]]:
    """Top-level s-expressions as nested lists of str atoms, each with its starting line."""
    stack: list[tuple[list, int]] = []
    top: list[tuple[list, int]] = []
    for number, line in enumerate(text.split("\n"), 1):
        for tok in _TOKEN.findall(line.split(";", 1)[0]):
            if tok == "(":
                stack.append(([], number))
            elif tok == ")":
                if not stack:
                    raise VnnlibError(f"{name}:{number}: unbalanced parentheses: unexpected ')'")
                items, start = stack.pop()
                if stack:
                    stack[-1][0].append(items)
                else:
                    top.append((items, start))
            elif stack:
                stack[-1][0].append(tok)
            else:
                raise VnnlibError(f"{name}:{number}: unexpected token {tok!r} outside parentheses")
    if stack:
        raise VnnlibError(f"{name}:{stack[-1][1]}: unbalanced parentheses: '(' is never closed")
    return top


def _shape(token: str, where: str) -> tuple[int, ...]:
    if not (token.startswith("[") and token.endswith("]")):
        raise VnnlibError(f"{where}: expected a shape like [2, 3], got {token!r}")
    try:
        dims = tuple(int(d) for d in token[1:-1].replace(",", " ").split())
    except ValueError:
        raise VnnlibError(f"{where}: the shape {token} is not a list of integers") from None
    if any(d < 1 for d in dims):
        raise VnnlibError(f"{where}: the shape {token} has a dimension < 1")
    return dims or (1,)


def _network(items: list, where: str) -> tuple[str, Variable, Variable, tuple[Variable, ...]]:
    """The name, input, output and hidden tensors of a `declare-network` block."""
    if len(items) < 2 or not isinstance(items[1], str):
        raise VnnlibError(f"{where}: expected (declare-network NAME ...)")
    inputs, outputs, hidden = [], [], []
    for decl in items[2:]:
        if not isinstance(decl, list) or not decl or not isinstance(decl[0], str):
            raise VnnlibError(f"{where}: expected (declare-input ...) or (declare-output ...) in {items[1]}")
        head = decl[0]
        if head == "declare-hidden":
            if len(decl) != 5 or not all(isinstance(d, str) for d in decl[1:]) or not decl[4].startswith('"'):
                raise VnnlibError(f'{where}: expected (declare-hidden NAME TYPE [shape] "onnx-tensor")')
            if decl[2] not in _FLOAT_TYPES:
                raise Vnnlib2Unsupported(f"{where}: element type {decl[2]} of {decl[1]} is not supported")
            hidden.append(Variable("hidden", decl[1], decl[2], _shape(decl[3], where), decl[4].strip('"')))
            continue
        if head not in ("declare-input", "declare-output"):
            raise VnnlibError(f"{where}: unknown declaration {head!r} in network {items[1]}")
        if len(decl) < 4 or not all(isinstance(d, str) for d in decl[1:4]):
            raise VnnlibError(f"{where}: expected ({head} NAME TYPE [shape])")
        dtype = decl[2]
        if dtype not in _FLOAT_TYPES:
            raise Vnnlib2Unsupported(f"{where}: element type {dtype} of {decl[1]} is not supported (floating point only)")
        var = Variable(head.split("-")[1], decl[1], dtype, _shape(decl[3], where))
        (inputs if var.kind == "input" else outputs).append(var)
    if len(inputs) != 1 or len(outputs) != 1:
        raise Vnnlib2Unsupported(f"{where}: network {items[1]} declares {len(inputs)} inputs and "
                                 f"{len(outputs)} outputs; only one of each is supported")
    return items[1], inputs[0], outputs[0], tuple(hidden)


def _render(node: list | str, names: dict[str, tuple[Variable, int]], where: str) -> str:
    """An assert back as 1.0 text, `NAME[i, ...]` replaced by X_k / Y_k (names: variable and the
    offset of its first value)."""
    if isinstance(node, list):
        return "(" + " ".join(_render(n, names, where) for n in node) + ")"
    if "[" in node and node.endswith("]"):
        base, index = node.split("[", 1)
        if base not in names:
            raise VnnlibError(f"{where}: undeclared variable {base!r}")
        var, offset = names[base]
        try:
            idx = [int(i) for i in index[:-1].replace(",", " ").split()]
        except ValueError:
            raise VnnlibError(f"{where}: bad index {node!r}") from None
        if len(idx) == 1 and len(var.shape) > 1:
            flat = idx[0]  # a flat index into a tensor
            ok = 0 <= flat < math.prod(var.shape)
        else:
            ok = len(idx) == len(var.shape) and all(0 <= i < d for i, d in zip(idx, var.shape))
            flat = 0
            for i, d in zip(idx, var.shape):
                flat = flat * d + i
        if not ok:
            raise VnnlibError(f"{where}: index {node} out of range for {var.name} of shape {list(var.shape)}")
        return f"{'X' if var.kind == 'input' else 'Y'}_{offset + flat}"
    if node in names:
        raise Vnnlib2Unsupported(f"{where}: {node} is used without an index")
    return node


def translate(text: str, name: str = "<string>") -> Query:
    """The VNN-LIB 2.0 `text` as a `Query` (1.0 text over X_i / Y_j).

    Raises `Vnnlib2Unsupported` for queries profit cannot express, `VnnlibError` for
    malformed ones; both messages start with `name:line:`."""
    networks: list[tuple[str, Variable, Variable, tuple[Variable, ...]]] = []
    lines = [""] * (text.count("\n") + 1)
    asserts: list[tuple[list, int]] = []
    for items, line in _sexprs(text, name):
        where = f"{name}:{line}"
        head = items[0] if items and isinstance(items[0], str) else None
        if head == "vnnlib-version":
            version = items[1].strip("<>") if len(items) == 2 and isinstance(items[1], str) else ""
            if not version.startswith("2."):
                raise Vnnlib2Unsupported(f"{where}: VNN-LIB version {version or '?'} (expected 2.x)")
        elif head == "declare-network":
            networks.append(_network(items, where))
        elif head == "assert":
            asserts.append((items, line))
        else:
            raise VnnlibError(f"{where}: unknown command {head!r}")
    if len(networks) != 1:
        raise Vnnlib2Unsupported(f"{name}:1: {len(networks)} networks declared; only single-network queries "
                                 "are supported")
    net, x, y, hidden = networks[0]
    names: dict[str, tuple[Variable, int]] = {x.name: (x, 0)}
    offset = 0
    for var in (*hidden, y):
        if var.name in names:
            raise VnnlibError(f"{name}:1: {var.name} is declared twice")
        names[var.name] = (var, offset)
        offset += math.prod(var.shape)
    for items, line in asserts:
        lines[line - 1] += _render(items, names, f"{name}:{line}") + " "
    lines[0] = " ".join([f"(declare-const X_{i} Real)" for i in range(math.prod(x.shape))]
                        + [f"(declare-const Y_{j} Real)" for j in range(offset)]) + " " + lines[0]
    return Query(net, x, y, "\n".join(lines), hidden, name)


def read_query(path: str | Path) -> Query:
    """`translate` the file at `path`."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise VnnlibError(f"{path}:0: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return translate(text, str(path))
