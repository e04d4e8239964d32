"""Learned conflicts (BabOptions.conflicts) on and off on VNN-COMP 2021 instances: the
live pool against subdomains bounded.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conflicts.py --timeout 90 \\
        --match 256x4.onnx,prop_3_0.03 --match 256x4.onnx,prop_10_0.05

Per instance and setting: verdict, seconds, subdomains bounded, conflicts learned,
subdomains pruned by them, seconds spent learning, the live pool at the end and at the
same number of bounded subdomains for both settings (the smaller final count: a timed
run on a shared machine bounds a varying number, and the pool's growth rate changes
with depth, so only equal counts compare), and the growth per bounded subdomain there.
The per-batch trace comes from wrapping `Search.record_batch` and `_Clause.learn` in this
process (measurement only). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from networks.datasets import shared_dir  # noqa: E402  (after making the repo importable)
from profit.bab import BabOptions, Counterexample, Proven, check_problems  # noqa: E402
from profit.bab import relu_split  # noqa: E402
from profit.bab.search import Search  # noqa: E402
from profit.data import load_network  # noqa: E402
from profit.verify.vnnlib import load_problems  # noqa: E402

trace: list[tuple[int, int]] = []  # (subdomains bounded so far, live) after each batch
learning = [0.0]


def _instrument() -> None:
    record, learn = Search.record_batch, relu_split._Clause.learn

    def record_batch(self: Search, n: int, seconds: float, live: int) -> None:
        record(self, n, seconds, live)
        trace.append((self.domains, live))

    def timed_learn(self, b, store) -> int:
        start = time.perf_counter()
        try:
            return learn(self, b, store)
        finally:
            learning[0] += time.perf_counter() - start

    Search.record_batch = record_batch
    relu_split._Clause.learn = timed_learn


def _live_at(points: list[tuple[int, int]], domains: int) -> int:
    """The live pool after the last batch that ended at or below `domains` bounded."""
    k = bisect.bisect_right([d for d, _ in points], domains)
    return points[max(k - 1, 0)][1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="mnistfc")
    parser.add_argument("--match", action="append", required=True, metavar="ONNX,VNNLIB",
                        help="instances whose names contain both parts (repeatable)")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shared = shared_dir()
    if shared is None:
        print("conflicts.py: ../shared is absent (set PROFIT_SHARED)", file=sys.stderr)
        return 2
    _instrument()
    root = shared / "benchmarks" / "vnncomp2021"
    folder = root / args.benchmark
    with (folder / f"{args.benchmark}_instances.csv").open(newline="") as f:
        pairs = [m.partition(",")[::2] for m in args.match]
        instances = [r for r in csv.reader(f) if r and any(a in r[0] and b in r[1] for a, b in pairs)]
    print(f"{'instance':<34} {'conf':<5} {'result':<8} {'sec':>6} {'domains':>8} {'learned':>7} {'pruned':>7} "
          f"{'learn s':>7} {'live':>7} {'at D':>7} {'live@D':>7} {'growth@D':>8}")
    for onnx, vnnlib, timeout in instances:
        net = load_network(folder / onnx.strip())
        problems = [(p.box, p.spec) for p in load_problems(net, folder / vnnlib.strip())]
        runs = []
        for on in (True, False):
            trace.clear()
            learning[0] = 0.0
            t0 = time.perf_counter()
            outcome = check_problems(net, problems, min(float(timeout), args.timeout),
                                     dataclasses.replace(BabOptions(), conflicts=on))
            result = "UNSAT" if isinstance(outcome, Proven) else "SAT" if isinstance(outcome, Counterexample) \
                else getattr(outcome, "reason", "unknown").split(":")[0]
            runs.append((on, result, time.perf_counter() - t0, outcome.stats, list(trace), learning[0]))
        common = min(s.domains for _, _, _, s, _, _ in runs)
        name = f"{onnx.strip().removesuffix('.onnx')}/{vnnlib.strip().removesuffix('.vnnlib')}"
        for on, result, seconds, s, points, learn_s in runs:
            live_d = _live_at(points, common) if points else 0
            print(f"{name:<34} {'on' if on else 'off':<5} {result:<8} {seconds:>6.1f} {s.domains:>8} "
                  f"{s.conflicts:>7} {s.pruned:>7} {learn_s:>7.1f} {points[-1][1] if points else 0:>7} {common:>7} "
                  f"{live_d:>7} {live_d / max(common, 1):>8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
