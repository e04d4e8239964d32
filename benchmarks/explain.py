"""Explanation enumeration on the shipped 5-vs-6 network: patches of 10, 20, 30 and 50 pixels.

    .venv/bin/python benchmarks/explain.py                       # 4 sizes x 10 images, 60 s each
    .venv/bin/python benchmarks/explain.py --sizes 10,20 --images 3 --timeout 20 --mode absolute -v

Images: the first `--images` shipped samples labelled 5 or 6 (binarised, pixel > 0.5),
each explained for the class the network predicts. Patches (row-major rectangles around
the middle of the digit, the 20-pixel one is the paper's rows 15-18 x cols 8-12):

    10: rows 15-16 x cols 8-12     20: rows 15-18 x cols 8-12
    30: rows 14-18 x cols 8-13     50: rows 13-17 x cols 7-16

Each (size, image) enumerates `--enum` (default: explanations, local mode; AXps, whose
completion also yields every CXp) with the default `CascadeOracle` under a `--timeout`
per run. One row per size: runs complete / all, explanations and counterexamples found
(sums), their mean sizes, oracle calls by deciding stage (sums over the runs), seconds
per explanation (total time / explanations) and total seconds. With -v, one row per run.
Times depend on the machine and its load; the oracle runs torch on one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from networks import load_onnx, shipped  # noqa: E402
from networks.datasets import load_samples  # noqa: E402
from profit.explain import Explainer, ExplainOptions  # noqa: E402
from profit.explain import STAGES, PixelDomain  # noqa: E402

PATCHES = {
    10: [(r, c) for r in range(15, 17) for c in range(8, 13)],
    20: [(r, c) for r in range(15, 19) for c in range(8, 13)],
    30: [(r, c) for r in range(14, 19) for c in range(8, 14)],
    50: [(r, c) for r in range(13, 18) for c in range(7, 17)],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,20,30,50", help="patch sizes (of 10, 20, 30, 50)")
    parser.add_argument("--images", type=int, default=10, help="number of 5/6 samples (default 10)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run (default 60)")
    parser.add_argument("--mode", default="local", choices=("local", "absolute"))
    parser.add_argument("--enum", default="axp", choices=("axp", "cxp", "both"))
    parser.add_argument("--htype", default="rc2", choices=("rc2", "lbx", "mcsls"))
    parser.add_argument("-v", "--verbose", action="store_true", help="one row per run too")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    net = load_onnx(shipped("mnist_5v6"))
    images, labels = load_samples()
    domain = PixelDomain.parse("binary")
    picks = [i for i in range(len(labels)) if labels[i] in (5, 6)][:args.images]
    print(f"mnist_5v6, samples {picks}, binary, mode {args.mode}, enum {args.enum}, htype {args.htype}, "
          f"timeout {args.timeout:g} s per run")
    head = f"{'pixels':>6} {'complete':>8} {'expls':>7} {'cexs':>7} {'|expl|':>6} {'|cex|':>6} " \
           f"{'s/expl':>7} {'seconds':>8}  oracle calls by stage"
    rows = []
    for size in sizes:
        patch = [r * 28 + c for r, c in PATCHES[size]]
        total: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        expl_sizes, cex_sizes = [], []
        for index in picks:
            x = domain.quantize(images[index].reshape(-1).astype(np.float64))
            explainer = Explainer(net, x, patch, domain, mode=args.mode, options=ExplainOptions(htype=args.htype))
            start = time.monotonic()
            run = explainer.enumerate(args.enum, timeout=args.timeout).run()
            seconds = time.monotonic() - start
            stats = run.stats()
            total.update(runs=1, complete=run.status == "complete", expls=stats["explanations"],
                         cexs=stats["counterexamples"])
            total["seconds"] += seconds
            calls.update(stats["oracle_calls"])
            expl_sizes += [e.size for e in run.explanations]
            cex_sizes += [c.size for c in run.counterexamples]
            if args.verbose:
                print(f"  {size:>4} px sample {index:>3} (label {labels[index]}): {run.status:<8} "
                      f"{stats['explanations']:>6} expls {stats['counterexamples']:>6} cexs {seconds:>7.1f} s  "
                      f"{_calls(stats['oracle_calls'])}", flush=True)
        per = total["seconds"] / total["expls"] if total["expls"] else float("nan")
        rows.append(f"{size:>6} {total['complete']:>4}/{total['runs']:<3} {total['expls']:>7} {total['cexs']:>7} "
                    f"{_mean(expl_sizes):>6} {_mean(cex_sizes):>6} {per:>7.3f} {total['seconds']:>8.1f}  "
                    f"{_calls(calls)}")
        print(rows[-1] if not args.verbose else "", flush=True)
    print()
    print(head)
    for row in rows:
        print(row)


def _mean(values: list[int]) -> str:
    return f"{np.mean(values):.2f}" if values else "-"


def _calls(calls: dict[str, int]) -> str:
    order = [*STAGES, "unknown", "deferred"]
    return ", ".join(f"{k} {calls[k]}" for k in order if calls.get(k))


if __name__ == "__main__":
    main()
