"""`profit attribute [NET] -d IDX --method M`: a gradient attribution map of one image, optionally
beta-smoothed, optionally with certified gradient bounds over an eps-ball."""

from __future__ import annotations

import argparse

import torch

from networks import DEFAULT_NETWORK
from profit.attribution import (
    LRP, LRP_RULES, METHODS, BetaSmoothed, IntegratedGradients, LRPOptions, ProofFeatureMap, Saliency,
    SmoothGrad, beta_smoothed_network, gradient_bounds,
)
from profit.cli.common import IMAGES_HELP, arg, command
from profit.data import fit_to_network, load_images, load_network, network_channels
from profit.errors import ProfitError


def _method(args: argparse.Namespace, net) -> tuple[object, dict]:
    """The attribution object and its attribute() arguments from the flags."""
    if args.method == "lrp":
        if args.beta is not None:
            raise ProfitError("--beta smooths ReLUs into softplus, which LRP's rules do not cover")
        method = LRP(net, LRPOptions(rule=args.lrp_rule, first=args.lrp_first, epsilon=args.lrp_epsilon))
    elif args.method == "proof":
        method = ProofFeatureMap(net, eps=args.eps)
    else:
        method = METHODS[args.method](net)
    kwargs: dict = {}
    if isinstance(method, Saliency):
        kwargs = {"abs": args.abs}
    elif isinstance(method, IntegratedGradients):
        kwargs = {"n_steps": args.steps}
    elif isinstance(method, SmoothGrad):
        kwargs = {"nt_samples": args.samples, "stdevs": args.stdevs, "seed": args.seed}
    if args.beta is not None:
        method = BetaSmoothed(method, args.beta)
    return method, kwargs


def _parse_betas(text: str) -> list[float]:
    """--beta-sweep: comma-separated positive numbers."""
    try:
        betas = [float(b) for b in text.split(",")]
    except ValueError:
        raise ProfitError(f"--beta-sweep must be comma-separated numbers, got '{text}'") from None
    if not all(b > 0 for b in betas):
        raise ProfitError(f"--beta-sweep values must be > 0, got '{text}'")
    return betas


def handle(args: argparse.Namespace) -> int:
    """The map's summary and its top pixels; with --certify the gradient bounds and certificates;
    with --save-dir the PNGs."""
    net = load_network(args.network)
    images = load_images(args.images, channels=network_channels(net))
    if not 0 <= args.instance < len(images):
        raise ProfitError(f"instance {args.instance} is out of range: {images.source} holds {len(images)} images "
                          f"(0..{len(images) - 1})")
    if args.beta_sweep is not None:
        if not args.save_dir or args.method in ("lrp", "proof"):
            raise ProfitError("--beta-sweep draws a figure of a gradient method: give --save-dir, not lrp/proof")
        _parse_betas(args.beta_sweep)
    if args.certify is not None and not args.certify >= 0:
        raise ProfitError(f"--certify must be >= 0, got {args.certify}")
    if args.target is not None and not 0 <= args.target < net.n_outputs:
        raise ProfitError(f"--target must lie in 0..{net.n_outputs - 1}, got {args.target}")
    x = fit_to_network(images.images[args.instance:args.instance + 1], net, images.source)
    method, kwargs = _method(args, net)
    predicted = int(net.logits(x).argmax(1))
    target = predicted if args.target is None else args.target
    maps = method.attribute(x, target=target, **kwargs)
    label = "-" if images.labels is None else int(images.labels[args.instance])
    smoothed = "" if args.beta is None else f", beta-smoothed (beta {args.beta})"
    print(f"network {net.source}, instance {args.instance} of {images.source} (label {label}, predicted class "
          f"{predicted}), target {target}, method {args.method}{smoothed}")
    flat = maps.flatten()
    print(f"map: sum {float(flat.sum()):.6g}, min {float(flat.min()):.6g}, max {float(flat.max()):.6g}, "
          f"mean |.| {float(flat.abs().mean()):.6g}")
    top = flat.abs().topk(min(args.topk, flat.numel())).indices
    print(f"top-{len(top)} pixels by |attribution|: " + ", ".join(f"{int(i)} ({float(flat[i]):.4g})" for i in top))
    bounds = None
    if args.certify is not None:
        certified_net = net if args.beta is None else beta_smoothed_network(net, args.beta)
        bounds = gradient_bounds(certified_net, x, args.certify, target, domain=args.domain)
        width = (bounds.upper - bounds.lower).flatten()
        certified = bounds.certified_topk(args.topk).flatten().nonzero().flatten().tolist()
        domain = args.domain or ("crown" if args.beta is None else "box")
        print(f"gradient bounds over the L-inf ball eps {args.certify} ({domain}): mean width "
              f"{float(width.mean()):.6g}, max width {float(width.max()):.6g}, {int(bounds.unstable)} unstable "
              f"{'ReLUs' if args.beta is None else 'softplus derivatives'}")
        print("saliency map constant over the ball: " + ("yes (every ReLU stable)" if bool(bounds.constant)
                                                           else "not certified"))
        print(f"certified top-{args.topk} pixels: {len(certified)}" + (f" ({', '.join(map(str, certified))})"
                                                                      if certified else ""))
    if args.save_dir:
        from profit.viz import plot_attributions, plot_gradient_bounds, save  # matplotlib: only for pictures

        image = images.images[args.instance]
        name = f"{args.method}" + ("" if args.beta is None else f"_beta{args.beta:g}")
        shown = maps.reshape(image.shape) if maps.numel() == image.numel() else maps[0]
        fig, _ = plot_attributions(image, {f"{args.method} (class {target})": shown},
                                   title=f"instance {args.instance}{smoothed}")
        paths = [save(fig, f"{args.save_dir}/img{args.instance}_{name}.png")]
        if bounds is not None:
            view = type(bounds)(bounds.lower.reshape(1, *image.shape), bounds.upper.reshape(1, *image.shape),
                                bounds.target, bounds.unstable)
            fig, _ = plot_gradient_bounds(image, view, k=args.topk)
            paths.append(save(fig, f"{args.save_dir}/img{args.instance}_certified_eps{args.certify:g}.png"))
        if args.beta_sweep:
            sweep = {"ReLU": shown}
            for beta in _parse_betas(args.beta_sweep):
                smooth, smooth_kwargs = _method(argparse.Namespace(**{**vars(args), "beta": beta}), net)
                sweep[f"beta {beta:g}"] = smooth.attribute(x, target=target, **smooth_kwargs).reshape(shown.shape)
            fig, _ = plot_attributions(image, sweep, title=f"{args.method}, class {target}: beta-smoothed")
            paths.append(save(fig, f"{args.save_dir}/img{args.instance}_{args.method}_beta_sweep.png"))
        print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


COMMAND = command(
    "attribute", "gradient attribution map of one image (saliency, IG, SmoothGrad, LRP, ...), optionally "
                 "beta-smoothed or with certified gradient bounds",
    arg("network", nargs="?", default=DEFAULT_NETWORK.stem, metavar="NET",
        help="ONNX file or name of a shipped network (default: %(default)s)"),
    arg("-d", "--instance", type=int, default=0, metavar="IDX", help="image index (default: %(default)s)"),
    arg("--images", metavar="SRC", default=None, help=IMAGES_HELP),
    arg("--method", default="saliency", choices=tuple(METHODS), help="attribution method (default: %(default)s)"),
    arg("--target", type=int, metavar="C", help="class to explain (default: the predicted class)"),
    arg("--beta", type=float, metavar="B", help="explain the network with every ReLU replaced by softplus(B)"),
    arg("--abs", action="store_true", help="saliency: |gradient| (default: the signed gradient)"),
    arg("--steps", type=int, default=50, metavar="N", help="ig: Riemann steps (default: %(default)s)"),
    arg("--samples", type=int, default=25, metavar="N", help="smoothgrad: noise samples (default: %(default)s)"),
    arg("--stdevs", type=float, default=0.15, metavar="S",
        help="smoothgrad: noise std as a fraction of the input range (default: %(default)s)"),
    arg("--seed", type=int, default=0, help="smoothgrad: noise seed (default: %(default)s)"),
    arg("--lrp-rule", default="epsilon", choices=tuple(r for r in LRP_RULES if r != "zb"),
        help="lrp: rule of the hidden layers (default: %(default)s)"),
    arg("--lrp-first", choices=LRP_RULES, help="lrp: rule of the first layer (default: --lrp-rule; zb: input bounds "
                                               "[0, 1])"),
    arg("--lrp-epsilon", type=float, default=1e-6, metavar="E", help="lrp: stabiliser (default: %(default)s)"),
    arg("--eps", type=float, default=0.02, help="proof: L-inf radius of the robustness proof (default: %(default)s)"),
    arg("--certify", type=float, metavar="EPS",
        help="also bound d f_target/dx over the L-inf ball of radius EPS (clipped to [0, 1])"),
    arg("--domain", choices=("crown", "deeppoly", "box"),
        help="--certify: domain of the pre-activation bounds (default: crown; box with --beta, the only domain "
             "that bounds softplus)"),
    arg("--topk", type=int, default=10, metavar="K", help="pixels listed and certified top-k (default: %(default)s)"),
    arg("--save-dir", metavar="DIR", help="write the map (and the certified bounds) as PNGs here"),
    arg("--beta-sweep", metavar="B1,B2,..",
        help="with --save-dir: also a figure of the map beta-smoothed with each beta, beside the ReLU map"),
    handler=handle)
