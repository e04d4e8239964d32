"""`profit verify`: L-inf robustness of images (default: the shipped network on the shipped samples)."""

from __future__ import annotations

import argparse

from domains import DOMAINS
from networks import DEFAULT_NETWORK
from profit.attacks import AttackOptions
from profit.cli.common import (
    IMAGES_HELP, RUN_ARGS, THREADS_ARG, arg, command, print_run, run_batch, run_options, set_threads,
)
from profit.data import fit_to_network, load_images, load_network, network_channels
from profit.verify import VerifyOptions, check_out_path, summarize, summary_line, verify_images, write_results


def handle(args: argparse.Namespace) -> int:
    """One line per image, then the summary line (with a batch flag: run into the store, then the same)."""
    set_threads(args.threads)
    batch = run_options(args)
    options = VerifyOptions(
        eps=args.eps, domain=args.domain, timeout=args.timeout,
        attack=AttackOptions(steps=args.steps, restarts=args.restarts, seed=args.seed),
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
        complete=args.complete)
    if args.out:
        check_out_path(args.out)
    net = load_network(args.net)
    images = load_images(args.images, count=args.count, offset=args.offset, channels=network_channels(net))
    if batch is None:
        results = verify_images(net, images.images, images.labels, options, progress=not args.no_progress,
                                indices=images.indices)
    else:
        from profit.runs import VerifyJob, image_tasks

        fit_to_network(images.images, net, images.source)
        job = VerifyJob(net.source, options, images.source)
        finished = run_batch(job, image_tasks(images), batch)
        results = job.results(finished.rows)
    print(f"network {net.source}, {len(images)} images from {images.source}, eps {options.eps}, "
          f"domain {options.domain}")
    print(f"{'idx':>6} {'label':>5} {'pred':>4}  {'verdict':<13} {'margin':>9}  {'decided_by':<12} {'seconds':>8}")
    for r in results:
        margin = "-" if r.margin is None else f"{r.margin:.4f}"
        print(f"{r.idx:>6} {r.label:>5} {r.predicted:>4}  {r.verdict.value:<13} {margin:>9}  "
              f"{r.decided_by:<12} {r.seconds:>8.4f}")
    summary = summarize(results)
    print(summary_line(summary))
    if batch is not None:
        print_run(finished)
    if args.out:
        write_results(args.out, results, net.source, options, summary)
    if args.save_dir:
        from profit.viz import save_run  # matplotlib: only when pictures are asked for

        save_run(args.save_dir, results, images.images)
    return 0


COMMAND = command(
    "verify", "verify L-inf robustness of images (default: the shipped network on the shipped samples)",
    arg("--net", default=DEFAULT_NETWORK.stem, metavar="NET",
        help="ONNX file or shipped network name (default: %(default)s)"),
    arg("--images", metavar="SRC", default=None,
        help=IMAGES_HELP),
    arg("--eps", type=float, default=0.02, help="L-inf radius in [0,1] pixel units (default: %(default)s)"),
    arg("--domain", default="auto", choices=("auto", *DOMAINS),
        help="auto: attacks, then box, crown, alpha-crown, cheapest first (default)"),
    arg("--count", type=int, metavar="N", help="verify N images (default: all)"),
    arg("--offset", type=int, default=0, metavar="K", help="start at image K (default: 0)"),
    arg("--timeout", type=float, metavar="S", help="seconds per image (default: none)"),
    arg("--out", metavar="FILE", help="write the results as .json or .csv"),
    arg("--save-dir", metavar="DIR", help="write counterexamples (PNG + .npy) and grid.png here"),
    arg("--mean", type=float, nargs="+", metavar="M", help="normalisation mean per channel"),
    arg("--std", type=float, nargs="+", metavar="S", help="normalisation std per channel"),
    arg("--complete", action="store_true", help="finish with branch and bound (profit.bab)"),
    arg("--steps", type=int, default=AttackOptions.steps, help="PGD steps (default: %(default)s)"),
    arg("--restarts", type=int, default=AttackOptions.restarts, help="PGD restarts (default: %(default)s)"),
    arg("--seed", type=int, default=AttackOptions.seed, help="attack seed (default: %(default)s)"),
    arg("--no-progress", action="store_true", help="no progress bar on stderr"),
    THREADS_ARG,
    *RUN_ARGS,
    handler=handle)
