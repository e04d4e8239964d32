"""`profit manipulate [NET] -d IDX --target-d J --method M`: the explanation manipulation attack
(Dombrowski et al. 2019) pushing image IDX's map toward image J's."""

from __future__ import annotations

import argparse

from networks import DEFAULT_NETWORK
from profit.attribution import (
    InputXGradient, IntegratedGradients, ManipulationOptions, Saliency, SmoothGrad, beta_smoothed_network,
    manipulate,
)
from profit.cli.common import IMAGES_HELP, arg, command
from profit.data import fit_to_network, load_images, load_network, network_channels
from profit.errors import ProfitError

ATTACKABLE = {"saliency": Saliency, "ixg": InputXGradient, "ig": IntegratedGradients, "smoothgrad": SmoothGrad}


def handle(args: argparse.Namespace) -> int:
    """The attack's metrics on one line each; with --save-dir the side-by-side figure."""
    net = load_network(args.network)
    images = load_images(args.images, channels=network_channels(net))
    for flag, index in (("-d", args.instance), ("--target-d", args.target_instance)):
        if not 0 <= index < len(images):
            raise ProfitError(f"{flag} {index} is out of range: {images.source} holds {len(images)} images "
                              f"(0..{len(images) - 1})")
    if args.beta is not None:
        net = beta_smoothed_network(net, args.beta)
    method_args = {"ig": (("n_steps", args.steps_ig),), "smoothgrad": (("nt_samples", args.samples),)}.get(
        args.method, ())
    beta_start, beta_end = (args.beta, args.beta) if args.beta is not None else (args.beta_start, args.beta_end)
    options = ManipulationOptions(steps=args.steps, lr=args.lr, gamma=args.gamma, beta_start=beta_start,
                                  beta_end=beta_end, method_args=method_args)
    x = fit_to_network(images.images[args.instance:args.instance + 1], net, images.source)
    other = fit_to_network(images.images[args.target_instance:args.target_instance + 1], net, images.source)
    method = ATTACKABLE[args.method](net)
    target_map = method.attribute(other, net.logits(other).argmax(1), **dict(method_args))
    r = manipulate(net, x, target_map, method, options)
    smoothed = "" if args.beta is None else f", beta-smoothed network (beta {args.beta})"
    print(f"network {net.source}, instance {args.instance} of {images.source} toward the {args.method} map of "
          f"instance {args.target_instance}{smoothed}; {args.steps} Adam steps, lr {args.lr}, gamma {args.gamma}")
    print(f"PCC(map, target): {float(r.pcc_before):.3f} before, {float(r.pcc_after):.3f} after; "
          f"SSIM(map, target) {float(r.ssim_maps):.3f}; MSE {float(r.mse):.3g}")
    print(f"SSIM(manipulated input, input) {float(r.ssim_input):.3f}; max |x_adv - x| "
          f"{float((r.x_adv - x).abs().max()):.3f}; logit change {float(r.output_change):.4f}; class "
          f"{'kept' if bool(r.class_kept) else 'CHANGED'}")
    if args.save_dir:
        from profit.viz import plot_manipulation, save  # matplotlib: only for pictures

        shape = images.images.shape[1:]
        fig, _ = plot_manipulation(x.reshape(shape), r.map_original.reshape(shape), r.map_target.reshape(shape),
                                   r.x_adv.reshape(shape), r.map_adv.reshape(shape),
                                   title=f"{args.method}: PCC to target {float(r.pcc_before):.2f} -> "
                                         f"{float(r.pcc_after):.2f}")
        path = save(fig, f"{args.save_dir}/manipulate_{args.instance}_to_{args.target_instance}_{args.method}.png")
        print(f"wrote {path}")
    return 0


COMMAND = command(
    "manipulate", "the explanation manipulation attack: push one image's attribution map toward another's "
                  "while its output stays",
    arg("network", nargs="?", default=DEFAULT_NETWORK.stem, metavar="NET",
        help="ONNX file or name of a shipped network (default: %(default)s)"),
    arg("-d", "--instance", type=int, default=0, metavar="IDX", help="image to manipulate (default: %(default)s)"),
    arg("--target-d", dest="target_instance", type=int, default=1, metavar="J",
        help="image whose map is the target (default: %(default)s)"),
    arg("--images", metavar="SRC", default=None, help=IMAGES_HELP),
    arg("--method", default="saliency", choices=tuple(ATTACKABLE), help="attacked method (default: %(default)s)"),
    arg("--beta", type=float, metavar="B",
        help="attack the beta-smoothed explanation (every ReLU softplus(B)) instead of the ReLU network's"),
    arg("--steps", type=int, default=300, metavar="N", help="Adam steps (default: %(default)s)"),
    arg("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)"),
    arg("--gamma", type=float, default=0.1, help="weight of the output term (default: %(default)s)"),
    arg("--beta-start", type=float, default=10.0, help="softplus beta schedule start (default: %(default)s)"),
    arg("--beta-end", type=float, default=100.0, help="softplus beta schedule end (default: %(default)s)"),
    arg("--steps-ig", type=int, default=8, metavar="N", help="ig: Riemann steps (default: %(default)s)"),
    arg("--samples", type=int, default=8, metavar="N", help="smoothgrad: noise samples (default: %(default)s)"),
    arg("--save-dir", metavar="DIR", help="write the side-by-side figure here"),
    handler=handle)
