"""No domain proves a VNN-COMP 2021 instance whose consensus answer is SAT (a counterexample
exists), on mnistfc and ACAS Xu: a proof there would be unsound. How many UNSAT instances
each domain proves is printed, not asserted (the domains are incomplete).

Instances of the same network are bounded as one batch (grouped by the specs' clause
structure); an instance is proven when every (box, spec) problem of its VNN-LIB file is.
alpha-CROWN runs with 5 optimisation steps to keep the file fast.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from domains import DOMAINS
from networks import load_onnx
from specs.properties import Spec
from specs.regions import Box
from specs.vnnlib import VnnlibProblem, parse_vnnlib
from tests.domains.netgen import make_domain, one_thread

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VNNCOMP = SHARED / "benchmarks/vnncomp2021"
pytestmark = pytest.mark.skipif(not (VNNCOMP / "results_2021.csv").is_file(),
                                reason=f"VNN-COMP 2021 benchmarks not found at {VNNCOMP}")
_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def instances(benchmark: str) -> dict[str, list[tuple[str, str]]]:
    """onnx file -> [(vnnlib file, consensus)] for one benchmark of results_2021.csv."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with open(VNNCOMP / "results_2021.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["benchmark"] == benchmark and (VNNCOMP / benchmark / row["vnnlib"]).is_file():
                out[row["onnx"]].append((row["vnnlib"], row["consensus"]))
    return dict(out)


@lru_cache(maxsize=None)
def problems(path: Path, n_inputs: int, n_outputs: int) -> tuple[VnnlibProblem, ...]:
    return tuple(parse_vnnlib(path, n_inputs, n_outputs))


def proven_instances(name: str, benchmark: str) -> dict[tuple[str, str], tuple[bool, str]]:
    """(onnx, vnnlib) -> (proven by domain `name`, consensus), batching per network."""
    out = {}
    for onnx, rows in instances(benchmark).items():
        net = load_onnx(VNNCOMP / benchmark / onnx)
        n_in = int(torch.Size(net.input_shape).numel())
        groups: dict[tuple, list[tuple[str, VnnlibProblem]]] = defaultdict(list)
        for vnnlib, _ in rows:
            for p in problems(VNNCOMP / benchmark / vnnlib, n_in, net.n_outputs):
                groups[tuple(p.spec.clause.tolist())].append((vnnlib, p))
        proven: dict[str, bool] = {vnnlib: True for vnnlib, _ in rows}
        domain = make_domain(DOMAINS[name], net)
        for clause, items in groups.items():
            ps = [p for _, p in items]
            region = Box(net.prepare(torch.cat([p.box.lower for p in ps])),
                         net.prepare(torch.cat([p.box.upper for p in ps])))
            spec = Spec(torch.cat([p.spec.C for p in ps]), torch.cat([p.spec.d for p in ps]), torch.tensor(clause))
            result = domain.bound(region, spec)
            for (vnnlib, _), ok in zip(items, result.proven.tolist()):
                proven[vnnlib] = proven[vnnlib] and ok
        for vnnlib, consensus in rows:
            out[(onnx, vnnlib)] = (proven[vnnlib], consensus)
    return out


@pytest.mark.parametrize("benchmark", ["mnistfc", "acasxu"])
@pytest.mark.parametrize("name", list(DOMAINS))
def test_no_domain_proves_a_sat_instance(name: str, benchmark: str, capsys) -> None:
    results = proven_instances(name, benchmark)
    assert results, f"no {benchmark} instances found"
    unsound = [k for k, (proven, consensus) in results.items() if proven and consensus == "SAT"]
    assert not unsound, f"{name} proves {len(unsound)} SAT instances of {benchmark}: {unsound[:5]}"
    n_unsat = sum(consensus == "UNSAT" for _, consensus in results.values())
    n_proven = sum(proven and consensus == "UNSAT" for proven, consensus in results.values())
    n_sat = sum(consensus == "SAT" for _, consensus in results.values())
    with capsys.disabled():
        print(f"\n{benchmark}: {name} proves {n_proven} of {n_unsat} UNSAT instances "
              f"({n_sat} SAT instances, none proven; {len(results)} instances)")
