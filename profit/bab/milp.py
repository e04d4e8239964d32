"""Mixed-integer programs (HiGHS) over a ReLU network: tightened pre-activation bounds and an
exact check of a spec, both run in worker processes.

The network must be a chain: affine layers (Linear, Conv, Affine, AvgPool, Reshape, Pad,
Transpose) and ReLUs, each node reading the one before (`Chain.of` returns None for
anything else, and the callers then skip the MILP). Each affine stretch between two
ReLU layers is materialised as one dense map z_i = W_i a_{i-1} + b_i in float64 (the
input's a_{-1} = x). The big-M encoding (Tjeng et al., ICLR 2019) of ReLU layer i with
pre-activation bounds l <= z <= u:

    u <= 0: a = 0;     l >= 0: a = z;
    otherwise: a >= 0, a >= z, a <= z - l (1 - d), a <= u d, d in {0, 1},

with x in the input box. It is exact for the network on the box (given sound l, u).

`tighten` bounds, layer by layer from the second ReLU layer (the first's bounds are
exact for its affine map over a box), the unstable neurons closest to stable first:
each neuron's nearer side (min z when -l < u, else max z) is one MILP with a per-neuron
time limit, stopped as soon as its sign is decided -- a solution on the wrong side of 0
(HiGHS' objective target) or a dual bound past 0 (a callback interrupts the search). The
MILP's dual bound is a valid bound of the neuron; it is widened by `MilpOptions.tolerance`
x (1 + |v|) for the solver's feasibility, integrality and optimality tolerances (1e-6,
1e-6, 1e-7 relative by default) before it is intersected with the given bounds. Later
layers' bounds are then recomputed by CROWN over the tightened ones. Tasks run in a pool
of forked worker processes (numpy and HiGHS only; the model data are inherited, not
pickled), within a share of the search's time; the pool is terminated on return.

`MilpRace` solves the whole spec as a MILP in one forked process while branch and bound
runs: min t with t >= C_r y + d_r for the rows r of one clause, per clause; a dual bound
above the tolerance proves the clause, a solution with t <= 0 is a candidate
counterexample that the caller confirms with onnxruntime. Its result is polled between
BaB batches; `close` kills the process.

Workers are forked (POSIX): where the platform cannot fork, `available()` is False and
the callers run branch and bound alone. Time limits make which neurons get tightened,
and whether the race or branch and bound answers first, depend on the machine's speed;
the answer itself is sound either way.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import highspy
import numpy as np
import torch
from torch import Tensor

from domains.backsub import default_relaxation, propagate
from domains.deeppoly import LinearBoundOptions
from networks.ir import Affine, AvgPool, Conv, Input, Linear, Network, Node, Pad, Relu, Reshape, Transpose
from specs.properties import Spec
from specs.regions import Box

_AFFINE = (Linear, Conv, Affine, AvgPool, Reshape, Pad, Transpose)
_MAX_DENSE = 2e7  # entries of one materialised affine map; larger chains skip the MILP


def available() -> bool:
    """Whether worker processes can be forked here."""
    return "fork" in mp.get_all_start_methods()


@dataclass(frozen=True)
class MilpOptions:
    """MILP tightening and racing (see the module docstring).

    after: share of the timeout that branch and bound runs alone first (easy instances never
    pay for the MILP); share: of the search's time left then spent tightening; layers: ReLU layers tightened,
    counted from the second; neuron_seconds: time limit of one neuron's MILP; workers:
    processes; far_sides: also tighten each neuron's farther side when time is left;
    tolerance: relative and absolute widening of every MILP bound; race: race an exact
    MILP against branch and bound when at most this many ReLUs are unstable after
    tightening (0: never)."""

    after: float = 0.2
    share: float = 0.45
    layers: int = 2
    neuron_seconds: float = 5.0
    workers: int = 2
    far_sides: bool = False
    tolerance: float = 1e-4
    race: int = 300

    def widen(self, value: np.ndarray) -> np.ndarray:
        return self.tolerance * (1.0 + np.abs(value))


@dataclass(frozen=True)
class Chain:
    """A ReLU network as dense affine maps (float64): z_i = W_i a_{i-1} + b_i for the ReLU
    layers i < L (their pre-activation node names in `names`), then the output W_L a_{L-1} + b_L."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    names: list[str]

    @staticmethod
    def of(net: Network) -> Chain | None:
        """The chain of `net`, or None if it is not one (see the module docstring)."""
        nodes = net.to(torch.float64).nodes
        if not isinstance(nodes[0].layer, Input):
            return None
        for prev, node in zip(nodes, nodes[1:]):
            if tuple(node.inputs) != (prev.name,) or not isinstance(node.layer, _AFFINE + (Relu,)):
                return None
        weights, biases, names = [], [], []
        segment: list[Node] = []
        shape = tuple(nodes[0].shape)
        for node in list(nodes[1:]) + [None]:
            if node is not None and not isinstance(node.layer, Relu):
                segment.append(node)
                continue
            if not segment:
                return None  # two ReLUs in a row, or a ReLU on the input
            affine = _materialise(segment, shape)
            if affine is None:
                return None
            weights.append(affine[0])
            biases.append(affine[1])
            if node is not None:
                names.append(segment[-1].name)
                shape = tuple(node.shape)
            segment = []
        return Chain(weights, biases, names)


def _materialise(segment: list[Node], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """The affine map of a stretch of affine nodes (float64), from its values at 0 and the
    unit vectors; None if it is too large to hold densely."""
    n_in = math.prod(shape)
    n_out = math.prod(segment[-1].shape)
    if n_in * n_out > _MAX_DENSE:
        return None
    x = torch.cat([torch.zeros(1, n_in), torch.eye(n_in)]).double().reshape(n_in + 1, *shape)
    with torch.no_grad():
        for node in segment:
            x = node.layer.forward(x)
    out = x.reshape(n_in + 1, -1)
    return (out[1:] - out[0]).T.numpy().copy(), out[0].numpy().copy()


# ------------------------------------------------------------------- the encoding

class _Model:
    """A HiGHS model of the chain's first `k` ReLU layers over the box; `prev` are the
    columns of a_{k-1} (or x for k = 0)."""

    def __init__(self, chain: Chain, lower: np.ndarray, upper: np.ndarray,
                 bounds: list[tuple[np.ndarray, np.ndarray]], k: int) -> None:
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.addVars(len(lower), lower, upper)
        prev = np.arange(len(lower), dtype=np.int32)
        ncol = len(lower)
        for i in range(k):
            l, u = bounds[i]
            W, b = chain.weights[i], chain.biases[i]
            n = len(l)
            cols = np.arange(ncol, ncol + n, dtype=np.int32)
            h.addVars(n, np.maximum(l, 0.0), np.maximum(u, 0.0))
            ncol += n
            unstable = np.nonzero((l < 0) & (u > 0))[0]
            active = np.nonzero(l >= 0)[0]
            d = np.arange(ncol, ncol + len(unstable), dtype=np.int32)
            if len(unstable):
                h.addVars(len(unstable), np.zeros(len(unstable)), np.ones(len(unstable)))
                h.changeColsIntegrality(len(unstable), d, np.array([highspy.HighsVarType.kInteger] * len(unstable)))
            ncol += len(unstable)
            rows = _Rows()
            for j in active:  # a - W a_prev = b
                rows.add(b[j], b[j], np.r_[cols[j], prev], np.r_[1.0, -W[j]])
            for q, j in enumerate(unstable):
                rows.add(b[j], math.inf, np.r_[cols[j], prev], np.r_[1.0, -W[j]])  # a >= z
                rows.add(-math.inf, b[j] - l[j], np.r_[cols[j], prev, d[q]], np.r_[1.0, -W[j], -l[j]])  # a <= z - l(1-d)
                rows.add(-math.inf, 0.0, np.r_[cols[j], d[q]], np.r_[1.0, -u[j]])  # a <= u d
            rows.flush(h)
            prev = cols
        self.highs, self.prev, self.n_in = h, prev, len(lower)

    def add_max(self, G: np.ndarray, g: np.ndarray) -> np.ndarray:
        """A column t >= G_r . a_prev + g_r for every row r (t free); returns [t's column]."""
        h = self.highs
        t = h.getNumCol()
        h.addVars(1, np.array([-math.inf]), np.array([math.inf]))
        rows = _Rows()
        for r in range(len(g)):
            rows.add(g[r], math.inf, np.r_[t, self.prev], np.r_[1.0, -G[r]])
        rows.flush(h)
        return np.array([t], dtype=np.int32)

    def minimize(self, cost: np.ndarray, offset: float, target: float | None, seconds: float,
                 stop_above: float | None, cols: np.ndarray | None = None) -> tuple[float, float, np.ndarray | None]:
        """min cost . a_prev + offset (or over `cols`): (valid lower bound, best value found, its x
        or None). target: stop once a solution <= target is found; stop_above: once the dual
        bound exceeds it."""
        h = self.highs
        cols = self.prev if cols is None else cols
        h.changeColsCost(len(cols), cols, cost)
        h.changeObjectiveOffset(offset)
        h.setOptionValue("objective_target", -math.inf if target is None else target)
        h.setOptionValue("time_limit", max(seconds, 1e-3))
        state = {"dual": -math.inf}

        def interrupt(event) -> None:
            bound = event.data_out.mip_dual_bound
            if math.isfinite(bound):
                state["dual"] = max(state["dual"], bound)
            if stop_above is not None and bound > stop_above:
                event.interrupt = True

        h.cbMipInterrupt.subscribe(interrupt)
        try:
            h.run()
        finally:
            h.cbMipInterrupt.unsubscribe(interrupt)
        status = h.getModelStatus()
        info = h.getInfo()
        if status == highspy.HighsModelStatus.kInfeasible:
            return math.inf, math.inf, None
        dual = state["dual"]
        if status in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kObjectiveTarget,
                      highspy.HighsModelStatus.kTimeLimit):
            if math.isfinite(info.mip_dual_bound):
                dual = max(dual, info.mip_dual_bound)
        primal = info.objective_function_value if info.primal_solution_status == 2 else math.inf
        x = np.asarray(h.getSolution().col_value[:self.n_in]) if math.isfinite(primal) else None
        return dual, primal, x


class _Rows:
    """Rows collected as CSR, added to HiGHS in one call."""

    def __init__(self) -> None:
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.idx: list[np.ndarray] = []
        self.val: list[np.ndarray] = []

    def add(self, lo: float, hi: float, idx: np.ndarray, val: np.ndarray) -> None:
        keep = val != 0
        self.lo.append(lo)
        self.hi.append(hi)
        self.idx.append(idx[keep].astype(np.int32))
        self.val.append(val[keep].astype(np.float64))

    def flush(self, h: highspy.Highs) -> None:
        if not self.lo:
            return
        starts = np.cumsum([0] + [len(i) for i in self.idx])[:-1].astype(np.int32)
        idx, val = np.concatenate(self.idx), np.concatenate(self.val)
        h.addRows(len(self.lo), np.array(self.lo), np.array(self.hi), len(idx), starts, idx, val)


# ------------------------------------------------------------------- tightening

_JOB: dict = {}  # what forked workers inherit: the chain, box, bounds and, once built, the model


def _start_worker() -> None:
    """In a forked child: a fresh HiGHS thread scheduler (the parent's threads are not
    forked with it), so that each model runs on one thread; stdout to /dev/null (HiGHS
    prints a banner per process; results travel through pipes, and a CLI's stdout stays clean);
    on Linux, killed with the parent (PR_SET_PDEATHSIG), so that nothing outlives a killed run."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    highspy.Highs.resetThreadScheduler(False)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _solve_neuron(task: tuple[int, int, float, bool]) -> tuple[int, int, float]:
    """In a worker: a valid lower bound of sense * z_j (layer _JOB["k"]) by MILP; the nearer
    side (near) stops once the sign is decided, the farther one runs to its time limit."""
    j, sense, seconds, near = task
    if "model" not in _JOB:
        _JOB["model"] = _Model(_JOB["chain"], _JOB["lower"], _JOB["upper"], _JOB["bounds"], _JOB["k"])
    k = _JOB["k"]
    W, b = _JOB["chain"].weights[k][j], _JOB["chain"].biases[k][j]
    cutoff = 0.0 if near else None  # the nearer side stops once its sign is decided
    dual, _, _ = _JOB["model"].minimize(sense * W, float(sense * b), cutoff, seconds, cutoff)
    return j, sense, dual


def _run_pool(tasks: list[tuple[int, int, float, bool]], workers: int, until: float) -> list[tuple[int, int, float]]:
    """Run the tasks in forked workers, at most `workers` at a time, none started after
    `until`, each given at most the time left; the pool is terminated on return."""
    pool = mp.get_context("fork").Pool(workers, initializer=_start_worker)
    results: list[tuple[int, int, float]] = []
    try:
        pending = []
        queue = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < workers:
                left = until - time.perf_counter()
                task = next(queue, None) if left > 0.05 else None
                if task is None:
                    exhausted = True
                    break
                j, sense, seconds, near = task
                pending.append(pool.apply_async(_solve_neuron, ((j, sense, min(seconds, left), near),)))
            if not pending:
                break
            ready = [r for r in pending if r.ready()]
            for r in ready:
                pending.remove(r)
                if r.successful():
                    results.append(r.get())
            if not ready:
                if time.perf_counter() > until + 1.0:
                    break  # a solver past its time limit: its task is dropped
                time.sleep(0.005)
    finally:
        pool.terminate()
        pool.join()
    return results


@dataclass
class TightenStats:
    """What `tighten` did per layer: MILPs solved, neurons made stable, seconds."""

    solved: list[int]
    stabilised: list[int]
    unstable_before: list[int]
    unstable_after: list[int]
    seconds: float = 0.0


def _to_f32(value: np.ndarray, outward: float) -> Tensor:
    """float64 -> float32 rounded towards -inf (outward < 0) or +inf (outward > 0)."""
    v = torch.as_tensor(value, dtype=torch.float64)
    f = v.float()
    if outward < 0:
        return torch.where(f.double() > v, torch.nextafter(f, torch.tensor(-math.inf)), f)
    return torch.where(f.double() < v, torch.nextafter(f, torch.tensor(math.inf)), f)


def tighten(net: Network, chain: Chain, region: Box, bounds: dict[str, tuple[Tensor, Tensor]],
            options: MilpOptions, until: float, stop: float | None = None
            ) -> tuple[dict[str, tuple[Tensor, Tensor]], TightenStats]:
    """Pre-activation bounds (batch 1) of the chain's ReLU layers tightened by MILP until
    `until` (time.perf_counter()); every returned bound is within the given one. Earlier
    layers first: a layer gets all the time left until each of its unstable neurons has had
    its MILP (on 256x4 prop_10_0.05 an equal split per layer decided 31 of the 82 layer-2
    neurons, this order all 82). Later layers are recomputed by CROWN over each tightened
    layer (`stop`: its hard deadline)."""
    started = time.perf_counter()
    names = chain.names
    lower = region.lower.double().reshape(-1).numpy()
    upper = region.upper.double().reshape(-1).numpy()
    current = {k: (bounds[k][0].reshape(-1).double().numpy().copy(), bounds[k][1].reshape(-1).double().numpy().copy())
               for k in names}
    shapes = {k: tuple(bounds[k][0].shape) for k in names}
    stats = TightenStats([], [], [], [])
    last = min(len(names), 1 + options.layers)
    for k in range(1, last):
        now = time.perf_counter()
        if now >= until:
            break
        l, u = current[names[k]]
        unstable = np.nonzero((l < 0) & (u > 0))[0]
        stats.unstable_before.append(len(unstable))
        near = np.where(-l[unstable] < u[unstable], 1, -1)  # +1: min z (prove z >= 0); -1: max z
        closeness = np.minimum(-l[unstable], u[unstable]) / (u[unstable] - l[unstable])
        order = np.argsort(closeness, kind="stable")
        tasks = [(int(unstable[i]), int(near[i]), options.neuron_seconds, True) for i in order]
        if options.far_sides:
            tasks += [(int(unstable[i]), -int(near[i]), options.neuron_seconds, False) for i in order]
        _JOB.clear()
        _JOB.update(chain=chain, lower=lower, upper=upper, k=k,
                    bounds=[current[n] for n in names[:k]])
        results = _run_pool(tasks, options.workers, until)
        _JOB.clear()
        l, u = l.copy(), u.copy()
        for j, sense, dual in results:
            if not math.isfinite(dual):
                continue  # infinite: no bound (or an infeasible model, which sound bounds exclude)
            value = dual - float(options.widen(np.array(dual)))
            if sense > 0:
                l[j] = max(l[j], value)
            else:
                u[j] = min(u[j], -value)
        current[names[k]] = (l, u)
        after = int(((l < 0) & (u > 0)).sum())
        stats.solved.append(len(results))
        stats.stabilised.append(len(unstable) - after)
        stats.unstable_after.append(after)
        if k + 1 < len(names):
            prior = {n: (_to_f32(current[n][0], -1).reshape(shapes[n]), _to_f32(current[n][1], 1).reshape(shapes[n]))
                     for n in names}
            ctx = propagate(net, region.lower.float(), region.upper.float(), default_relaxation, everything=False,
                            unstable_only=True, budget=LinearBoundOptions().budget, prior=prior, output=False,
                            stop=stop)
            for n in names[k + 1:]:
                cl, cu = ctx.bounds[n]
                current[n] = (np.maximum(current[n][0], cl.reshape(-1).double().numpy()),
                              np.minimum(current[n][1], cu.reshape(-1).double().numpy()))
    out = dict(bounds)
    for n in names:
        out[n] = (torch.maximum(bounds[n][0], _to_f32(current[n][0], -1).reshape(shapes[n]).to(bounds[n][0].dtype)),
                  torch.minimum(bounds[n][1], _to_f32(current[n][1], 1).reshape(shapes[n]).to(bounds[n][1].dtype)))
    stats.seconds = time.perf_counter() - started
    return out, stats


# ------------------------------------------------------------------- the race

def _race_main(conn: Connection) -> None:
    """In the racing process: decide each clause of _JOB["race"] by MILP, reporting
    ("proven", k), ("candidate", k, x) or ("unknown", k) per clause, then ("done",)."""
    _start_worker()
    job = _JOB["race"]
    chain, options = job["chain"], job["options"]
    W, b = chain.weights[-1], chain.biases[-1]
    for k in job["clauses"]:
        rows = np.nonzero(job["clause"] == k)[0]
        C, d = job["C"][rows], job["d"][rows]
        model = _Model(chain, job["lower"], job["upper"], job["bounds"], len(chain.names))
        seconds = job["until"] - time.perf_counter()
        if seconds <= 0:
            break
        tolerance = float(options.widen(np.array(0.0)))
        if len(rows) == 1:
            dual, primal, x = model.minimize(C[0] @ W, float(C[0] @ b + d[0]), 0.0, seconds, tolerance)
        else:
            t = model.add_max(C @ W, C @ b + d)
            dual, primal, x = model.minimize(np.ones(1), 0.0, 0.0, seconds, tolerance, cols=t)
        if math.isfinite(dual) and dual - float(options.widen(np.array(dual))) > 0:
            conn.send(("proven", k))
        elif x is not None and primal <= 0:
            conn.send(("candidate", k, x))
        else:
            conn.send(("unknown", k))
            break
    conn.send(("done",))


class MilpRace:
    """An exact MILP of the spec in one forked process, racing branch and bound (see the
    module docstring). `poll(confirm)` -> "proven" (every clause), a confirmed
    counterexample (whatever `confirm` returns for the MILP's point), or None (no answer
    yet, or the MILP gave up); `close()` kills the process."""

    def __init__(self, chain: Chain, region: Box, bounds: dict[str, tuple[Tensor, Tensor]], spec: Spec,
                 clauses: list[int], options: MilpOptions, until: float) -> None:
        _JOB.clear()
        _JOB["race"] = dict(
            chain=chain, options=options, until=until, clauses=list(clauses),
            lower=region.lower.double().reshape(-1).numpy(), upper=region.upper.double().reshape(-1).numpy(),
            bounds=[(bounds[n][0].reshape(-1).double().numpy(), bounds[n][1].reshape(-1).double().numpy())
                    for n in chain.names],
            C=spec.C[0].double().numpy(), d=spec.d[0].double().numpy(), clause=spec.clause.numpy())
        context = mp.get_context("fork")
        self._conn, child = context.Pipe(duplex=False)
        self.process = context.Process(target=_race_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        _JOB.clear()
        self.proven: set[int] = set()
        self.clauses = set(clauses)
        self.given_up = False

    def poll(self, confirm):
        """See the class docstring; `confirm(x)` turns a candidate point (1, n_in) into an answer or None."""
        while not self.given_up and self._conn.poll():
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                self.given_up = True
                break
            if message[0] == "proven":
                self.proven.add(message[1])
            elif message[0] == "candidate":
                found = confirm(torch.as_tensor(message[2], dtype=torch.float32).reshape(1, -1))
                if found is not None:
                    return found
                self.given_up = True
            else:
                self.given_up = True
        if self.clauses <= self.proven:
            return "proven"
        return None

    def close(self) -> None:
        """Stop the process (if still running) and reap it."""
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join()
        self._conn.close()
