"""`profit vnnlib NET SPEC`: decide a VNN-LIB property, write a VNN-COMP result file."""

from __future__ import annotations

import argparse

from profit.cli.common import THREADS_ARG, arg, command, set_threads, write_text
from profit.verify import run_vnnlib


def handle(args: argparse.Namespace) -> int:
    """Print the result (sat / unsat / unknown / timeout) and the time; write the result file."""
    set_threads(args.threads)
    outcome = run_vnnlib(args.network, args.spec, timeout=args.timeout)
    print(f"result: {outcome.result}")
    print(f"time: {outcome.seconds:.2f} s (last method: {outcome.decision.decided_by})")
    if args.out:
        write_text(args.out, outcome.text())
    return 0


COMMAND = command(
    "vnnlib", "decide a VNN-LIB property of an ONNX network (VNN-COMP result file)",
    arg("network", metavar="NET", help="ONNX file"),
    arg("spec", metavar="SPEC", help="VNN-LIB file (.vnnlib or .vnnlib.gz)"),
    arg("--timeout", type=float, metavar="S", help="seconds in all (default: none)"),
    arg("--out", metavar="FILE", help="write the VNN-COMP result file here"),
    THREADS_ARG,
    handler=handle)
