"""CEM on shipped MNIST samples: success, sparsity, certified share and time per image, per mode.

    .venv/bin/python benchmarks/cem.py --net mnist_conv --count 100
    .venv/bin/python benchmarks/cem.py --net mnist_mlp --count 20 --iterations 150 --c-steps 3

Runs `profit.cem.cem` (white box, FISTA, binary search over c) for PN and PP on the first
--count shipped samples (MNIST test images 0-99), certifies the results (`certify_pn`:
onnxruntime re-check and proven radius; `certify_pp`: the class proven on the box between
the PP and the image) and prints one row per mode. No reference implementation (Alibi, the
PyTorch reproduction) installs here offline next to torch 2.13 without pulling other torch
builds, so none is run side by side; the objectives and schedule follow the paper's code
(the `original_threshold` flag switches to its threshold beta instead of lr * beta).
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from networks.datasets import load_samples  # noqa: E402
from profit.attacks import onnx_outputs  # noqa: E402
from profit.cem import CEMOptions, cem, certify_pn, certify_pp  # noqa: E402
from profit.data import load_network  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mnist_conv")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--c-steps", type=int, default=5)
    parser.add_argument("--kappa", type=float, default=0.0)
    parser.add_argument("--original-threshold", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = load_network(args.net)
    images, _ = load_samples()
    x = torch.as_tensor(images[:args.count]).reshape(args.count, *net.input_shape).double()
    print(f"{args.net}, {args.count} images, kappa {args.kappa}, {args.iterations} iterations x {args.c_steps} "
          f"c-steps{' (original threshold)' if args.original_threshold else ''}")
    print(f"{'mode':<4} {'found':>6} {'holds':>6} {'l0':>7} {'l1':>7} {'certified':>9} {'s/image':>8} {'certify s':>9}")
    for mode in ("PN", "PP"):
        options = CEMOptions(mode=mode, kappa=args.kappa, max_iter=args.iterations, c_steps=args.c_steps,
                             original_threshold=args.original_threshold)
        start = time.perf_counter()
        result = cem(net, x, options)
        seconds = time.perf_counter() - start
        classes = onnx_outputs(net.source, net, result.explanation.float()).argmax(1)
        holds = (classes != result.target) if mode == "PN" else (classes == result.target)
        found = result.found
        delta = result.delta.reshape(args.count, -1)[found]
        start = time.perf_counter()
        if mode == "PN":
            certified = sum(c.proven_eps > 0 for c in certify_pn(net, result, net.source))
        else:
            certified = sum(c.status == "certified" for c in certify_pp(net, result))
        certify_seconds = time.perf_counter() - start
        n = max(int(found.sum()), 1)
        print(f"{mode:<4} {int(found.sum()):>6} {int((holds & found).sum()):>6} "
              f"{float((delta != 0).sum()) / n:>7.1f} {float(delta.abs().sum()) / n:>7.2f} {certified:>9} "
              f"{seconds / args.count:>8.3f} {certify_seconds:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
