"""`profit vnnlib2 verify QUERY --network N=NET.onnx [--timeout S]`: the VNN-LIB 2.0 solver interface.

Prints the verdict as the first word on stdout (`sat`, `unsat` or `unknown`), as VNN-LIB 2.0
(Chapter 5) and the `vnnlib-satisfactory` suite expect; a query profit cannot decide
(several networks, constraints mixing inputs and outputs, an unsupported ONNX op...) prints `unknown` and a
one-line reason and exits 0. `profit vnnlib2 supports --FLAG` answers the capability
queries of the same chapter (one item per line). `vnncomp/vnnlib2` is this command as
one executable, for harnesses that take a single program path.
"""

from __future__ import annotations

import argparse
import time

from profit.cli.common import THREADS_ARG, arg, command, set_threads, user_errors
from profit.errors import ProfitError

_START = time.perf_counter()  # the module is imported right after start-up: the budget counts from here
_MARGIN = 0.15  # fraction of --timeout kept for start-up, exit and the caller's clock

# The capability answers. Theories (VNN-LIB 2.0 Chapter 4): one network (SNET), one input
# and one output (SIO), bounds on the inputs and linear constraints on the outputs (BND,
# OUTC; not LIN, whose constraints mix or combine inputs, nor POLY); hidden nodes (H: linear
# constraints over hidden tensors and outputs, not mixed with inputs).
_THEORIES = {
    "multiple_network_theories": ("SNET",),
    "hidden_node_theories": ("H",),
    "multiple_input_output_theories": ("SIO",),
    "arithmetic_complexity_theories": ("BND", "OUTC"),
    "onnx_opset_versions": ("1", "21"),
    "vnnlib_versions": ("2.0", "2.0"),
    "serialise_assignments": ("false",),
}


def _supports(args: argparse.Namespace) -> int:
    asked = [name for name in ("onnx_operators", *_THEORIES) if getattr(args, name)]
    if len(asked) != 1:
        raise ProfitError("supports takes exactly one of --" + ", --".join(
            n.replace("_", "-") for n in ("onnx_operators", *_THEORIES)))
    if asked[0] == "onnx_operators":
        from networks.onnx_import import SUPPORTED_OPS

        items: tuple[str, ...] = tuple(sorted(SUPPORTED_OPS))
    else:
        items = _THEORIES[asked[0]]
    for item in items:
        print(item)
    return 0


def _networks(specs: list[str]) -> dict[str, str]:
    """--network NAME=PATH, repeatable, as {NAME: PATH}."""
    networks: dict[str, str] = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not name or not path:
            raise ProfitError(f"--network expects NAME=PATH.onnx, got {spec!r}")
        if name in networks:
            raise ProfitError(f"--network {name} given twice")
        networks[name] = path
    return networks


def _verify(args: argparse.Namespace) -> int:
    from networks.ir import UnsupportedOpError
    from profit.verify import run_vnnlib2
    from specs.vnnlib2 import Vnnlib2Unsupported

    if args.query is None or not args.network:
        raise ProfitError("verify needs QUERY and --network NAME=PATH.onnx")
    if args.timeout is not None and not args.timeout > 0:
        raise ProfitError(f"timeout must be > 0 seconds, got {args.timeout}")
    budget = None
    if args.timeout is not None:
        budget = max(args.timeout * (1 - _MARGIN) - (time.perf_counter() - _START), 0.1)
    try:
        outcome = run_vnnlib2(args.query, _networks(args.network), timeout=budget)
    except Exception as exc:
        print("unknown", flush=True)  # the verdict a harness reads, before any error line on stderr
        if isinstance(exc, user_errors()):
            print(f"reason: {' '.join(str(exc).split())}", flush=True)
            if isinstance(exc, (Vnnlib2Unsupported, UnsupportedOpError)):
                return 0  # a valid query profit cannot decide: unknown is the answer
        raise
    result = "unknown" if outcome.result == "timeout" else outcome.result
    print(result)
    if result == "unknown":
        print(f"reason: {outcome.decision.decided_by}")
    return 0


def handle(args: argparse.Namespace) -> int:
    """`verify`: print the verdict first; `supports`: print the capability asked for."""
    set_threads(args.threads)
    return _supports(args) if args.action == "supports" else _verify(args)


COMMAND = command(
    "vnnlib2", "decide a VNN-LIB 2.0 query (the VNN-LIB 2.0 solver interface: verify / supports)",
    arg("action", choices=("verify", "supports"), help="verify a query, or answer a capability query"),
    arg("query", nargs="?", metavar="QUERY", help="VNN-LIB 2.0 file (verify)"),
    arg("--network", action="append", metavar="NAME=PATH", help="the ONNX file of the query's network NAME"),
    arg("--timeout", type=float, metavar="S", help="seconds in all, start-up included (default: none)"),
    arg("--onnx-operators", action="store_true", help="supports: the ONNX ops profit loads"),
    arg("--multiple-network-theories", action="store_true", help="supports: network theories (SNET)"),
    arg("--hidden-node-theories", action="store_true", help="supports: hidden-node theories (H)"),
    arg("--multiple-input-output-theories", action="store_true", help="supports: input/output theories (SIO)"),
    arg("--arithmetic-complexity-theories", action="store_true", help="supports: arithmetic theories (BND, OUTC)"),
    arg("--onnx-opset-versions", action="store_true", help="supports: minimum and maximum ONNX opset"),
    arg("--vnnlib-versions", action="store_true", help="supports: minimum and maximum VNN-LIB version"),
    arg("--serialise-assignments", action="store_true", help="supports: whether sat prints an assignment (false)"),
    THREADS_ARG,
    handler=handle)
