"""The `profit` command line: argument parsing -> options -> API call -> printing.

    profit info NET.onnx                      # the IR nodes, shapes and parameter counts
    profit run NET.onnx INPUT [--json]        # INPUT: a PNG/JPEG image or a .npy array
    profit run NET.onnx --sample K [--json]   # the K-th shipped MNIST sample
    profit verify [--net NET] [--images SRC] [--eps 0.02] [--domain auto] [--count N] ...
                                              # L-inf robustness of images (default: shipped net + samples)
    profit vnnlib NET.onnx SPEC.vnnlib [--timeout S] [--out result.txt]
                                              # a VNN-LIB property, VNN-COMP result file
    profit features [NET] [--images SRC] [--eps E] [--domain crown] [--layer -1] [--topk 20] ...
                                              # proof features: small sufficient sets (ProFIt)
    profit explain [NET] -p PATCH -d IDX [--mode local|absolute] [--enum axp|cxp|both] [--save] ...
                                              # formal explanations over a pixel patch

NET is an ONNX path or the bare name of a shipped network (e.g. `mnist_mlp`). Each
subcommand is one module of this package, named as the subcommand, defining `COMMAND` (its
arguments and handler); `COMMANDS` lists their names and summaries. Only the chosen
subcommand's module is imported (`profit --help` imports none), and each imports the heavy
parts of the library (plots, batch runs) where it uses them: start-up stays short. Exit codes:
0 done; 2 an expected error (typed errors of the library, `ProfitError`, argparse usage
errors), printed as one line
`profit: error: <message>`; 3 an unexpected exception (a bug), printed as one line
`profit: internal error in <stage>: <type> '<message>' (please report)`, with the
traceback under `--debug` or PROFIT_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from profit.version import __version__
from profit.cli.common import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, PROG, Command, Parser, user_errors

COMMANDS: dict[str, str] = {  # subcommand (= module of this package) -> the summary `profit --help` shows
    "info": "print the IR nodes of a network",
    "run": "run a network on one input and print its prediction",
    "verify": "verify L-inf robustness of images (default: the shipped network on the shipped samples)",
    "vnnlib": "decide a VNN-LIB property of an ONNX network (VNN-COMP result file), or a whole instances CSV",
    "vnnlib2": "decide a VNN-LIB 2.0 query (the VNN-LIB 2.0 solver interface: verify / supports)",
    "features": "proof features: prune each robustness proof to a small sufficient set (ProFIt)",
    "explain": "formal explanations over a pixel patch: AXps/CXps, or the paper's explanations and "
               "counterexamples (hitting-set duality)",
    "cem": "contrastive explanations (CEM): pertinent positives / negatives, certified where proven",
    "attribute": "gradient attribution map of one image (saliency, IG, SmoothGrad, LRP, ...), optionally "
                 "beta-smoothed or with certified gradient bounds",
    "manipulate": "the explanation manipulation attack: push one image's attribution map toward another's "
                  "while its output stays",
}
_LIBRARY = ("profit", "domains", "networks", "specs")  # packages whose frames name the failing stage


def load_command(name: str) -> Command:
    """The `COMMAND` of subcommand `name` (imports its module)."""
    return importlib.import_module(f"profit.cli.{name}").COMMAND


def build_parser(loaded: Sequence[str] | None = None) -> Parser:
    """The argument parser with one subparser per registered command; the arguments and handlers
    of the commands in `loaded` (default: all), the others as names and summaries only."""
    parser = Parser(prog=PROG, description="Prove things about neural networks and explain the proofs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        subparser = sub.add_parser(name, help=summary, description=summary)
        if loaded is not None and name not in loaded:
            continue
        command = load_command(name)
        for flags, options in command.arguments:
            subparser.add_argument(*flags, **options)
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show the traceback of an internal error")
        subparser.set_defaults(handler=command.handler)
    return parser


def failing_stage(exc: BaseException, default: str) -> str:
    """The stage an unexpected exception came from: the innermost frame's `profit.<stage>`
    subpackage (e.g. "bab" for an error in domains/crown.py reached from profit.bab), else its
    innermost library package ("domains", ...), else `default` (the subcommand)."""
    stage = None
    for frame in traceback.extract_tb(exc.__traceback__):
        module = _module_of(frame.filename)
        if module is None:
            continue
        parts = module.split(".")
        if parts[0] == "profit" and len(parts) > 2 and parts[1] != "cli":
            stage = parts[1]
        elif parts[0] != "profit" and stage is None:
            default = parts[0]
    return stage or default


def _module_of(filename: str) -> str | None:
    """The dotted module of a source file of the project's packages, or None."""
    path = os.path.abspath(filename)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not path.startswith(root + os.sep):
        return None
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    return ".".join(parts) if parts[0] in _LIBRARY else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PROFIT_DEBUG", "") not in ("", "0")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(loaded=[chosen] if chosen in COMMANDS else []).parse_args(argv)
        args.argv = tuple(argv)  # stored with a batch run
        return args.handler(args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, user_errors()):
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"{PROG}: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR
        # the last line of defence: one line, not a traceback
        if debug:
            traceback.print_exc()
        stage = failing_stage(exc, next((a for a in argv if not a.startswith("-")), "cli"))
        detail = f" {' '.join(repr(exc.args[0]).split())}" if len(exc.args) == 1 else ""
        print(f"{PROG}: internal error in {stage}: {type(exc).__name__}{detail} (please report"
              f"{'' if debug else '; --debug shows the traceback'})", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
