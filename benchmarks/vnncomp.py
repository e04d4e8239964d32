"""Run a VNN-COMP 2021 or 2022 benchmark with profit and compare with the competition's results.

    .venv/bin/python benchmarks/vnncomp.py --benchmark test
    .venv/bin/python benchmarks/vnncomp.py --benchmark acasxu --limit 20 --stride 9 --timeout-scale 0.05
    .venv/bin/python benchmarks/vnncomp.py --benchmark rl_benchmarks --timeout 10
    .venv/bin/python benchmarks/vnncomp.py --benchmark mnistfc --match 256x4.onnx, --unknown-timeout-scale 0.25

Reads ../shared/benchmarks/vnncomp2021/<name>/<name>_instances.csv (lines
`onnx,vnnlib,timeout`, no header) and results_2021.csv (one row per instance:
benchmark, onnx, vnnlib, consensus, then `<tool>_result` and `<tool>_time` columns), or
../shared/benchmarks/vnncomp2022/<name>/instances.csv: 2022's benchmarks come without
verdicts, so every `sat` is re-checked independently with onnxruntime
(`profit.verify.counterexample_holds`) and a failed re-check counts as wrong; --timeout S
replaces every instance's timeout.
Each instance runs in-process through `profit.verify.vnnlib.decide` with its timeout
times --timeout-scale; --limit N keeps N instances, taking every --stride-th one.
--unknown-timeout-scale sets another scale for the instances no 2021 tool solved;
--retry CSV reruns only the instances an earlier --out CSV left undecided; --match A,B
keeps the instances whose onnx and vnnlib names contain A and B (repeatable).
Writes one row per instance (--out, CSV) and prints: solved UNSAT, solved SAT,
unknown/timeout, wrong vs consensus (must be 0), total time; then the 2021 tools'
counts on the same instances. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from networks.datasets import shared_dir  # noqa: E402  (after making the repo importable)
from profit.data import load_network  # noqa: E402
from profit.verify.vnnlib import counterexample_holds, decide, load_problems  # noqa: E402
from profit.verify.vnnlib import read_instances as read_instances_csv  # noqa: E402

BENCHMARKS_2021 = ("test", "mnistfc", "acasxu")
BENCHMARKS_2022 = ("collins_rul_cnn", "reach_prob_density", "rl_benchmarks", "sri_resnet_a")
BENCHMARKS = BENCHMARKS_2021 + BENCHMARKS_2022
WRONG = {("unsat", "SAT"), ("sat", "UNSAT")}


@dataclass(frozen=True)
class Instance:
    onnx: str
    vnnlib: str
    timeout: float


def read_instances(folder: Path, name: str) -> list[Instance]:
    """The instances CSV: onnx, vnnlib, timeout (seconds) per line, no header."""
    with (folder / f"{name}_instances.csv").open(newline="") as f:
        return [Instance(r[0].strip(), r[1].strip(), float(r[2])) for r in csv.reader(f) if r]


def read_results(path: Path, name: str) -> tuple[dict[tuple[str, str], dict[str, str]], list[str]]:
    """results_2021.csv rows of one benchmark keyed by (onnx, vnnlib), and the tool names."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        tools = [c[:-len("_result")] for c in reader.fieldnames or [] if c.endswith("_result")]
        rows = {(r["onnx"], r["vnnlib"]): r for r in reader if r["benchmark"] == name}
    return rows, tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=BENCHMARKS, required=True)
    parser.add_argument("--limit", type=int, help="run at most N instances")
    parser.add_argument("--stride", type=int, default=1, help="take every K-th instance (default 1)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every timeout (default 1)")
    parser.add_argument("--unknown-timeout-scale", type=float,
                        help="timeout scale for the instances no 2021 tool solved (consensus UNKNOWN; default: "
                             "--timeout-scale), to spend a long run's time where a verdict is known to be reachable")
    parser.add_argument("--retry", type=Path, metavar="CSV",
                        help="only the instances that an earlier --out CSV left undecided (not sat/unsat)")
    parser.add_argument("--timeout", type=float, help="seconds per instance, replacing the CSV's (then scaled)")
    parser.add_argument("--match", action="append", default=[], metavar="ONNX,VNNLIB",
                        help="only instances whose onnx and vnnlib names contain both parts (repeatable)")
    parser.add_argument("--out", type=Path, help="CSV with one row per instance")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier timings on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    shared = shared_dir()
    if shared is None:
        print("vnncomp.py: ../shared is absent (set PROFIT_SHARED)", file=sys.stderr)
        return 2
    year = "2021" if args.benchmark in BENCHMARKS_2021 else "2022"
    root = shared / "benchmarks" / f"vnncomp{year}"
    folder = root / args.benchmark
    if year == "2021":
        instances = read_instances(folder, args.benchmark)
    else:
        instances = [Instance(i.onnx, i.vnnlib, float(i.timeout or 0))
                     for i in read_instances_csv(folder / "instances.csv")]
    if args.timeout is not None:
        instances = [Instance(i.onnx, i.vnnlib, args.timeout) for i in instances]
    if args.retry:
        undecided = _undecided(args.retry)
        if undecided is None:
            print(f"vnncomp.py: --retry {args.retry}: not a CSV written by --out (onnx, vnnlib, result columns)",
                  file=sys.stderr)
            return 2
        instances = [i for i in instances if (i.onnx, i.vnnlib) in undecided]
    if args.match:
        pairs = [m.partition(",")[::2] for m in args.match]
        instances = [i for i in instances if any(a in i.onnx and b in i.vnnlib for a, b in pairs)]
    instances = instances[::max(args.stride, 1)][:args.limit]
    reference, tools = read_results(root / "results_2021.csv", args.benchmark) if year == "2021" else ({}, [])
    rows, nets = [], {}
    start = time.perf_counter()
    for k, inst in enumerate(instances, 1):
        t0 = time.perf_counter()
        net = nets.get(inst.onnx) or nets.setdefault(inst.onnx, load_network(folder / inst.onnx))
        problems = load_problems(net, folder / inst.vnnlib)
        consensus = reference.get((inst.onnx, inst.vnnlib), {}).get("consensus", "")
        scale = args.unknown_timeout_scale if consensus == "UNKNOWN" and args.unknown_timeout_scale is not None \
            else args.timeout_scale
        budget = inst.timeout * scale
        decision = decide(net, problems, max(budget - (time.perf_counter() - t0), 1e-3))
        seconds = time.perf_counter() - t0
        wrong = (decision.result, consensus) in WRONG
        if decision.result == "sat" and not consensus:  # no reference: re-check it on its own
            wrong = not counterexample_holds(folder / inst.onnx, folder / inst.vnnlib, decision.counterexample[0])
        rows.append({"onnx": inst.onnx, "vnnlib": inst.vnnlib, "timeout": budget, "result": decision.result,
                     "seconds": round(seconds, 3), "decided_by": decision.decided_by, "consensus": consensus,
                     "wrong": int(wrong)})
        print(f"[{k}/{len(instances)}] {inst.onnx} {inst.vnnlib}: {decision.result} ({decision.decided_by}, "
              f"{seconds:.2f} s) consensus {consensus or '?'}{'  WRONG' if wrong else ''}", flush=True)
    total = time.perf_counter() - start
    if args.out:
        with args.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["onnx"])
            writer.writeheader()
            writer.writerows(rows)
    counts = Counter(r["result"] for r in rows)
    print()
    unknown_scale = "" if args.unknown_timeout_scale is None else \
        f" ({args.unknown_timeout_scale} where the consensus is UNKNOWN)"
    print(f"benchmark {args.benchmark}: {len(rows)} instances, timeout scale {args.timeout_scale}{unknown_scale}")
    print(f"{'tool':<12} {'UNSAT':>6} {'SAT':>5} {'other':>6} {'wrong':>6} {'time (s)':>9}")
    print(f"{'profit':<12} {counts['unsat']:>6} {counts['sat']:>5} "
          f"{counts['unknown'] + counts['timeout']:>6} {sum(r['wrong'] for r in rows):>6} {total:>9.1f}")
    for tool in tools:
        results = [reference.get((r["onnx"], r["vnnlib"]), {}) for r in rows]
        answers = [(res.get(f"{tool}_result") or "").upper() for res in results]
        times = [res.get(f"{tool}_time") or "" for res in results]
        wrong = sum((a, res.get("consensus", "")) in {("UNSAT", "SAT"), ("SAT", "UNSAT")}
                    for a, res in zip(answers, results))
        unsat, sat = answers.count("UNSAT"), answers.count("SAT")
        seconds = sum(float(t) for t, a in zip(times, answers) if a in ("SAT", "UNSAT") and _number(t))
        print(f"{tool:<12} {unsat:>6} {sat:>5} {len(rows) - unsat - sat:>6} {wrong:>6} {seconds:>9.1f}")
    consensus = Counter(r["consensus"] or "?" for r in rows)
    print(f"{'consensus':<12} {consensus['UNSAT']:>6} {consensus['SAT']:>5} "
          f"{len(rows) - consensus['UNSAT'] - consensus['SAT']:>6}")
    return 0


def _undecided(path: Path) -> set[tuple[str, str]] | None:
    """(onnx, vnnlib) of the rows of an --out CSV whose result is neither sat nor unsat;
    None if the file is missing or lacks those columns."""
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"onnx", "vnnlib", "result"} <= set(reader.fieldnames or []):
            return None
        return {(r["onnx"], r["vnnlib"]) for r in reader if r["result"] not in ("sat", "unsat")}


def _number(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
