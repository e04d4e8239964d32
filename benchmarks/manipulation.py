"""The explanation manipulation attack (Dombrowski et al. 2019) on the shipped MNIST conv net
(or any network and images: --net PATH --images SRC, e.g. the CIFAR-10 convSmall of ../shared).

For the first N shipped samples, each method's map of image i is pushed toward the map of image
i + 1 (mod N): mean PCC(h, h_t) before and after, SSIM(h(x_adv), h_t), SSIM(x_adv, x), mean logit
change and the % of images whose class is kept. Then the same attack against beta-smoothed
saliency (the network with every ReLU a softplus(beta), explained and attacked as it is) for a
sweep of beta: smaller beta should leave the attack less to gain.

    OMP_NUM_THREADS=1 python benchmarks/manipulation.py [--count 100] [--steps 300] [--net mnist_conv]
    OMP_NUM_THREADS=1 python benchmarks/manipulation.py --net ../shared/networks/profit/convSmall_pgd_cifar.onnx \
        --images ../shared/data/cifar10/cifar10_test_first100.csv
"""

from __future__ import annotations

import argparse
import time

import torch

from profit.attribution import (
    InputXGradient, IntegratedGradients, ManipulationOptions, Saliency, SmoothGrad, beta_smoothed_network,
    manipulate,
)
from profit.data import fit_to_network, load_images, load_network, network_channels

METHOD_ARGS = {"saliency": (Saliency, ()), "ixg": (InputXGradient, ()),
               "ig": (IntegratedGradients, (("n_steps", 8),)), "smoothgrad": (SmoothGrad, (("nt_samples", 8),))}


def row(name: str, net, x: torch.Tensor, method, args: tuple, options: ManipulationOptions) -> None:
    """Attack every image toward the next one's map and print one table row."""
    targets = torch.roll(x, -1, 0)
    target_map = method.attribute(targets, net.logits(targets).argmax(1), **dict(args))
    start = time.perf_counter()
    r = manipulate(net, x, target_map, method, options)
    print(f"{name:<18} {r.pcc_before.mean():>10.3f} {r.pcc_after.mean():>9.3f} {r.ssim_maps.mean():>9.3f} "
          f"{r.ssim_input.mean():>10.3f} {r.output_change.mean():>9.4f} {100 * r.class_kept.float().mean():>7.1f} "
          f"{time.perf_counter() - start:>6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mnist_conv")
    parser.add_argument("--images", default=None, help="image source (default: the shipped MNIST samples)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--methods", default=",".join(METHOD_ARGS))
    parser.add_argument("--betas", default="1,3,10,30")
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = load_network(args.net)
    images = load_images(args.images, count=args.count, channels=network_channels(net))
    x = fit_to_network(images.images, net, images.source)
    print(f"{args.net}, {len(x)} images of {images.source}, {args.steps} Adam steps, lr {args.lr}, gamma {args.gamma}")
    print(f"{'method':<18} {'PCC before':>10} {'PCC after':>9} {'SSIM maps':>9} {'SSIM input':>10} "
          f"{'d logits':>9} {'kept %':>7} {'s':>6}")
    for name in args.methods.split(","):
        cls, method_args = METHOD_ARGS[name]
        options = ManipulationOptions(steps=args.steps, lr=args.lr, gamma=args.gamma, method_args=method_args)
        row(name, net, x, cls(net), method_args, options)
    for beta in (float(b) for b in args.betas.split(",")):
        smooth = beta_smoothed_network(net, beta)
        options = ManipulationOptions(steps=args.steps, lr=args.lr, gamma=args.gamma, beta_start=beta, beta_end=beta)
        row(f"saliency beta={beta:g}", smooth, x, Saliency(smooth), (), options)


if __name__ == "__main__":
    main()
