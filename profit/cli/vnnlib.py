"""`profit vnnlib NET SPEC`: decide a VNN-LIB property, write a VNN-COMP result file.
`profit vnnlib --batch INSTANCES.csv`: every instance of a VNN-COMP instances CSV, into the store."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from profit.cli.common import (
    RUN_ARGS, THREADS_ARG, arg, command, print_run, run_batch, run_options, set_threads, user_errors, write_text,
)
from profit.errors import ProfitError
from profit.verify import run_vnnlib

BATCH_COLUMNS = ("onnx", "vnnlib", "timeout", "result", "seconds", "decided_by", "status", "error")


def handle(args: argparse.Namespace) -> int:
    """Print the result (sat / unsat / unknown / timeout) and the time; write the result file.
    With --batch: one line per instance and the counts per result."""
    set_threads(args.threads)
    if args.batch is not None:
        return _batch(args)
    if args.network is None or args.spec is None:
        raise ProfitError("give NET and SPEC, or --batch INSTANCES.csv")
    if run_options(args) is not None:
        raise ProfitError("--workers, --store, --resume, --backend, --ray and --item-timeout go with --batch")
    try:
        outcome = run_vnnlib(args.network, args.spec, timeout=args.timeout)
    except Exception as exc:
        if args.out and not isinstance(exc, user_errors()):
            write_text(args.out, "unknown\n")  # a bug must not leave a VNN-COMP harness without an answer
        raise
    print(f"result: {outcome.result}")
    print(f"time: {outcome.seconds:.2f} s (last method: {outcome.decision.decided_by})")
    if args.out:
        write_text(args.out, outcome.text())
    return 0


def _batch(args: argparse.Namespace) -> int:
    if args.network is not None or args.spec is not None:
        raise ProfitError("give either NET SPEC or --batch INSTANCES.csv, not both")
    if args.timeout is not None and not args.timeout > 0:
        raise ProfitError(f"timeout must be > 0 seconds, got {args.timeout}")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise ProfitError(f"{out}: with --batch, --out must end in .csv or .json")
    from profit.runs import VnnlibJob, read_instances

    job = VnnlibJob(str(Path(args.batch).resolve()), args.timeout)
    finished = run_batch(job, read_instances(args.batch, args.timeout), run_options(args, batch=True))
    rows = job.results(finished.rows)
    print(f"{'onnx':<36} {'vnnlib':<28} {'result':<8} {'seconds':>8}  decided_by")
    for r in rows:
        print(f"{r['onnx']:<36} {r['vnnlib']:<28} {r['result']:<8} {r['seconds'] or 0.0:>8.2f}  {r['decided_by']}")
    counts = {k: sum(r["result"] == k for r in rows) for k in ("unsat", "sat", "unknown", "timeout", "error")}
    print(", ".join(f"{k} {n}" for k, n in counts.items()) + f"; {len(rows)} instances, "
          f"{sum(r['seconds'] or 0.0 for r in rows):.2f} s")
    print_run(finished)
    if out is not None:
        try:
            if out.suffix.lower() == ".json":
                out.write_text(json.dumps({"instances": job.instances, "results": rows}, indent=1) + "\n")
            else:
                with out.open("w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=BATCH_COLUMNS)
                    writer.writeheader()
                    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
        except OSError as exc:
            raise ProfitError(f"{out}: cannot write ({exc.strerror or exc})") from None
    return 0


COMMAND = command(
    "vnnlib", "decide a VNN-LIB property of an ONNX network (VNN-COMP result file), or a whole instances CSV",
    arg("network", nargs="?", metavar="NET", help="ONNX file"),
    arg("spec", nargs="?", metavar="SPEC", help="VNN-LIB file (.vnnlib or .vnnlib.gz)"),
    arg("--batch", metavar="INSTANCES.csv",
        help="decide every row onnx,vnnlib,timeout of a VNN-COMP instances CSV (paths relative to its folder), "
             "one stored result per instance"),
    arg("--timeout", type=float, metavar="S", help="seconds in all (default: none; with --batch: the CSV's)"),
    arg("--out", metavar="FILE",
        help="write the VNN-COMP result file here (with --batch: the per-instance results, .csv or .json)"),
    arg("--no-progress", action="store_true", help="no progress bar on stderr (--batch)"),
    THREADS_ARG,
    *RUN_ARGS,
    handler=handle)
