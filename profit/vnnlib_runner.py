"""Decide a VNN-LIB property of an ONNX network, as in the VNN-COMP interface.

    outcome = run_vnnlib("net.onnx", "prop.vnnlib", timeout=60)
    outcome.result          # "sat" | "unsat" | "unknown" | "timeout"
    Path("out.txt").write_text(outcome.text())

`decide(net, problems, timeout)` is the one function a complete verifier replaces.
Today it is incomplete: per problem (input box + output property) it runs the
attacks (quick pass, PGD; every candidate confirmed with onnxruntime) and then the
domains cheapest first (box, crown, alpha-crown); while time is left and some
problem is open, it escalates PGD (more restarts, new seeds). Time is checked
between methods; a method whose measured cost (PGD per restart and step, alpha-CROWN
from CROWN's time) would not fit into the remaining time is not started. Answers:

- sat: a counterexample that onnxruntime confirmed (inside the box as written:
  attacks search the box shrunk one float32 step inward, `strictly_inside`, because
  the parsed bounds are rounded outward; its real outputs violate the property); the result text carries it in VNN-COMP form
  `((X_0 v) ... (Y_0 v))` with onnxruntime's outputs;
- unsat: every problem proven by a sound domain;
- timeout: the time ran out with a problem open; unknown: every method ran to its
  end with a problem open.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from domains import DOMAINS, AlphaOptions
from domains.base import Domain
from networks.ir import Network
from profit.attack import AttackOptions, confirm, onnx_outputs, pgd, quick_attack, strictly_inside
from profit.errors import ProfitError
from profit.inputs import load_network
from specs.regions import Box
from specs.vnnlib import VnnlibProblem, parse_vnnlib, write_counterexample

RESULTS = ("sat", "unsat", "unknown", "timeout")  # first line of a VNN-COMP result file
DOMAIN_ORDER = ("box", "crown", "alpha-crown")  # cheapest first
ESCALATION_RESTARTS = (10, 40, 160)  # PGD restarts of the extra rounds while time is left
ESCALATION_STEPS = 100


@dataclass(frozen=True, eq=False)
class Decision:
    """What `decide` concluded, and which method concluded it."""

    result: str  # one of RESULTS
    counterexample: tuple[Tensor, Tensor] | None = None  # (x flat network input, y onnxruntime outputs) for sat
    decided_by: str = ""  # e.g. "pgd", "crown"; for unknown/timeout the last method run


@dataclass(frozen=True, eq=False)
class VnnlibOutcome:
    """A decision with its wall-clock time; `text()` is the VNN-COMP result file."""

    decision: Decision
    seconds: float

    @property
    def result(self) -> str:
        return self.decision.result

    def text(self) -> str:
        """'sat' plus the counterexample, or the bare result, newline-terminated."""
        if self.decision.result == "sat" and self.decision.counterexample is not None:
            return write_counterexample(*self.decision.counterexample)
        return self.decision.result + "\n"


def load_problems(net: Network, vnnlib_path: str | Path) -> list[VnnlibProblem]:
    """Parse a VNN-LIB file against the network's sizes (more inputs or outputs than it has: an error
    naming the line). Boxes are reshaped to (1, *net.input_shape), X_i in row-major order."""
    n_inputs = math.prod(net.input_shape)
    problems = parse_vnnlib(Path(vnnlib_path), n_inputs=n_inputs, n_outputs=net.n_outputs)
    shaped = []
    for p in problems:
        if p.box.lower.numel() != n_inputs:
            raise ProfitError(f"{vnnlib_path}: constrains {p.box.lower.numel()} inputs, the network takes {n_inputs}")
        box = Box(p.box.lower.reshape(1, *net.input_shape), p.box.upper.reshape(1, *net.input_shape))
        shaped.append(VnnlibProblem(box, p.spec))
    return shaped


class _Clock:
    """The deadline of one `decide` call, and the measured cost of its methods."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.perf_counter() + timeout
        self.cost: dict[str, float] = {}  # method -> seconds of its last run

    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.perf_counter()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def fits(self, seconds: float) -> bool:
        """Whether a method expected to take `seconds` should still start."""
        return seconds <= self.remaining()


def _attack(net: Network, onnx: Path, problem: VnnlibProblem, stage: str,
            options: AttackOptions) -> tuple[Tensor, Tensor] | None:
    """A confirmed counterexample (x flat, onnxruntime y) for one problem, or None."""
    box, feasible = strictly_inside(problem.box)
    spec = problem.spec
    if not bool(feasible[0]):
        return None
    if stage == "quick-attack":
        x, found = quick_attack(net, box, spec, n_samples=256, seed=options.seed)
    else:
        x, found = pgd(net, box, spec, options)
    if not bool(found[0]) or not bool(confirm(onnx, net, x, box, spec)[0]):
        return None
    return x.reshape(-1), onnx_outputs(onnx, net, x)[0]


def decide(
    net: Network,
    problems: list[VnnlibProblem],
    timeout: float | None,
    onnx_path: str | Path | None = None,
    attack: AttackOptions = AttackOptions(),
) -> Decision:
    """sat / unsat / unknown / timeout for the property "every problem's spec holds on its box".

    problems: boxes shaped (1, *net.input_shape); onnx_path: the file used to confirm
    counterexamples (default net.source). Time is checked between methods.
    """
    onnx = Path(onnx_path or net.source)
    if not onnx.is_file():
        raise ProfitError(f"the network's ONNX file is needed to confirm counterexamples (got '{onnx}')")
    clock = _Clock(timeout)
    open_ = list(range(len(problems)))
    last = "none"
    for stage in ("quick-attack", "pgd"):
        for k in open_:
            if clock.expired():
                return Decision("timeout", None, last)
            last, t0 = stage, time.perf_counter()
            found = _attack(net, onnx, problems[k], stage, attack)
            clock.cost[stage] = time.perf_counter() - t0
            if found is not None:
                return Decision("sat", found, stage)
    domains: dict[str, Domain] = {}
    for name in DOMAIN_ORDER:
        for k in list(open_):
            if clock.expired() or not clock.fits(_expected_cost(name, clock)):
                return Decision("timeout", None, last)
            last, t0 = name, time.perf_counter()
            domain = domains.setdefault(name, DOMAINS[name](net))
            proven = bool(domain.bound(problems[k].box, problems[k].spec).proven[0])
            clock.cost[name] = time.perf_counter() - t0
            if proven:
                open_.remove(k)
        if not open_:
            return Decision("unsat", None, name)
    per_start_step = clock.cost.get("pgd", 0.0) / (attack.restarts * max(attack.steps, 1))
    for round_, wanted in enumerate(ESCALATION_RESTARTS, 1):
        for k in open_:
            affordable = wanted
            if per_start_step > 0 and math.isfinite(clock.remaining()):
                affordable = min(wanted, int(0.8 * clock.remaining() / (per_start_step * ESCALATION_STEPS)))
            if clock.expired() or affordable < 1:
                return Decision("timeout", None, last)
            options = replace(attack, restarts=affordable, steps=ESCALATION_STEPS, seed=attack.seed + round_)
            last = "pgd"
            found = _attack(net, onnx, problems[k], "pgd", options)
            if found is not None:
                return Decision("sat", found, "pgd")
    return Decision("timeout" if clock.expired() else "unknown", None, last)


def _expected_cost(name: str, clock: _Clock) -> float:
    """A guess of a domain's time from what ran before it (0: no guess, always start)."""
    if name == "alpha-crown" and "crown" in clock.cost:
        return clock.cost["crown"] * 0.5 * (AlphaOptions().iterations + 1)
    return 0.0


def run_vnnlib(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float | None = None,
               attack: AttackOptions = AttackOptions()) -> VnnlibOutcome:
    """Load the network, parse the property against it and `decide`; the time includes loading."""
    if timeout is not None and not timeout > 0:
        raise ProfitError(f"timeout must be > 0 seconds, got {timeout}")
    start = time.perf_counter()
    net = load_network(onnx_path)
    problems = load_problems(net, vnnlib_path)
    remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 1e-3)
    decision = decide(net, problems, remaining, onnx_path=net.source, attack=attack)
    return VnnlibOutcome(decision, time.perf_counter() - start)
