"""The `profit` command line: argument parsing -> API call -> printing.

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
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import torch

from domains import DOMAINS
from domains.base import DomainError
from networks import DEFAULT_NETWORK, NetworkError
from profit import __version__
from profit.attack import AttackOptions
from profit.errors import ProfitError
from profit.images import load_images, network_channels
from profit.inputs import load_input, load_network, load_sample
from profit.plots import save_run
from profit.verify import (
    VerifyOptions, check_out_path, summarize, summary_line, verify_images, write_results,
)
from profit.vnnlib_runner import run_vnnlib
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


@_command("verify", "verify L-inf robustness of images (default: the shipped network on the shipped samples)",
          _arg("--net", default=DEFAULT_NETWORK.stem, metavar="NET",
               help="ONNX file or shipped network name (default: %(default)s)"),
          _arg("--images", metavar="SRC", default=None,
               help="image source: MNIST IDX file/dir, ERAN .csv, folder of PNGs, .npy/.npz "
                    "(default: the shipped MNIST samples)"),
          _arg("--eps", type=float, default=0.02, help="L-inf radius in [0,1] pixel units (default: %(default)s)"),
          _arg("--domain", default="auto", choices=("auto", *DOMAINS),
               help="auto: attacks, then box, crown, alpha-crown, cheapest first (default)"),
          _arg("--count", type=int, metavar="N", help="verify N images (default: all)"),
          _arg("--offset", type=int, default=0, metavar="K", help="start at image K (default: 0)"),
          _arg("--timeout", type=float, metavar="S", help="seconds per image (default: none)"),
          _arg("--out", metavar="FILE", help="write the results as .json or .csv"),
          _arg("--save-dir", metavar="DIR", help="write counterexamples (PNG + .npy) and grid.png here"),
          _arg("--mean", type=float, nargs="+", metavar="M", help="normalisation mean per channel"),
          _arg("--std", type=float, nargs="+", metavar="S", help="normalisation std per channel"),
          _arg("--complete", action="store_true", help="finish with branch and bound (profit.bab)"),
          _arg("--steps", type=int, default=AttackOptions.steps, help="PGD steps (default: %(default)s)"),
          _arg("--restarts", type=int, default=AttackOptions.restarts, help="PGD restarts (default: %(default)s)"),
          _arg("--seed", type=int, default=AttackOptions.seed, help="attack seed (default: %(default)s)"),
          _arg("--no-progress", action="store_true", help="no progress bar on stderr"),
          _arg("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)"))
def _verify(args: argparse.Namespace) -> int:
    """One line per image, then the summary line."""
    _set_threads(args.threads)
    options = VerifyOptions(
        eps=args.eps, domain=args.domain, timeout=args.timeout,
        attack=AttackOptions(steps=args.steps, restarts=args.restarts, seed=args.seed),
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
        complete=args.complete)
    if args.out:
        check_out_path(args.out)
    net = load_network(args.net)
    images = load_images(args.images, count=args.count, offset=args.offset, channels=network_channels(net))
    results = verify_images(net, images.images, images.labels, options, progress=not args.no_progress,
                            indices=images.indices)
    print(f"network {net.source}, {len(images)} images from {images.source}, eps {options.eps}, "
          f"domain {options.domain}")
    print(f"{'idx':>6} {'label':>5} {'pred':>4}  {'verdict':<13} {'margin':>9}  {'decided_by':<12} {'seconds':>8}")
    for r in results:
        margin = "-" if r.margin is None else f"{r.margin:.4f}"
        print(f"{r.idx:>6} {r.label:>5} {r.predicted:>4}  {r.verdict.value:<13} {margin:>9}  "
              f"{r.decided_by:<12} {r.seconds:>8.4f}")
    summary = summarize(results)
    print(summary_line(summary))
    if args.out:
        write_results(args.out, results, net.source, options, summary)
    if args.save_dir:
        save_run(args.save_dir, results, images.images)
    return 0


@_command("vnnlib", "decide a VNN-LIB property of an ONNX network (VNN-COMP result file)",
          _arg("network", metavar="NET", help="ONNX file"),
          _arg("spec", metavar="SPEC", help="VNN-LIB file (.vnnlib or .vnnlib.gz)"),
          _arg("--timeout", type=float, metavar="S", help="seconds in all (default: none)"),
          _arg("--out", metavar="FILE", help="write the VNN-COMP result file here"),
          _arg("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)"))
def _vnnlib(args: argparse.Namespace) -> int:
    """Print the result (sat / unsat / unknown / timeout) and the time; write the result file."""
    _set_threads(args.threads)
    outcome = run_vnnlib(args.network, args.spec, timeout=args.timeout)
    print(f"result: {outcome.result}")
    print(f"time: {outcome.seconds:.2f} s (last method: {outcome.decision.decided_by})")
    if args.out:
        try:
            Path(args.out).write_text(outcome.text())
        except OSError as exc:
            raise ProfitError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    return 0


@_command("features", "proof features: prune each robustness proof to a small sufficient set (ProFIt)",
          _arg("network", nargs="?", default=DEFAULT_NETWORK.stem, metavar="NET",
               help="ONNX file or name of a shipped network (default: %(default)s)"),
          _arg("--images", metavar="SRC", default=None,
               help="image source: MNIST IDX file/dir, ERAN .csv, folder of PNGs, .npy/.npz "
                    "(default: the shipped MNIST samples)"),
          _arg("--count", type=int, metavar="N", help="use N images (default: all)"),
          _arg("--offset", type=int, default=0, metavar="K", help="start at image K (default: 0)"),
          _arg("--eps", type=float, default=0.02, help="L-inf radius in [0,1] pixel units (default: %(default)s)"),
          _arg("--domain", default="crown", choices=("crown", "alpha-crown", "deepz", "deeppoly", "box"),
               help="domain that proves and re-proves (default: %(default)s)"),
          _arg("--layer", default="-1", metavar="L",
               help="ReLU layer index (-1: input of the final linear layer, the default) or node name"),
          _arg("--priority", default="profit", choices=("profit", "weight", "random"),
               help="removal order (default: %(default)s)"),
          _arg("--topk", type=int, default=0, metavar="K",
               help="also evaluate top-k sufficiency for k = 1..K (e.g. 20) for all priorities"),
          _arg("--seed", type=int, default=0, help="seed of the random priority (default: %(default)s)"),
          _arg("--no-greedy", action="store_true", help="stop after the suffix search"),
          _arg("--confirm", action="store_true",
               help="re-prove each kept set with a fresh domain run on the pruned network"),
          _arg("--batch", type=int, default=16, metavar="B", help="images per bound call (default: %(default)s)"),
          _arg("--save-dir", metavar="DIR", help="write gradient-map PNGs of the kept features here"),
          _arg("--out", metavar="FILE", help="write one CSV row per image here"))
def _features(args: argparse.Namespace) -> int:
    """One line per image, the summary, and the top-k table with --topk."""
    from profit.features import FeatureRunOptions, PruneOptions, run_features, write_csv
    from profit.images import fit_to_network
    from profit.visualize import save_feature_maps

    options = FeatureRunOptions(
        eps=args.eps, domain=args.domain, layer=args.layer, topk=args.topk, visualize=bool(args.save_dir),
        batch_size=args.batch, prune=PruneOptions(priority=args.priority, seed=args.seed, greedy=not args.no_greedy,
                                               confirm=args.confirm))
    net = load_network(args.network)
    images = load_images(args.images, count=args.count, offset=args.offset, channels=network_channels(net))
    run = run_features(net, fit_to_network(images.images, net, images.source), images.labels, options,
                       indices=images.indices)
    print(f"network {net.source}, {len(images)} images from {images.source}, eps {options.eps}, "
          f"domain {options.domain}, layer {run.layer}, priority {args.priority}")
    print(f"{'idx':>6} {'label':>5} {'proven':>6} {'width':>5} {'nonzero':>7} {'suffix':>6} {'greedy':>6} "
          f"{'calls':>5} {'seconds':>8}  kept")
    for r in run.rows:
        print(f"{r.idx:>6} {r.label:>5} {str(r.proven):>6} {r.width:>5} {r.nonzero:>7} {r.kept_suffix:>6} "
              f"{r.kept_greedy:>6} {r.calls:>5} {r.seconds:>8.3f}  {r.kept_indices}")
    s = run.summary
    print(f"proven {s.proven}/{s.images}; kept features (suffix / greedy): mean {s.mean_suffix:.2f} / "
          f"{s.mean_greedy:.2f}, median {s.median_suffix:.1f} / {s.median_greedy:.1f}, max {s.max_greedy}; "
          f"<= 5: {s.le5:.1f}%, <= 10: {s.le10:.1f}%; {s.seconds_per_image:.3f} s per image")
    if run.topk is not None:
        success, change = run.topk.success(), run.topk.mean_rel_change()
        print("top-k: % of proven properties still proven (mean relative margin change)")
        print(f"{'k':>3}  " + "  ".join(f"{p:>17}" for p in run.topk.priorities))
        for j, k in enumerate(run.topk.ks):
            print(f"{k:>3}  " + "  ".join(f"{float(success[p, j]):>7.1f}% ({float(change[p, j]):>6.3f})"
                                          for p in range(len(run.topk.priorities))))
    if args.out:
        write_csv(args.out, run.rows)
    if args.save_dir:
        for maps in run.maps:
            save_feature_maps(maps, args.save_dir, f"img{images.indices[maps.index]}")
    return 0


@_command("explain", "formal explanations over a pixel patch: AXps/CXps, or the paper's explanations and "
                     "counterexamples (hitting-set duality)",
          _arg("network", nargs="?", default="mnist_5v6", metavar="NET",
               help="ONNX file or shipped network name (default: %(default)s, the binary 5-vs-6 net)"),
          _arg("-p", "--patch", required=True, metavar="PATCH",
               help="file of comma-separated row-major pixel indices, or the list itself (431,432,458)"),
          _arg("-d", "--instance", type=int, required=True, metavar="IDX", help="index of the image in the dataset"),
          _arg("--dataset", metavar="FILE", default=None,
               help="image source: MNIST IDX file/dir, ERAN .csv, folder of PNGs, .npy/.npz "
                    "(default: the shipped MNIST samples)"),
          _arg("-c", "--class", dest="target", default="true", metavar="true|opposite|K",
               help="explain the predicted class (true, default), any other class (opposite), or class K"),
          _arg("-e", "--expl", type=int, default=0, metavar="N",
               help="the explanation drawn in sample{d}-{c}-one-expl.png (0-based, default 0)"),
          _arg("-i", "--levels", type=int, metavar="K", help="K intensity levels (same as --domain levels:K)"),
          _arg("--domain", default=None, metavar="D",
               help="pixel domain: binary (default), levels:K, box, linf:EPS; discrete domains quantise the image"),
          _arg("--mode", default="local", choices=("local", "absolute"),
               help="local: AXps/CXps (default); absolute: (pixel, value) literals as in the paper"),
          _arg("--enum", default="axp", choices=("axp", "cxp", "both"),
               help="enumerate explanations (axp, default), counterexamples (cxp) or both"),
          _arg("--htype", default="rc2", choices=("rc2", "lbx", "mcsls"), help="hitting-set enumerator"),
          _arg("--limit", type=int, metavar="N", help="at most N items of each enumerated kind"),
          _arg("--margin", type=float, default=0.0,
               help="another class must beat the explained one by more than this (ties: lowest index)"),
          _arg("--timeout-oracle", type=float, metavar="S", help="seconds of complete search per oracle query"),
          _arg("--timeout", type=float, metavar="S", help="seconds for the whole enumeration"),
          _arg("--save", action="store_true", help="write PNGs (see --outdir)"),
          _arg("--outdir", default=".", metavar="DIR", help="where --save writes (default: the current directory)"),
          _arg("--json", dest="json_out", metavar="FILE", help="write the results as JSON here"),
          _arg("-v", "--verbose", action="store_true", help="also print every candidate the hitting-set solver proposes"))
def _explain(args: argparse.Namespace) -> int:
    """One line per explanation / counterexample (and candidate with -v), then the summary.
    Exit 0 when the enumeration is complete, 2 when it is partial."""
    from profit.explain import (
        ExplainOptions, Explainer, format_item, format_step, parse_target, read_patch, summary_lines,
    )
    from profit.explain_oracle import CascadeOracle, OracleOptions, PixelDomain
    from profit.images import fit_to_network

    if args.levels is not None and args.domain is not None:
        raise ProfitError("give either -i K or --domain, not both")
    domain = PixelDomain.parse(f"levels:{args.levels}" if args.levels is not None else args.domain or "binary")
    net = load_network(args.network)
    images = load_images(args.dataset, channels=network_channels(net))
    if not 0 <= args.instance < len(images):
        raise ProfitError(f"instance {args.instance} is out of range: {images.source} holds {len(images)} images "
                          f"(0..{len(images) - 1})")
    x = fit_to_network(images.images[args.instance:args.instance + 1], net, images.source)[0]
    if domain.discrete:
        x = torch.from_numpy(domain.quantize(x.double().numpy()))
    options = ExplainOptions(target=parse_target(args.target), margin=args.margin, htype=args.htype)
    oracle_options = OracleOptions(timeout=args.timeout_oracle)
    explainer = Explainer(net, x, read_patch(args.patch), domain, oracle=lambda p: CascadeOracle(p, oracle_options),
                          mode=args.mode, options=options)
    label = "-" if images.labels is None else int(images.labels[args.instance])
    print(f"network {net.source}, instance {args.instance} of {images.source} (label {label}, predicted class "
          f"{explainer.predicted}), target {explainer.target_name}, mode {args.mode}, domain {domain}, "
          f"{explainer.problem.n} patch pixels")
    trace = (lambda step: print(format_step(step))) if args.verbose else None
    run = explainer.enumerate(args.enum, limit=args.limit, timeout=args.timeout, trace=trace)
    counts = {"axp": 0, "cxp": 0}
    for item in run:
        counts[item.kind] += 1
        print(format_item(item, counts[item.kind]))
    for line in summary_lines(run):
        print(line)
    if args.save:
        saved = explainer.save_pngs(args.outdir, run, one=args.expl, sample=args.instance)
        print(f"wrote {len(saved.paths)} PNGs to {args.outdir}: {', '.join(saved.paths)}")
        ae = saved.adversarial
        if ae is not None:
            runtime = "-" if ae.runtime_predicted is None else ae.runtime_predicted
            verdict = "verified" if ae.violates else "NOT adversarial"
            print(f"true adversarial example: predicted class {ae.predicted} (float64), {runtime} (onnxruntime): "
                  f"{verdict}")
    if args.json_out:
        document = {"network": net.source, "instance": args.instance, **run.to_json()}
        try:
            Path(args.json_out).write_text(json.dumps(document, indent=1))
        except OSError as exc:
            raise ProfitError(f"{args.json_out}: cannot write ({exc.strerror or exc})") from None
    return 0 if run.status == "complete" else EXIT_USER_ERROR


def _set_threads(threads: int | None) -> None:
    """--threads: fewer torch threads are faster on a busy machine (no spinning workers)."""
    if threads is not None:
        if threads < 1:
            raise ProfitError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


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
