"""Decide a VNN-LIB property of an ONNX network, as in the VNN-COMP interface.

    outcome = run_vnnlib("net.onnx", "prop.vnnlib", timeout=60)
    outcome.result          # "sat" | "unsat" | "unknown" | "timeout"
    Path("out.txt").write_text(outcome.text())

`decide(net, problems, timeout)` runs the complete verifier `profit.bab.check_problems`:
an attack on every problem (quick pass, PGD; every candidate confirmed with
onnxruntime), then branch and bound per problem (input splitting for few inputs,
ReLU splitting otherwise), within the timeout. Answers:

- sat: a counterexample that onnxruntime confirmed (inside the box as written:
  attacks search the box shrunk one float32 step inward, `strictly_inside`, because
  the parsed bounds are rounded outward; its real outputs violate the property); the result text carries it in VNN-COMP form
  `((X_0 v) ... (Y_0 v))` with onnxruntime's outputs;
- unsat: every problem proven (every subdomain of its BaB proven by a sound bound);
- timeout: the time ran out with a problem open; unknown: the BaB stopped without
  a decision for another reason (its memory cap, an unsupported op, float32 precision).
"""

from __future__ import annotations

import csv
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from torch import Tensor

from networks.ir import Network, UnsupportedOpError
from profit.attacks import AttackOptions
from profit.bab import BabOptions, Counterexample, Proven, check_problems
from profit.errors import ProfitError
from profit.data import load_network
from specs.regions import Box
from specs.vnnlib import VnnlibProblem, parse_vnnlib, write_counterexample
from specs.vnnlib2 import Vnnlib2Unsupported, read_query

RESULTS = ("sat", "unsat", "unknown", "timeout")  # first line of a VNN-COMP result file


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
        shaped.append(_shaped(p, net.input_shape))
    return shaped


def _shaped(problem: VnnlibProblem, shape: tuple[int, ...]) -> VnnlibProblem:
    """The problem with its boxes reshaped to (1, *shape)."""
    def reshape(box: Box | None) -> Box | None:
        return None if box is None else Box(box.lower.reshape(1, *shape), box.upper.reshape(1, *shape))

    return VnnlibProblem(reshape(problem.box), problem.spec, reshape(problem.inner))


def decide(
    net: Network,
    problems: list[VnnlibProblem],
    timeout: float | None,
    onnx_path: str | Path | None = None,
    attack: AttackOptions | None = None,
    options: BabOptions = BabOptions(),
) -> Decision:
    """sat / unsat / unknown / timeout for the property "every problem's spec holds on its box".

    problems: boxes shaped (1, *net.input_shape); onnx_path: the file used to confirm
    counterexamples (default net.source); attack: replaces options.attack if given.
    decided_by is "bab-<mode>" with mode attack, input or relu (what ran last).
    """
    net = net.flat_output()  # VNN-LIB's Y_j index the flattened output
    onnx = Path(onnx_path or net.source)
    if not onnx.is_file():
        raise ProfitError(f"the network's ONNX file is needed to confirm counterexamples (got '{onnx}')")
    if attack is not None:
        options = replace(options, attack=attack)
    outcome = check_problems(net, [(p.box, p.spec) for p in problems], timeout, options, onnx_path=onnx,
                             attack_regions=[p.inner for p in problems])
    by = f"bab-{outcome.stats.mode or 'attack'}"
    if isinstance(outcome, Proven):
        return Decision("unsat", None, by)
    if isinstance(outcome, Counterexample):
        return Decision("sat", (outcome.x.reshape(-1), outcome.y[0]), by)
    return Decision("timeout" if outcome.reason == "timeout" else "unknown", None, f"{by} ({outcome.reason})")


def run_vnnlib(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float | None = None,
               attack: AttackOptions | None = None) -> VnnlibOutcome:
    """Load the network, parse the property against it and `decide`; the time includes loading."""
    if timeout is not None and not timeout > 0:
        raise ProfitError(f"timeout must be > 0 seconds, got {timeout}")
    start = time.perf_counter()
    net = load_network(onnx_path)
    problems = load_problems(net, vnnlib_path)
    remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 1e-3)
    decision = decide(net, problems, remaining, onnx_path=net.source, attack=attack)
    return VnnlibOutcome(decision, time.perf_counter() - start)


def run_vnnlib2(query_path: str | Path, networks: dict[str, str | Path], timeout: float | None = None,
                attack: AttackOptions | None = None) -> VnnlibOutcome:
    """Decide a VNN-LIB 2.0 query (`specs.vnnlib2`) of the network `networks[name]`, as `run_vnnlib`.

    networks: declared network name -> ONNX file (the `--network NAME=PATH` of VNN-LIB 2.0's
    solver interface). The query's input and output are flattened row-major, as the
    network's are; their sizes must be the network's. Raises `Vnnlib2Unsupported` for a
    query profit cannot decide (several networks, hidden nodes, ...)."""
    if timeout is not None and not timeout > 0:
        raise ProfitError(f"timeout must be > 0 seconds, got {timeout}")
    start = time.perf_counter()
    query = read_query(query_path)
    if len(networks) != 1:
        raise Vnnlib2Unsupported(f"{len(networks)} networks given; only single-network queries are supported")
    (name, onnx_path), = networks.items()
    if name != query.network:
        raise ProfitError(f"{query_path}: declares network {query.network}, got --network {name}=...")
    with tempfile.TemporaryDirectory(prefix="profit-vnnlib2-") as folder:
        if query.hidden:
            onnx_path = _with_hidden_outputs(onnx_path, [v.tensor for v in query.hidden], Path(folder) / "hidden.onnx")
        try:
            net = load_network(onnx_path)
        except UnsupportedOpError as exc:  # no proof possible: look for a counterexample with onnxruntime alone
            decision = _sample_onnx(onnx_path, query.problems(), time.perf_counter() + (timeout or 30.0) / 2)
            if decision is None:
                raise
            return VnnlibOutcome(decision, time.perf_counter() - start)
        n_in, n_out = math.prod(net.input_shape), net.n_outputs
        for var, size in ((query.input, n_in), (query.output, n_out - query.n_outputs + math.prod(query.output.shape))):
            if math.prod(var.shape) != size:
                raise ProfitError(f"{query_path}: {var.kind} {var.name} has shape {list(var.shape)} "
                                  f"({math.prod(var.shape)} values), the network's has {size}")
        problems = [_shaped(p, net.input_shape) for p in query.problems()]
        remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 1e-3)
        if not problems:  # every disjunct has an empty input box: nothing satisfies the query
            return VnnlibOutcome(Decision("unsat", None, "parser"), time.perf_counter() - start)
        decision = decide(net, problems, remaining, onnx_path=net.source, attack=attack)
    return VnnlibOutcome(decision, time.perf_counter() - start)


_SAMPLES = 2000  # random points per problem for `_sample_onnx`, besides the box's centre and corners


def _sample_onnx(onnx_path: str | Path, problems: list[VnnlibProblem], deadline: float) -> Decision | None:
    """sat with a counterexample found by running onnxruntime alone (for a network the IR cannot
    hold) on each problem's centre, corners (up to 2^10) and random points of its attack box, or None.
    The points lie in the float32 box inside the bounds as written; onnxruntime's outputs violate
    the problem's spec: the same two conditions as every other `sat`."""
    import numpy as np
    import torch

    from profit.attacks import session

    sess = session(onnx_path)
    feed = sess.get_inputs()[0]
    dims = [d if isinstance(d, int) else 1 for d in feed.shape]
    rng = np.random.default_rng(0)
    for problem in problems:
        if problem.inner is None:
            continue
        lo, hi = problem.inner.lower.reshape(-1).double().numpy(), problem.inner.upper.reshape(-1).double().numpy()
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or lo.size != math.prod(dims):
            return None
        points = [(lo + hi) / 2]
        if lo.size <= 10:
            corners = np.array(np.meshgrid(*[[0, 1]] * lo.size)).reshape(lo.size, -1).T
            points += list(np.where(corners == 1, hi, lo))
        points += list(lo + (hi - lo) * rng.random((_SAMPLES, lo.size)))
        for x in points:
            if time.perf_counter() > deadline:
                return None
            x32 = np.clip(x, lo, hi).astype(np.float32)
            y = np.asarray(sess.run(None, {feed.name: x32.reshape(dims)})[0], dtype=np.float64).reshape(1, -1)
            if y.shape[1] != problem.spec.n_outputs or not np.isfinite(y).all():
                return None
            if float(problem.spec.margin(torch.from_numpy(y))[0]) <= 0:
                return Decision("sat", (torch.from_numpy(x32), torch.from_numpy(y[0])), "onnx-sampling")
    return None


def _with_hidden_outputs(onnx_path: str | Path, tensors: list[str], out: Path) -> Path:
    """The ONNX model whose one output is its hidden `tensors` and then its output, each reshaped
    to (1, -1), concatenated: the values VNN-LIB 2.0's hidden variables and output name, in order.
    The same file confirms counterexamples, so a `sat` is still checked by onnxruntime."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from networks.ir import NetworkError

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:
        raise NetworkError(f"{onnx_path}: not a readable ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    if len(graph.output) != 1:
        raise Vnnlib2Unsupported(f"{onnx_path}: {len(graph.output)} outputs; only one is supported")
    known = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    missing = [t for t in tensors if t not in known]
    if missing:
        raise ProfitError(f"{onnx_path}: no tensor named {', '.join(missing)} (declare-hidden)")
    shape_name = "profit_hidden/shape"
    graph.initializer.append(numpy_helper.from_array(np.array([1, -1], np.int64), shape_name))
    flat = []
    for k, tensor in enumerate([*tensors, graph.output[0].name]):
        flat.append(f"profit_hidden/flat{k}")
        graph.node.append(helper.make_node("Reshape", [tensor, shape_name], [flat[-1]]))
    graph.node.append(helper.make_node("Concat", flat, ["profit_hidden/all"], axis=1))
    dtype = graph.output[0].type.tensor_type.elem_type
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("profit_hidden/all", dtype, None))
    onnx.save(model, str(out))
    return out


@dataclass(frozen=True)
class VnnlibInstance:
    """One row of a VNN-COMP instances CSV: the names as the CSV gives them, the files, the timeout."""

    onnx: str
    vnnlib: str
    onnx_path: str
    vnnlib_path: str
    timeout: float | None


def read_instances(path: str | Path, timeout: float | None = None) -> list[VnnlibInstance]:
    """The instances of a VNN-COMP instances CSV: rows `onnx,vnnlib,timeout` (no header, or one
    whose timeout field is not a number), paths relative to the CSV's folder (a missing
    `x.vnnlib` may be given as `x.vnnlib.gz`); `timeout` overrides every row's. A bad row is
    an error naming its line."""
    path = Path(path)
    if not path.is_file():
        raise ProfitError(f"{path}: no such instances file")
    folder = path.parent
    instances: list[VnnlibInstance] = []
    try:
        with path.open(newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfitError(f"{path}: cannot read the instances ({exc})") from None
    for number, row in enumerate(lines, 1):
        row = [c.strip() for c in row]
        if not any(row) or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise ProfitError(f"{path}:{number}: expected onnx,vnnlib,timeout, got {','.join(row)!r}")
        seconds: float | None = None
        if len(row) > 2 and row[2]:
            try:
                seconds = float(row[2])
            except ValueError:
                if number == 1 and not instances:  # a header line
                    continue
                raise ProfitError(f"{path}:{number}: the timeout {row[2]!r} is not a number") from None
            if not seconds > 0 or math.isinf(seconds):
                raise ProfitError(f"{path}:{number}: the timeout must be > 0 seconds, got {row[2]}")
        onnx, vnnlib = (folder / row[0]), (folder / row[1])
        if not vnnlib.is_file() and Path(f"{vnnlib}.gz").is_file():
            vnnlib = Path(f"{vnnlib}.gz")
        for file in (onnx, vnnlib):
            if not file.is_file():
                raise ProfitError(f"{path}:{number}: {file}: no such file")
        instances.append(VnnlibInstance(row[0], row[1], str(onnx), str(vnnlib),
                                        timeout if timeout is not None else seconds))
    if not instances:
        raise ProfitError(f"{path}: holds no instances")
    return instances


def counterexample_holds(onnx_path: str | Path, vnnlib_path: str | Path, x: Tensor) -> bool:
    """An independent re-check of a `sat` answer: the flat input x lies in an input box of the
    property as parsed afresh, and onnxruntime's outputs there violate that box's spec."""
    import torch

    from networks import load_onnx
    from profit.attacks import onnx_outputs

    net = load_onnx(onnx_path)
    x = x.reshape(1, *net.input_shape)
    y = onnx_outputs(onnx_path, net, x).to(torch.float64)
    problems = parse_vnnlib(Path(vnnlib_path), x.numel(), net.n_outputs)
    return any(bool(p.box.contains(x.reshape(p.box.lower.shape).to(p.box.lower.dtype))[0])
               and float(p.spec.margin(y)[0]) <= 0 for p in problems)
