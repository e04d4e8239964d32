"""`profit features [NET]`: proof features, each robustness proof pruned to a small sufficient set (ProFIt)."""

from __future__ import annotations

import argparse

from networks import DEFAULT_NETWORK
from profit.cli.common import IMAGES_HELP, RUN_ARGS, arg, command, print_run, run_batch, run_options
from profit.data import fit_to_network, load_images, load_network, network_channels
from profit.features import (
    PRIORITIES, FeatureRun, FeatureRunOptions, PruneOptions, resolve_layer, run_features, write_csv,
)


def handle(args: argparse.Namespace) -> int:
    """One line per image, the summary, and the top-k table with --topk (with a batch flag: run into
    the store, then the same)."""
    batch = run_options(args)
    options = FeatureRunOptions(
        eps=args.eps, domain=args.domain, layer=args.layer, topk=args.topk, visualize=bool(args.save_dir),
        batch_size=args.batch, prune=PruneOptions(priority=args.priority, seed=args.seed, greedy=not args.no_greedy,
                                               confirm=args.confirm))
    net = load_network(args.network)
    images = load_images(args.images, count=args.count, offset=args.offset, channels=network_channels(net))
    x = fit_to_network(images.images, net, images.source)
    if batch is None:
        run = run_features(net, x, images.labels, options, indices=images.indices)
    else:
        from profit.runs import FeaturesJob, image_tasks, summarize_rows

        job = FeaturesJob(net.source, options, images.source, first=images.indices[0])
        finished = run_batch(job, image_tasks(images), batch)
        table = job.results(finished.rows)
        run = FeatureRun(resolve_layer(net, options.layer), [], table, summarize_rows(table), job.topk(finished.rows))
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
    if batch is not None:
        print_run(finished)
    if args.out:
        write_csv(args.out, run.rows)
    if args.save_dir:
        from profit.viz import save_feature_maps  # matplotlib: only when pictures are asked for

        for maps in run.maps:
            save_feature_maps(maps, args.save_dir, f"img{images.indices[maps.index]}")
    return 0


COMMAND = command(
    "features", "proof features: prune each robustness proof to a small sufficient set (ProFIt)",
    arg("network", nargs="?", default=DEFAULT_NETWORK.stem, metavar="NET",
        help="ONNX file or name of a shipped network (default: %(default)s)"),
    arg("--images", metavar="SRC", default=None,
        help=IMAGES_HELP),
    arg("--count", type=int, metavar="N", help="use N images (default: all)"),
    arg("--offset", type=int, default=0, metavar="K", help="start at image K (default: 0)"),
    arg("--eps", type=float, default=0.02, help="L-inf radius in [0,1] pixel units (default: %(default)s)"),
    arg("--domain", default="crown", choices=("crown", "alpha-crown", "deepz", "deeppoly", "box"),
        help="domain that proves and re-proves (default: %(default)s)"),
    arg("--layer", default="-1", metavar="L",
        help="ReLU layer index (-1: input of the final linear layer, the default) or node name"),
    arg("--priority", default="profit", choices=PRIORITIES,
        help="removal order (default: %(default)s)"),
    arg("--topk", type=int, default=0, metavar="K",
        help="also evaluate top-k sufficiency for k = 1..K (e.g. 20) for all priorities"),
    arg("--seed", type=int, default=0, help="seed of the random priority (default: %(default)s)"),
    arg("--no-greedy", action="store_true", help="stop after the suffix search"),
    arg("--confirm", action="store_true",
        help="re-prove each kept set with a fresh domain run on the pruned network"),
    arg("--batch", type=int, default=16, metavar="B", help="images per bound call (default: %(default)s)"),
    arg("--save-dir", metavar="DIR", help="write gradient-map PNGs of the kept features here"),
    arg("--out", metavar="FILE", help="write one CSV row per image here"),
    arg("--no-progress", action="store_true", help="no progress bar on stderr (batch runs)"),
    *RUN_ARGS,
    handler=handle)
