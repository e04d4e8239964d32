"""`profit cem [NET] -d IDX --mode pn|pp`: contrastive explanations (CEM), certified where the verifier proves them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from profit.cem.components import OPTIMIZERS
from profit.cli.common import IMAGES_HELP, arg, command, write_text
from profit.data import fit_to_network, load_images, load_network, network_channels
from profit.errors import ProfitError


def handle(args: argparse.Namespace) -> int:
    """One line per image: class, explanation class, distance, pixels, status; PNGs with --save-dir."""
    from profit.cem import (
        CEMOptions, FiniteDifferenceGradient, RandomDirectionGradient, RuntimeModel, TorchGradient, cem, certify_pn,
        certify_pp,
    )
    from profit.cem.components import check_autoencoder, make_optimizer, reconstruction_error
    from profit.cem.generator import class_and_score

    if args.kappa < 0 or args.beta < 0 or args.gamma < 0:
        raise ProfitError("--kappa, --beta and --gamma must be >= 0")
    if args.gamma > 0 and args.ae is None:
        raise ProfitError("--gamma > 0 needs an autoencoder: give --ae NET (a shipped name such as mnist_ae, "
                          "or an .onnx file)")
    net = load_network(args.network)
    autoencoder = None
    if args.ae is not None:
        autoencoder = load_network(args.ae)
        check_autoencoder(autoencoder, net)
    images = load_images(args.images, channels=network_channels(net))
    indices = [int(i) for i in args.instance.split(",")]
    for i in indices:
        if not 0 <= i < len(images):
            raise ProfitError(f"instance {i} is out of range: {images.source} holds {len(images)} images")
    x = fit_to_network(images.images[indices], net, images.source).double()
    mode = args.mode.upper()
    options = CEMOptions(mode=mode, kappa=args.kappa, beta=args.beta, gamma=args.gamma, c_init=args.c_init,
                         c_steps=args.c_steps, max_iter=args.iterations, lr=args.lr)
    optimizer = make_optimizer(args.optimizer, lr=args.lr, eta=args.eta)
    if args.gradient == "autograd":
        model, gradient = net, TorchGradient()
    else:
        if net.source is None or not str(net.source).endswith(".onnx"):
            raise ProfitError("a black-box gradient needs an ONNX network")
        model = RuntimeModel(net.source, net)
        gradient = RandomDirectionGradient(seed=args.seed) if args.gradient == "random" else FiniteDifferenceGradient()
    start = time.perf_counter()
    segments = _segments(args.segments, tuple(net.input_shape)) if args.segments else None
    save_freq = max(1, args.iterations // 5) if args.save_dir else None
    result = cem(model, x, options, gradient=gradient, optimizer=optimizer,
                 autoencoder=None if args.gamma == 0 else autoencoder, save_freq=save_freq,
                 segments=segments)
    seconds = (time.perf_counter() - start) / len(indices)
    if mode == "PP":
        facts = [f"{c.status}, {len(c.pixels)} pixels" + (f" ({c.removed} dropped by the proof)" if c.removed else "")
                 for c in certify_pp(net, result, shrink=not args.no_shrink)] if args.certify else None
    else:
        facts = [("flipped (onnxruntime: class %d)" % c.runtime_class if c.flipped else "NOT flipped")
                 + (f", proven on eps {c.proven_eps:.2g}" if c.proven_eps > 0 else "")
                 for c in certify_pn(net, result, net.source)] if args.certify else None
    ae_error = None
    if autoencoder is not None:
        with torch.no_grad():
            ae_error = reconstruction_error(autoencoder, result.explanation)
    print(f"network {net.source}, {mode}, kappa {args.kappa}, beta {args.beta}, gamma {args.gamma}"
          f"{f' (autoencoder {autoencoder.source})' if autoencoder is not None else ''}, {args.iterations} "
          f"iterations x {args.c_steps} c-steps, optimizer {args.optimizer}, gradient {args.gradient}")
    rows = []
    for k, idx in enumerate(indices):
        found = bool(result.found[k])
        line = (f"image {idx}: class {int(result.target[k])} -> {int(result.predicted[k])}, "
                f"{'found' if found else 'not found'}, distance {float(result.distance[k]):.4g}, c {float(result.c[k]):.3g}")
        if ae_error is not None:
            line += f", AE error {float(ae_error[k]):.3g}"
        if facts is not None:
            line += f", {facts[k]}"
        print(line)
        delta = result.delta[k].reshape(-1)
        rows.append({"image": idx, "target": int(result.target[k]), "predicted": int(result.predicted[k]),
                     "found": found, "distance": float(result.distance[k]), "c": float(result.c[k]),
                     "l0": int((delta != 0).sum()), "l1": float(delta.abs().sum()), "l2": float(delta.norm()),
                     "ae_error": None if ae_error is None else float(ae_error[k]),
                     "certificate": None if facts is None else facts[k], "seconds": seconds})
        if args.save_dir:
            from profit.viz import plot_cem, plot_savepoints, save

            status = facts[k].split(",")[0] if facts is not None else ""
            fig, _ = plot_cem(result.x0[k], result.explanation[k], mode,
                              (int(result.target[k]), int(result.predicted[k])), status)
            path = save(fig, Path(args.save_dir) / f"cem-{mode.lower()}-{idx}.png")
            assert result.savepoints is not None
            frames = {it: v[k] for it, v in result.savepoints.items()}
            classes, scores = class_and_score(model, torch.stack(list(frames.values())),
                                              result.target[k:k + 1].expand(len(frames)))
            fig, _ = plot_savepoints(frames, dict(zip(frames, classes.tolist())), dict(zip(frames, scores.tolist())),
                                     result.x0[k], mode)
            strip = save(fig, Path(args.save_dir) / f"cem-{mode.lower()}-{idx}-savepoints.png")
            print(f"  wrote {path}, {strip}")
    if args.json_out:
        write_text(args.json_out, json.dumps({"network": str(net.source), "mode": mode, "options": vars(options),
                                              "images": rows}, indent=1))
    return 0


def _segments(spec: str, shape: tuple[int, ...]) -> torch.Tensor:
    """`grid:K` (k x k patches) or a .npy integer label map of the image's (H, W) or full shape."""
    from profit.cem import grid_segments

    if spec.startswith("grid:"):
        try:
            k = int(spec[5:])
        except ValueError:
            raise ProfitError(f"--segments grid:K needs an integer K, got '{spec}'") from None
        return grid_segments(shape[-2:], k)
    path = Path(spec)
    if not path.is_file():
        raise ProfitError(f"--segments: {spec} is neither grid:K nor a .npy file")
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ProfitError(f"--segments: cannot read {spec} as .npy ({err})") from None
    if not np.issubdtype(labels.dtype, np.integer):
        raise ProfitError(f"--segments: {spec} holds {labels.dtype}, expected integer labels")
    return torch.from_numpy(labels.astype(np.int64))


COMMAND = command(
    "cem", "contrastive explanations (CEM): pertinent positives / negatives, certified where proven",
    arg("network", nargs="?", default="mnist_mlp", metavar="NET", help="ONNX file or shipped network name"),
    arg("-d", "--instance", default="0", metavar="IDX", help="image index, or a comma-separated list"),
    arg("--images", metavar="SRC", default=None, help=IMAGES_HELP),
    arg("--mode", default="pn", choices=("pn", "pp"), help="pertinent negative (pn, default) or positive (pp)"),
    arg("--kappa", type=float, default=0.0, help="confidence margin kappa (default 0)"),
    arg("--beta", type=float, default=0.1, help="l1 weight beta (default 0.1)"),
    arg("--gamma", type=float, default=0.0, help="weight of the autoencoder term gamma ||x - AE(x)||^2 (default 0; "
        "> 0 needs --ae)"),
    arg("--ae", metavar="NET", default=None, help="autoencoder (shipped name, e.g. mnist_ae, or .onnx file) of the "
        "gamma term; also reports each explanation's AE error"),
    arg("--optimizer", default="fista", choices=OPTIMIZERS,
        help="FISTA (default), Adam with projection, or adaptive exponentiated gradient (MAXi)"),
    arg("--eta", type=float, default=1.0, help="AdaExpGrad's step scale eta (default 1)"),
    arg("--segments", metavar="SEG", default=None, help="superpixel CEM: grid:K (k x k patches) or a .npy integer "
        "label map; one weight per segment"),
    arg("--c-init", type=float, default=10.0, help="initial c of the binary search (default 10)"),
    arg("--c-steps", type=int, default=5, help="binary-search steps over c (default 5)"),
    arg("--iterations", type=int, default=300, help="optimiser iterations per c (default 300)"),
    arg("--lr", type=float, default=1e-2, help="initial learning rate (default 0.01)"),
    arg("--gradient", default="autograd", choices=("autograd", "random", "fd"),
        help="autograd through the IR (default), or black-box estimates on onnxruntime"),
    arg("--seed", type=int, default=0, help="seed of the random-direction estimator"),
    arg("--certify", action="store_true", help="prove the PP's box / the PN's flip and radius with the domains"),
    arg("--no-shrink", action="store_true", help="with --certify: do not shrink a certified PP"),
    arg("--save-dir", metavar="DIR", help="write cem-<mode>-<idx>.png and the optimisation's savepoints strip "
        "cem-<mode>-<idx>-savepoints.png here"),
    arg("--json", dest="json_out", metavar="FILE", help="write per-image metrics (found, classes, l0/l1/l2 of the "
        "change, AE error with --ae, certificate, seconds) as JSON"),
    handler=handle,
)
