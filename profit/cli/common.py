"""What every subcommand module shares: the command record, argument helpers, exit codes.

A subcommand module defines one `COMMAND = Command(name, summary, arguments, handler)`;
`profit.cli` lists them. The handler gets the parsed arguments, builds the library's
option objects, calls the API and prints; it returns the exit code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from domains.base import DomainError
from networks import NetworkError
from profit.errors import ProfitError
from specs.properties import SpecError
from specs.regions import RegionError
from specs.vnnlib import VnnlibError

PROG = "profit"
EXIT_OK = 0
EXIT_USER_ERROR = 2  # every expected error, as argparse uses for usage errors (also: a partial enumeration)
EXIT_INTERNAL_ERROR = 3  # an unexpected exception: a bug to report
USER_ERRORS = (NetworkError, ProfitError, RegionError, SpecError, VnnlibError, DomainError)

Handler = Callable[[argparse.Namespace], int]
Arg = tuple[tuple[Any, ...], dict[str, Any]]  # the (args, kwargs) of one add_argument call


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line summary, arguments and handler (returns the exit code)."""

    name: str
    summary: str
    arguments: tuple[Arg, ...]
    handler: Handler


def arg(*flags: Any, **options: Any) -> Arg:
    """One `add_argument` call, recorded for a `Command`."""
    return flags, options


IMAGES_HELP = ("image source: MNIST IDX file/dir, ERAN .csv, folder of PNGs, .npy/.npz "
               "(default: the shipped MNIST samples)")
THREADS_ARG = arg("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")


def set_threads(threads: int | None) -> None:
    """--threads: fewer torch threads are faster on a busy machine (no spinning workers)."""
    if threads is not None:
        if threads < 1:
            raise ProfitError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def write_text(path: str | Path, text: str) -> None:
    """Write a result file; an unwritable path is a user error."""
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise ProfitError(f"{path}: cannot write ({exc.strerror or exc})") from None


def format_shape(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become `ProfitError` (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise ProfitError(message)


def command(name: str, summary: str, *arguments: Arg, handler: Handler) -> Command:
    """The `Command` `name` with its one-line summary, arguments and handler."""
    return Command(name, summary, arguments, handler)
