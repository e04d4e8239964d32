"""The layout's import rules (README, "Layout"): imports only go down the floors, siblings on
one floor do not import each other, and no module imports in a circle.

Floors, lowest first: networks < specs < domains < profit, and inside profit
errors/outcomes < data < attacks < bab < verify < {features, explain, train}
< {cem, attribution} < runs < viz < testing < cli. Every import counts, also one inside a
function (that is how a circle hides) and one under `if TYPE_CHECKING:` (a type is a
dependency too), except in profit/__init__.py, whose lazy re-exports sit above everything.
specs/suites, benchmarks/ and vnncomp/ are drivers on top and are not checked.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("networks", "specs", "domains", "profit")
DRIVERS = ("specs.suites",)
PROFIT_FLOORS = {
    "errors": 0, "outcomes": 0, "version": 0,
    "data": 1,
    "attacks": 2,
    "bab": 3,
    "verify": 4,
    "features": 5, "explain": 5, "train": 5,
    "cem": 6, "attribution": 6,
    "runs": 7,
    "viz": 8,
    "testing": 9,
    "cli": 10, "__main__": 11,
}
TOP = 100  # profit/__init__.py: lazy re-exports of everything


def floor(module: str) -> tuple[int, str]:
    """(floor, unit) of a project module: modules of one unit (a top package, or a profit
    subpackage) may import each other; others only lower floors."""
    parts = module.split(".")
    top = PACKAGES.index(parts[0])
    if parts[0] != "profit":
        return top * 1000, parts[0]
    if len(parts) == 1:
        return top * 1000 + TOP, "profit"
    sub = parts[1]
    if sub not in PROFIT_FLOORS:
        raise KeyError(f"profit.{sub} has no floor: add it to PROFIT_FLOORS and the README's layout")
    return top * 1000 + PROFIT_FLOORS[sub], f"profit.{sub}"


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the four packages, drivers excluded, by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if not any(name == d or name.startswith(d + ".") for d in DRIVERS):
                out[name] = path
    return out


def imports(source: str, modules: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line, project module) of every import in `source` (at any depth): `from a import b`
    counts as importing module a.b when that is a module, else a."""
    known = set(modules)
    for node in _import_nodes(source):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield node.lineno, sub if sub in known else node.module


@functools.lru_cache(maxsize=None)
def _import_nodes(source: str) -> tuple[ast.Import | ast.ImportFrom, ...]:
    return tuple(n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom)))


def violations(modules: dict[str, str]) -> list[str]:
    """Every import against the floors, and every import circle, in `modules` (name -> source)."""
    found = []
    graph: dict[str, set[str]] = {}
    for name, source in modules.items():
        own_floor, own_unit = floor(name)
        graph[name] = set()
        for line, target in imports(source, modules):
            if target not in modules:
                if target.split(".")[0] in PACKAGES and not any(m.startswith(target + ".") for m in modules):
                    found.append(f"{name}:{line} imports {target}, which does not exist")
                continue
            if target == name:
                continue
            graph[name].add(target)
            if name == "profit":  # the lazy re-exports
                continue
            their_floor, their_unit = floor(target)
            if their_unit != own_unit and their_floor >= own_floor:
                found.append(f"{name}:{line} imports {target} (floor {their_floor} >= {own_floor}: "
                             "imports must go down)")
            if their_unit == own_unit and name.startswith(target + "."):
                found.append(f"{name}:{line} imports its own package {target} (import the sibling module itself)")
    found += [f"import circle: {' -> '.join(c)}" for c in _cycles(graph)]
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of size > 1 (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_imports_go_down_and_never_circle() -> None:
    modules = {name: path.read_text() for name, path in project_modules().items()}
    assert not violations(modules), "\n".join(violations(modules))


def test_every_profit_subpackage_has_a_floor() -> None:
    subs = {p.name for p in (ROOT / "profit").iterdir() if (p / "__init__.py").is_file()}
    subs |= {p.stem for p in (ROOT / "profit").glob("*.py") if p.stem != "__init__"}
    assert subs <= set(PROFIT_FLOORS), sorted(subs - set(PROFIT_FLOORS))


@pytest.mark.parametrize("name, source, fragment", [
    ("domains.box", "from profit.errors import ProfitError", "imports must go down"),
    ("networks.ir", "def f():\n    import domains.box", "imports must go down"),
    ("specs.regions", "import domains", "imports must go down"),
    ("profit.bab.search", "from profit.verify import verify_images", "imports must go down"),
    ("profit.features.proof", "from profit.explain.problem import Problem", "imports must go down"),
    ("profit.bab.search", "from profit.bab import check", "its own package"),
    ("profit.viz.common", "from profit.nothing import x", "does not exist"),
])
def test_checker_reports_a_violation(name: str, source: str, fragment: str) -> None:
    modules = {n: path.read_text() for n, path in project_modules().items()}
    modules[name] = modules.get(name, "") + "\n" + source + "\n"
    assert any(fragment in v for v in violations(modules))


def test_checker_reports_a_circle() -> None:
    modules = {n: path.read_text() for n, path in project_modules().items()}
    modules["profit.bab.search"] += "\ndef later():\n    from profit.bab import driver\n"
    assert any(v.startswith("import circle") and "profit.bab.search" in v for v in violations(modules))
