"""Branch and bound (profit.bab) on VNN-COMP 2021 instances, with its work counters.

    .venv/bin/python benchmarks/bab.py --benchmark acasxu --stride 6
    .venv/bin/python benchmarks/bab.py --benchmark mnistfc --limit 10 --timeout 60 --set candidates=4 --set refine=true
    .venv/bin/python benchmarks/bab.py --benchmark mnistfc --match 256x4.onnx,prop_9_0.03 --timeout 90 --set conflicts=true

Like benchmarks/vnncomp.py (which runs the VNN-LIB front-end and compares with the
2021 tools), but calls `profit.bab.check_problems` directly and prints per instance
the outcome, the BaB mode, subdomains bounded, bound calls, most live subdomains,
conflicts learned, subdomains pruned by them and seconds, for comparing `BabOptions` (--set NAME=VALUE,
repeatable; BetaOptions fields as e.g. beta.iterations=10; milp=null switches MILP tightening and
the race off, milp.race=0 the race alone, milp.layers=0 the tightening alone; mode "milp" means
the racing MILP answered). --timeout-scale multiplies each instance's own timeout,
--timeout caps it; --match A,B keeps the instances whose onnx and vnnlib names contain A
and B (repeatable: any of them). Ends with
one summary line: solved UNSAT / SAT, undecided, wrong vs consensus, total seconds,
subdomains. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from networks.datasets import shared_dir  # noqa: E402  (after making the repo importable)
from profit.bab import BabOptions, Counterexample, Proven, check_problems  # noqa: E402
from profit.data import load_network  # noqa: E402
from profit.verify.vnnlib import load_problems  # noqa: E402

BENCHMARKS = ("test", "mnistfc", "acasxu")


def options_from(settings: list[str]) -> BabOptions:
    """BabOptions with NAME=VALUE overrides (values parsed as JSON, else kept as strings)."""
    options = BabOptions()
    for setting in settings:
        name, _, text = setting.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if "." in name:
            outer, inner = name.split(".", 1)
            value = dataclasses.replace(getattr(options, outer), **{inner: value})
            name = outer
        options = dataclasses.replace(options, **{name: value})
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=BENCHMARKS, required=True)
    parser.add_argument("--limit", type=int, help="run at most N instances")
    parser.add_argument("--stride", type=int, default=1, help="take every K-th instance (default 1)")
    parser.add_argument("--timeout", type=float, help="cap on each instance's timeout (seconds)")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiply every instance's timeout (before the cap; default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a BabOptions field, e.g. candidates=4 or beta.iterations=10")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--match", action="append", default=[], metavar="ONNX,VNNLIB",
                        help="only instances whose names contain both parts (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    shared = shared_dir()
    if shared is None:
        print("bab.py: ../shared is absent (set PROFIT_SHARED)", file=sys.stderr)
        return 2
    options = options_from(args.set)
    root = shared / "benchmarks" / "vnncomp2021"
    folder = root / args.benchmark
    with (folder / f"{args.benchmark}_instances.csv").open(newline="") as f:
        instances = [r for r in csv.reader(f) if r]
    if args.match:
        pairs = [m.partition(",")[::2] for m in args.match]
        instances = [r for r in instances if any(a in r[0] and b in r[1] for a, b in pairs)]
    instances = instances[::max(args.stride, 1)][:args.limit]
    with (root / "results_2021.csv").open(newline="") as f:
        consensus = {(r["onnx"], r["vnnlib"]): r["consensus"] for r in csv.DictReader(f)
                     if r["benchmark"] == args.benchmark}
    totals = {"UNSAT": 0, "SAT": 0, "other": 0, "wrong": 0, "domains": 0}
    start = time.perf_counter()
    print(f"{'onnx':<36} {'vnnlib':<22} {'result':<8} {'consensus':<9} {'mode':<6} {'domains':>8} "
          f"{'batches':>7} {'live':>7} {'learned':>7} {'pruned':>7} {'seconds':>8}")
    for onnx, vnnlib, timeout in instances:
        net = load_network(folder / onnx.strip())
        problems = load_problems(net, folder / vnnlib.strip())
        budget = float(timeout) * args.timeout_scale
        budget = budget if args.timeout is None else min(budget, args.timeout)
        t0 = time.perf_counter()
        outcome = check_problems(net, [(p.box, p.spec) for p in problems], budget, options)
        seconds = time.perf_counter() - t0
        result = "UNSAT" if isinstance(outcome, Proven) else "SAT" if isinstance(outcome, Counterexample) else \
            getattr(outcome, "reason", "unknown").split(":")[0]
        truth = consensus.get((onnx.strip(), vnnlib.strip()), "?")
        wrong = {result, truth} == {"SAT", "UNSAT"}
        totals[result if result in ("UNSAT", "SAT") else "other"] += 1
        totals["wrong"] += wrong
        totals["domains"] += outcome.stats.domains
        s = outcome.stats
        print(f"{onnx.strip():<36} {vnnlib.strip():<22} {result:<8} {truth:<9} {s.mode:<6} {s.domains:>8} "
              f"{s.batches:>7} {s.max_live:>7} {s.conflicts:>7} {s.pruned:>7} {seconds:>8.2f}"
              f"{'  WRONG' if wrong else ''}", flush=True)
    print(f"\n{args.benchmark}: {len(instances)} instances; UNSAT {totals['UNSAT']}, SAT {totals['SAT']}, "
          f"undecided {totals['other']}, wrong {totals['wrong']}; {time.perf_counter() - start:.1f} s, "
          f"{totals['domains']} subdomains; options {options}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
