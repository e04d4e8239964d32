"""Complete verification by branch and bound (BaB): the entry points.

    outcome = check(net, region, spec, timeout=60)     # region, spec: batch 1
    match outcome:
        case Proven(): ...                    # the property holds on the whole region
        case Counterexample(x, y): ...        # x inside the region, y its onnxruntime outputs
        case Unknown(reason): ...             # "timeout", "memory: N live subdomains", ...

`check_problems` decides several (box, spec) problems at once (a VNN-LIB file with
an input disjunction): the property holds iff every problem holds.

Pipeline: an attack on the whole region (quick pass, PGD with restarts), then one of
two BaB loops, chosen by the number of free input coordinates (`BabOptions.mode`; a
network without ReLUs, e.g. a pure Sigmoid/Tanh MLP, always splits inputs):

- input splitting (`profit.bab.input_split`, few free inputs, e.g. ACAS Xu): subdomains are
  sub-boxes, bounded a batch at a time (forward-mode bounds, then CROWN for the boxes
  these leave open, then, for OR clauses of several rows, row weights and ReLU slopes
  optimised jointly on one combined row per clause); unproven boxes are halved along
  the coordinate with the largest smear (interval bound of |gradient| times width,
  ReluVal) and tried as counterexamples (centres, the vertices minimising the linear
  lower bound, PGD in the boxes whose centres come closest to a violation, which are
  also popped first);
- ReLU splitting (`profit.bab.relu_split`, image inputs): subdomains are phase assignments
  of unstable ReLUs over alpha-CROWN-optimised root bounds, bounded a batch at a time
  by beta-CROWN (slopes alpha and split multipliers beta optimised per subdomain,
  warm-started from the parent), one BaB per clause the root leaves unproven;
  branching by filtered smart branching (top BaBSR scores, each evaluated with one
  batched bound pass); subdomains with every ReLU fixed are decided exactly by an LP.

See `profit.bab.search` for the soundness guarantees and the time and memory caps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

from domains.base import DeadlineExceeded, DomainError
from networks.ir import Network, Relu
from profit.bab import input_split, relu_split
from profit.bab.search import BabOptions, Search
from profit.errors import ProfitError
from profit.outcomes import BabStats, Counterexample, Outcome, Proven, Unknown
from specs.properties import Spec
from specs.regions import Box, strictly_inside


def _input_coordinates(region: Box) -> int:
    return int((region.upper > region.lower).sum())


def check(net: Network, region: Box, spec: Spec, timeout: float | None = None,
          options: BabOptions = BabOptions(), onnx_path: str | Path | None = None,
          attack_region: Box | None = None, attack_first: bool = True) -> Outcome:
    """Decide whether every input of `region` (batch 1) satisfies `spec` (batch 1).

    timeout: seconds (None: no limit), respected to within a batch (see BabOptions);
    onnx_path: the file that confirms counterexamples (default net.source, if it is
    an ONNX file; otherwise the IR in float64 confirms them); attack_region: where
    counterexamples must lie (default `region`; e.g. `strictly_inside(region)` when the
    region's bounds were rounded outward from the real ones); attack_first: run the
    attack on the whole region before branching (False: it already ran).
    """
    given_shape = tuple(region.lower.shape)
    run = _run(net, region, spec, timeout, options, onnx_path, attack_region)
    outcome = _check(run, attack_first)
    if isinstance(outcome, Counterexample):
        return Counterexample(outcome.x.reshape(given_shape), outcome.y, run.stats())
    if isinstance(outcome, Unknown):
        return Unknown(outcome.reason, run.stats())
    return Proven(run.stats())


def _run(net: Network, region: Box, spec: Spec, timeout: float | None, options: BabOptions,
         onnx_path: str | Path | None, attack_region: Box | None) -> Search:
    """Check `check`'s arguments; a Search over the region reshaped to the network input."""
    if region.batch_size != 1 or spec.batch_size != 1:
        raise ProfitError(f"check decides one region and one spec (got batches {region.batch_size} "
                          f"and {spec.batch_size}); use check_problems for several")
    if timeout is not None and not timeout > 0:
        raise ProfitError(f"timeout must be > 0 seconds, got {timeout}")
    shape = tuple(net.input_shape)
    if region.lower.numel() != math.prod(shape):
        raise ProfitError(f"region of shape {tuple(region.shape)} does not fit the network input {shape}")
    if spec.n_outputs != net.n_outputs:
        raise ProfitError(f"spec reads {spec.n_outputs} outputs, the network has {net.n_outputs}")
    attack_region = region if attack_region is None else attack_region
    return Search(net, Box(region.lower.reshape(1, *shape), region.upper.reshape(1, *shape)), spec, timeout,
               options, onnx_path, Box(attack_region.lower.reshape(1, *shape), attack_region.upper.reshape(1, *shape)))


def _check(run: Search, attack_first: bool) -> Outcome:
    if attack_first:
        cex = run.attack(run.region)
        if cex is not None:
            return cex
    mode = run.options.mode
    if mode == "auto":
        few_inputs = _input_coordinates(run.region) <= run.options.max_input_dims
        mode = "input" if few_inputs or not any(isinstance(n.layer, Relu) for n in run.net.nodes) else "relu"
    run.mode = mode
    try:
        if mode == "input":
            return input_split.search(run)
        return relu_split.search(run)
    except DomainError as exc:
        return Unknown(f"unsupported: {exc}")
    except DeadlineExceeded:  # a root bound pass ran past the timeout
        return Unknown("timeout")


def check_problems(net: Network, problems: Sequence[tuple[Box, Spec]], timeout: float | None = None,
                   options: BabOptions = BabOptions(), onnx_path: str | Path | None = None,
                   inward: bool = True, attack_regions: Sequence[Box | None] | None = None) -> Outcome:
    """Decide "every problem's spec holds on its box" (e.g. the problems of one VNN-LIB file).

    A counterexample of any problem answers; Proven needs all. The attack runs on every
    problem first; then each problem gets an equal share of the time left for its BaB
    (time a problem does not use passes on). inward: counterexamples must lie one
    float32 step inside each box (`strictly_inside`), for boxes rounded outward from
    decimal bounds, as the VNN-LIB parser does (a coordinate only one step wide holds no
    such point: it sits at one end, the other coordinates keep their room); attack_regions: where counterexamples of
    each problem must lie when known exactly (e.g. `VnnlibProblem.inner`, the float32 box
    inside the written bounds, which keeps bounds that float32 represents exactly), None
    entries falling back to `inward`.
    """
    start = time.perf_counter()
    regions = []
    for k, (box, spec) in enumerate(problems):
        attack_region = None if attack_regions is None else attack_regions[k]
        if inward and attack_region is None:
            attack_region = strictly_inside(box)[0]
        regions.append(attack_region)
        if len(problems) > 1:
            left = None if timeout is None else timeout - (time.perf_counter() - start)
            if left is not None and left <= 0:
                return Unknown("timeout", BabStats("attack", seconds=time.perf_counter() - start))
            run = _run(net, box, spec, left, options, onnx_path, attack_region)
            cex = run.attack(run.region)
            if cex is not None:
                return Counterexample(cex.x.reshape(box.lower.shape), cex.y,
                                      BabStats("attack", seconds=time.perf_counter() - start))
    undecided: list[Unknown] = []
    done: list[BabStats] = []

    def total() -> BabStats:
        return BabStats("/".join(sorted({s.mode for s in done})), sum(s.domains for s in done),
                        sum(s.batches for s in done), max((s.max_live for s in done), default=0),
                        time.perf_counter() - start, sum(s.conflicts for s in done), sum(s.pruned for s in done))

    for k, (box, spec) in enumerate(problems):
        share = None
        if timeout is not None:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                undecided.append(Unknown("timeout"))
                break
            share = left / (len(problems) - k)
        outcome = check(net, box, spec, share, options, onnx_path, regions[k], attack_first=len(problems) == 1)
        done.append(outcome.stats)
        if isinstance(outcome, Counterexample):
            return Counterexample(outcome.x, outcome.y, total())
        if isinstance(outcome, Unknown):
            undecided.append(outcome)
    if not undecided:
        return Proven(total())
    reasons = sorted({u.reason for u in undecided})
    return Unknown("timeout" if "timeout" in reasons else reasons[0], total())
