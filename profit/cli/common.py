"""What every subcommand module shares: the command record, argument helpers, exit codes.

A subcommand module defines one `COMMAND = Command(name, summary, arguments, handler)`;
`profit.cli` lists them. The handler gets the parsed arguments, builds the library's
option objects, calls the API and prints; it returns the exit code.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from profit.errors import ProfitError
from profit.runs import BACKENDS, DEFAULT_STORE

if TYPE_CHECKING:
    from profit.runs import FinishedRun, Job, RunOptions, Task

PROG = "profit"
EXIT_OK = 0
EXIT_USER_ERROR = 2  # every expected error, as argparse uses for usage errors (also: a partial enumeration)
EXIT_INTERNAL_ERROR = 3  # an unexpected exception: a bug to report


def user_errors() -> tuple[type[Exception], ...]:
    """The library's typed errors: expected, shown as one line with exit code 2. Imported when an
    error is caught, not at start-up (they live beside torch and onnx)."""
    from domains.base import DomainError
    from networks.ir import NetworkError
    from specs.properties import SpecError
    from specs.regions import RegionError
    from specs.vnnlib import VnnlibError

    return NetworkError, ProfitError, RegionError, SpecError, VnnlibError, DomainError

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
        import torch

        torch.set_num_threads(threads)


RUN_FLAGS = ("workers", "store", "resume", "backend", "ray", "item_timeout")  # any of them: a batch run
RUN_ARGS = (
    arg("--workers", type=int, metavar="N",
        help="batch run: N worker processes, one torch thread each (default: every CPU; 0: in this process)"),
    arg("--store", metavar="DB",
        help=f"batch run: SQLite results store, one row per finished item (default: {DEFAULT_STORE} in the "
             "current directory, whenever a batch flag is given)"),
    arg("--resume", metavar="RUN",
        help="batch run: continue run RUN of the store ('last': its latest), skipping the items already stored; "
             "give the same arguments as the run it continues"),
    arg("--backend", choices=BACKENDS, help="batch run: local process pool (the default) or ray"),
    arg("--ray", metavar="ADDRESS", help="batch run as Ray tasks on the cluster at ADDRESS (auto, HOST:6379, "
                                         "ray://HOST:10001; needs profit[ray])"),
    arg("--item-timeout", type=float, metavar="S",
        help="batch run: kill an item's worker after S seconds (default: its own time budget x 1.5 + 10 s)"),
)


def run_options(args: argparse.Namespace, batch: bool = False) -> RunOptions | None:
    """The batch-run options, or None when no batch flag is given (and `batch` is False): then a
    subcommand runs as it always did, in this process, storing nothing."""
    if not batch and all(getattr(args, name, None) is None for name in RUN_FLAGS):
        return None
    from profit.runs import RunOptions

    argv = getattr(args, "argv", None)
    return RunOptions(store=args.store or DEFAULT_STORE, workers=args.workers, resume=args.resume,
                      backend=args.backend or "local", address=args.ray, item_timeout=args.item_timeout,
                      progress=not getattr(args, "no_progress", False),
                      command=shlex.join([PROG, *argv]) if argv is not None else "")


def run_batch(job: Job, tasks: Sequence[Task], options: RunOptions) -> FinishedRun:
    """Run (or resume) the batch into the store; a line on stderr before, and a resume hint on Ctrl-C."""
    from profit.runs import Batch

    batch = Batch(job, tasks, options)
    print(f"run {batch.run_id} in {options.store}: {len(tasks)} items, {len(tasks) - len(batch.pending)} already "
          f"stored, {len(batch.pending)} to run on {options.describe()}", file=sys.stderr)
    try:
        return batch.execute()
    except KeyboardInterrupt:
        print(f"{PROG}: the finished items are stored; continue with --resume {batch.run_id} --store {options.store}",
              file=sys.stderr)
        raise


def print_run(finished: FinishedRun) -> None:
    """The closing lines of a batch run: where it is stored, and every item that crashed."""
    for row in finished.errors:
        print(f"error: item {row['item_key']}: {row['error']}")
    print(f"run {finished.run_id}: {len(finished.rows)} items in {finished.store} ({finished.ran} run now, "
          f"{finished.skipped} stored before, {len(finished.errors)} errors)")


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
