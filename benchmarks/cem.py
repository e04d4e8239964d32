"""CEM on shipped MNIST samples: success, sparsity, AE error, certified share and time per image, per mode.

    .venv/bin/python benchmarks/cem.py --net mnist_conv --count 100 --gamma 0 1
    .venv/bin/python benchmarks/cem.py --net mnist_mlp --count 20 --iterations 150 --c-steps 3 --optimizer adaexpgrad

Runs `profit.cem.cem` (white box, binary search over c; FISTA unless --optimizer says
otherwise) for PN and PP on the first --count shipped samples (MNIST test images 0-99), once
per --gamma (gamma > 0 uses the autoencoder --ae, default the shipped mnist_ae), certifies the
results (`certify_pn`: onnxruntime re-check and proven radius; `certify_pp`: the class proven
on the box between the PP and the image) and prints one row per mode and gamma. "AE err" is
the mean ||x - AE(x)||^2 of the found explanations (the PN's x0 + d, the PP), measured with
the same autoencoder whatever gamma. No reference implementation (Alibi, the PyTorch
reproduction) installs here offline next to torch 2.13 without pulling other torch builds,
so none is run side by side; the objectives and schedule follow the paper's code (the
`original_threshold` flag switches to its threshold beta instead of lr * beta).
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
from profit.cem.components import OPTIMIZERS, check_autoencoder, make_optimizer, reconstruction_error  # noqa: E402
from profit.data import load_network  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mnist_conv")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--c-steps", type=int, default=5)
    parser.add_argument("--kappa", type=float, default=0.0)
    parser.add_argument("--original-threshold", action="store_true")
    parser.add_argument("--gamma", type=float, nargs="+", default=[0.0], help="one row per value (default 0)")
    parser.add_argument("--ae", default="mnist_ae", help="autoencoder of the gamma term and the AE error column")
    parser.add_argument("--optimizer", default="fista", choices=OPTIMIZERS)
    parser.add_argument("--modes", default="PN,PP")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = load_network(args.net)
    autoencoder = load_network(args.ae)
    check_autoencoder(autoencoder, net)
    images, _ = load_samples()
    x = torch.as_tensor(images[:args.count]).reshape(args.count, *net.input_shape).double()
    print(f"{args.net}, {args.count} images, kappa {args.kappa}, {args.iterations} iterations x {args.c_steps} "
          f"c-steps{' (original threshold)' if args.original_threshold else ''}, autoencoder {args.ae}")
    print(f"{'mode':<4} {'optimizer':>10} {'gamma':>5} {'found':>6} {'holds':>6} {'l0':>7} {'l1':>7} {'AE err':>7} "
          f"{'certified':>9} {'s/image':>8} {'certify s':>9}")
    for mode in args.modes.split(","):
        for gamma in args.gamma:
            options = CEMOptions(mode=mode, kappa=args.kappa, gamma=gamma, max_iter=args.iterations,
                                 c_steps=args.c_steps, original_threshold=args.original_threshold)
            optimizer = make_optimizer(args.optimizer, options.lr, original_threshold=args.original_threshold)
            start = time.perf_counter()
            result = cem(net, x, options, optimizer=optimizer, autoencoder=autoencoder if gamma > 0 else None)
            seconds = time.perf_counter() - start
            classes = onnx_outputs(net.source, net, result.explanation.float()).argmax(1)
            holds = (classes != result.target) if mode == "PN" else (classes == result.target)
            found = result.found
            delta = result.delta.reshape(args.count, -1)[found]
            with torch.no_grad():
                ae_error = reconstruction_error(autoencoder, result.explanation)[found]
            start = time.perf_counter()
            if mode == "PN":
                certified = sum(c.proven_eps > 0 for c in certify_pn(net, result, net.source))
            else:
                certified = sum(c.status == "certified" for c in certify_pp(net, result))
            certify_seconds = time.perf_counter() - start
            n = max(int(found.sum()), 1)
            print(f"{mode:<4} {args.optimizer:>10} {gamma:>5g} {int(found.sum()):>6} {int((holds & found).sum()):>6} "
                  f"{float((delta != 0).sum()) / n:>7.1f} {float(delta.abs().sum()) / n:>7.2f} "
                  f"{float(ae_error.sum()) / n:>7.3f} {certified:>9} {seconds / args.count:>8.3f} "
                  f"{certify_seconds:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
