"""The `profit` command line: argument parsing -> API call -> printing.

    profit info NET.onnx                      # the IR nodes, shapes and parameter counts
    profit run NET.onnx INPUT [--json]        # INPUT: a PNG/JPEG image or a .npy array
    profit run NET.onnx --sample K [--json]   # the K-th shipped MNIST sample

NET is an ONNX path or the bare name of a shipped network (e.g. `mnist_mlp`).
Every subcommand is one function registered with `@_command`, which declares its
arguments; it returns the exit code. Expected errors (typed errors of the
library, `ProfitError`) print one line `profit: error: <message>` on stderr and
exit with code 2, like argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Sequence

from domains.base import DomainError
from networks import NetworkError
from profit import __version__
from profit.errors import ProfitError
from profit.inputs import load_input, load_network, load_sample
from specs.properties import SpecError
from specs.regions import RegionError
from specs.vnnlib import VnnlibError

PROG = "profit"
EXIT_USER_ERROR = 2  # the exit code of every expected error, as argparse uses for usage errors
USER_ERRORS = (NetworkError, ProfitError, RegionError, SpecError, VnnlibError, DomainError)

_Handler = Callable[[argparse.Namespace], int]
_Arg = tuple[tuple[Any, ...], dict[str, Any]]  # the (args, kwargs) of one add_argument call


@dataclass(frozen=True)
class _Command:
    """A subcommand: its name, one-line summary, arguments and handler (returns the exit code)."""

    name: str
    summary: str
    arguments: tuple[_Arg, ...]
    handler: _Handler


_COMMANDS: list[_Command] = []


def _arg(*flags: Any, **options: Any) -> _Arg:
    """One `add_argument` call, recorded for `_command`."""
    return flags, options


def _command(name: str, summary: str, *arguments: _Arg) -> Callable[[_Handler], _Handler]:
    """Register the decorated function as subcommand `name` taking `arguments`."""
    def register(handler: _Handler) -> _Handler:
        _COMMANDS.append(_Command(name, summary, arguments, handler))
        return handler
    return register


_NETWORK_ARG = _arg("network", metavar="NET", help="ONNX file or name of a shipped network")
_JSON_ARG = _arg("--json", action="store_true", help="print one JSON object instead of text")


@_command("info", "print the IR nodes of a network", _NETWORK_ARG)
def _info(args: argparse.Namespace) -> int:
    """A table of the IR nodes (index, name, op, per-sample output shape, parameters), then totals."""
    net = load_network(args.network)
    rows = [("#", "name", "op", "output shape", "params")]
    for i, node in enumerate(net.nodes):
        same = node.onnx_op.lower() in ("", node.layer.op.lower())
        op = node.layer.op if same else f"{node.layer.op} ({node.onnx_op})"
        rows.append((str(i), node.name, op, _shape(node.shape), f"{node.layer.n_params():,}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(w) if c in (0, 4) else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    print()
    print(f"nodes:        {len(net)}")
    print(f"parameters:   {net.n_params():,}")
    print(f"input shape:  {_shape(net.input_shape)} per sample "
          f"(ONNX: {_shape(net.onnx_input_shape)}{'' if net.has_batch_dim else ', no batch dim'})")
    print(f"output shape: {_shape(net.output_shape)} per sample")
    print(f"source:       {net.source}")
    return 0


@_command("run", "run a network on one input and print its prediction",
          _NETWORK_ARG,
          _arg("input", nargs="?", metavar="INPUT", help="a PNG/JPEG image or a .npy array"),
          _arg("--sample", type=int, metavar="K", help="use the K-th shipped MNIST sample instead of INPUT"),
          _JSON_ARG)
def _run(args: argparse.Namespace) -> int:
    """Print `predicted: k` and the logits (4 decimals), or one JSON object with --json."""
    if (args.input is None) == (args.sample is None):
        raise ProfitError("run: give either an INPUT file or --sample K (not both)")
    net = load_network(args.network)
    label = None
    if args.sample is not None:
        x, label = load_sample(args.sample, net)
    else:
        x = load_input(args.input, net)
    output = net.logits(x)[0]
    predicted, logits = int(output.argmax()), output.tolist()
    if args.json:
        print(json.dumps({"predicted": predicted, "logits": logits}))
        return 0
    if label is not None:
        print(f"sample {args.sample}: label {label}")
    print(f"predicted: {predicted}")
    print("logits: [" + ", ".join(f"{v:.4f}" for v in logits) + "]")
    return 0


def _shape(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become `ProfitError` (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise ProfitError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per registered command."""
    parser = _Parser(prog=PROG, description="Prove things about neural networks and explain the proofs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        subparser = sub.add_parser(command.name, help=command.summary, description=command.summary)
        for flags, options in command.arguments:
            subparser.add_argument(*flags, **options)
        subparser.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]) and return the exit code."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
