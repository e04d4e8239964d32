"""Certified gradient bounds on the shipped MNIST nets: over the first N shipped samples and a few eps,
the share of balls whose saliency map is certified constant, unstable ReLUs, certified top-10 pixels,
mean bound width and seconds per image; how far beta-smoothed gradients are from the ReLU ones; and
the width of the softplus gradient bounds as beta varies.

    OMP_NUM_THREADS=1 python benchmarks/attribution.py [--count 100] [--domain crown]
"""

from __future__ import annotations

import argparse
import time

import torch

from networks import load_onnx, shipped
from networks.datasets import load_samples
from profit.attribution import BetaSmoothed, Saliency, beta_smoothed_network, gradient_bounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--domain", default="crown")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.from_numpy(load_samples()[0][:args.count])
    print(f"{'net':<11} {'eps':>6} {'constant %':>10} {'unstable':>8} {'top-10 cert':>11} {'width':>8} {'s/img':>6}")
    for name in ("mnist_mlp", "mnist_conv"):
        net = load_onnx(shipped(name))
        for eps in (0.0001, 0.001, 0.005, 0.01):
            start = time.perf_counter()
            b = gradient_bounds(net, x, eps, domain=args.domain)
            seconds = (time.perf_counter() - start) / len(x)
            print(f"{name:<11} {eps:>6} {100 * b.constant.float().mean():>10.1f} {b.unstable.float().mean():>8.1f} "
                  f"{b.certified_topk(10).flatten(1).sum(1).float().mean():>11.2f} "
                  f"{(b.upper - b.lower).mean():>8.4f} {seconds:>6.3f}")
    print(f"\n{'net':<11} {'beta':>6} {'rel. L2 distance to the ReLU gradient':>38}")
    for name in ("mnist_mlp", "mnist_conv"):
        net = load_onnx(shipped(name))
        relu = Saliency(net).attribute(x, abs=False).flatten(1)
        for beta in (1.0, 3.0, 10.0, 30.0, 100.0):
            smooth = BetaSmoothed(Saliency(net), beta).attribute(x, abs=False).flatten(1)
            print(f"{name:<11} {beta:>6g} {float(((smooth - relu).norm(dim=1) / relu.norm(dim=1)).mean()):>38.3f}")
    print(f"\nmean gradient-bound width (Box pre-activation bounds, eps 0.001): softplus(beta) vs ReLU")
    print(f"{'net':<11} " + " ".join(f"{'beta ' + format(b, 'g'):>9}" for b in (1, 3, 10, 30, 100)) + f" {'relu':>9}")
    for name in ("mnist_mlp", "mnist_conv"):
        net = load_onnx(shipped(name))
        t = net.logits(x).argmax(1)
        widths = [gradient_bounds(beta_smoothed_network(net, b), x, 0.001, t) for b in (1, 3, 10, 30, 100)]
        widths.append(gradient_bounds(net, x, 0.001, t, domain="box"))
        print(f"{name:<11} " + " ".join(f"{float((w.upper - w.lower).mean()):>9.4f}" for w in widths))


if __name__ == "__main__":
    main()
