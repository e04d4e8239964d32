"""Proof-feature table (issue 6) and the training-method comparison figure.

    python -m benchmarks.features [--count 500] [--cifar-count 100] [--domains crown deepz]
                                  [--only NAME ...] [--csv FILE] [--figure PNG]

For each network (ProFIt's shared networks, their state-dict networks exported by
`networks.profit_zoo`, and the three `mnist_conv_*` nets of `profit.train`), each eps (MNIST
0.02 and 0.1; CIFAR-10 0.2/255 and 2/255) and each domain: the first `--count` MNIST test images
(../shared/data/mnist IDX) or the `--cifar-count` CIFAR images of ../shared, proven count,
mean/median kept features after the suffix search and after the greedy step, % of proven
images with <= 5 kept features, and seconds per image (extraction share + pruning). Rows are
printed as a markdown table as they finish (and appended to `--csv`). `--figure` writes the
comparison figure: rows = images, columns = image | one network per training method (the
aggregate gradient map of the kept features, CROWN, eps 0.02). Skips networks whose files are
missing. Images that a 10-step PGD attack breaks (or that are misclassified) cannot be proven
and are counted as not proven without a bound computation. Timings depend on the machine's load; the README of specs/suites notes the ones we saw.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from networks import MODELS_DIR, Network, load_onnx
from networks.datasets import shared_dir
from profit.features import FeatureRunOptions, ProofFeatures, PruneOptions, run_features
from profit.data import fit_to_network, load_images
from profit.viz import plot_comparison, save

MNIST_EPS = (0.02, 0.1)
CIFAR_EPS = (0.2 / 255, 2 / 255)
ZOO = MODELS_DIR / "profit"
SHORT = {  # column titles of the comparison figure
    "mnist_0.1": "ProFIt mnist_0.1", "mnist_standard_modified": "ProFIt standard_mod",
    "mnist_cnn_2layer_width_1_best_modified": "ProFIt 2layer_mod", "mnist_cnn_2layer_width_1_best": "ProFIt 2layer",
    "mnist_conv_standard": "ours", "mnist_conv_pgd": "ours", "mnist_conv_ibp": "ours",
}


@dataclass(frozen=True)
class Net:
    """One benchmark network: a short name, where it comes from, its dataset and training method."""

    name: str
    path: Path
    dataset: str  # "mnist" | "cifar"
    training: str


def networks(root: Path | None) -> list[Net]:
    """Every benchmark network whose file exists."""
    shared = (root / "networks" / "profit") if root is not None else Path("/nonexistent")
    nets = [
        Net("mnist_0.1 (ProFIt)", shared / "mnist_0.1.onnx", "mnist", "COLT"),
        Net("mnist_standard_modified (ProFIt)", ZOO / "mnist_standard_modified.onnx", "mnist", "Standard"),
        Net("mnist_cnn_2layer_width_1_best_modified (ProFIt)", ZOO / "mnist_cnn_2layer_width_1_best_modified.onnx",
            "mnist", "CROWN-IBP"),
        Net("mnist_cnn_2layer_width_1_best (ProFIt)", ZOO / "mnist_cnn_2layer_width_1_best.onnx", "mnist", "CROWN-IBP"),
        Net("mnist_conv_standard (ours)", MODELS_DIR / "mnist_conv_standard.onnx", "mnist", "Standard"),
        Net("mnist_conv_pgd (ours)", MODELS_DIR / "mnist_conv_pgd.onnx", "mnist", "PGD"),
        Net("mnist_conv_ibp (ours)", MODELS_DIR / "mnist_conv_ibp.onnx", "mnist", "IBP"),
        Net("convSmallRELU__Point (ProFIt)", shared / "convSmallRELU__Point.onnx", "cifar", "Standard"),
        Net("convSmall_pgd_cifar (ProFIt)", shared / "convSmall_pgd_cifar.onnx", "cifar", "PGD"),
        Net("cifar_cnn_2layer_width_2_best (ProFIt)", ZOO / "cifar_cnn_2layer_width_2_best.onnx", "cifar", "CROWN-IBP"),
    ]
    return [n for n in nets if n.path.is_file()]


def images(root: Path, dataset: str, count: int):
    """The first `count` MNIST test images (IDX) or CIFAR-10 images (ERAN CSV) of shared/."""
    if dataset == "mnist":
        return load_images(root / "data" / "mnist" / "t10k-images-idx3-ubyte.gz", count=count, channels=1)
    return load_images(root / "data" / "cifar10" / "cifar10_test_first100.csv", count=count, channels=3)


@dataclass(frozen=True)
class TableRow:
    net: str
    eps: str
    domain: str
    images: int
    proven: int
    mean_suffix: float
    median_suffix: float
    mean_greedy: float
    median_greedy: float
    le5: float
    seconds_per_image: float


def _eps_name(eps: float, dataset: str) -> str:
    return f"{eps:g}" if dataset == "mnist" else f"{eps * 255:g}/255"


def attackable(model: Network, x: torch.Tensor, labels: torch.Tensor, eps: float, steps: int = 10) -> torch.Tensor:
    """(N,) bool: misclassified, or a seeded L_inf PGD attack (random start, step eps/4) found a
    misclassified point of clip(x +- eps, 0, 1): such properties cannot be proven, so the
    benchmark does not spend a bound computation on them (they count as not proven)."""
    gen = torch.Generator().manual_seed(0)
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    broken = model.logits(x).argmax(1) != labels
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            logits = model.logits((x + delta).clamp(0, 1))
            loss = torch.nn.functional.cross_entropy(logits, labels)
            (grad,) = torch.autograd.grad(loss, delta)
        broken |= logits.argmax(1).detach() != labels
        delta = (delta.detach() + eps / 4 * grad.sign()).clamp(-eps, eps)
    with torch.no_grad():
        broken |= model.logits((x + delta).clamp(0, 1)).argmax(1) != labels
    return broken


def benchmark(net: Net, eps: float, domain: str, root: Path, count: int) -> TableRow:
    """One table row: extract and prune every image not broken by `attackable` (labels = the
    true labels); seconds per image include the attack."""
    data = images(root, net.dataset, count)
    model = load_onnx(net.path)
    batch = 16 if domain != "deepz" else (8 if net.dataset == "mnist" else 4)
    start = time.perf_counter()
    x = fit_to_network(data.images, model, data.source)
    keep = ~attackable(model, x, data.labels, eps)
    s = None
    if bool(keep.any()):
        run = run_features(model, x[keep], data.labels[keep], FeatureRunOptions(eps=eps, domain=domain, batch_size=batch))
        s = run.summary
    seconds = (time.perf_counter() - start) / len(data)
    if s is None:
        nan = float("nan")
        return TableRow(net.name, _eps_name(eps, net.dataset), domain, len(data), 0, nan, nan, nan, nan, nan, seconds)
    return TableRow(net.name, _eps_name(eps, net.dataset), domain, len(data), s.proven, s.mean_suffix,
                    s.median_suffix, s.mean_greedy, s.median_greedy, s.le5, seconds)


def _markdown(row: TableRow) -> str:
    def f(v: float) -> str:
        return "-" if v != v else f"{v:.2f}"
    return (f"| {row.net} | {row.eps} | {row.domain} | {row.proven}/{row.images} | {f(row.mean_suffix)} / "
            f"{f(row.median_suffix)} | {f(row.mean_greedy)} / {f(row.median_greedy)} | {f(row.le5)} | "
            f"{row.seconds_per_image:.2f} |")


HEADER = ("| network | eps | domain | proven | kept, suffix search (mean / median) | kept, greedy (mean / median) "
          "| % <= 5 (greedy) | s / image |\n|---|---|---|---|---|---|---|---|")


def comparison_figure(nets: list[Net], root: Path, path: Path, count: int = 4, eps: float = 0.02) -> Path:
    """Rows = the first `count` MNIST test images, columns = image | one MNIST network per
    training method: the aggregate gradient map of its kept proof features (CROWN, eps)."""
    data = images(root, "mnist", count)
    columns: dict[str, list] = {}
    for net in (n for n in nets if n.dataset == "mnist"):
        model = load_onnx(net.path)
        pf = ProofFeatures.compute(model, fit_to_network(data.images, model), data.labels, eps, "crown")
        maps = {m.index: (m.aggregate if len(m.features) else "no feature kept:\nthe bias proves it")
                for m in pf.visualize(pf.prune(PruneOptions()))}
        columns[f"{net.training}\n{SHORT.get(net.name.split(' (')[0], net.name)}"] = [maps.get(i) for i in range(count)]
    fig, _ = plot_comparison(data.images, columns, titles=[f"test {i}" for i in data.indices])
    return save(fig, path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.features", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="MNIST images (default %(default)s)")
    parser.add_argument("--cifar-count", type=int, default=100, help="CIFAR images (default %(default)s)")
    parser.add_argument("--domains", nargs="+", default=["crown", "deepz"])
    parser.add_argument("--only", nargs="+", default=None, help="substrings of network names to run")
    parser.add_argument("--exclude", nargs="+", default=(), help="substrings of network names to skip")
    parser.add_argument("--csv", type=Path, default=None, help="append every row to this CSV")
    parser.add_argument("--figure", type=Path, default=None, help="write the comparison figure here and stop")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    root = shared_dir()
    if root is None:
        print("../shared not found: nothing to benchmark", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    nets = networks(root)
    if args.only:
        nets = [n for n in nets if any(s in n.name for s in args.only)]
    nets = [n for n in nets if not any(s in n.name for s in args.exclude)]
    if args.figure:
        print(comparison_figure(nets, root, args.figure))
        return 0
    print(HEADER, flush=True)
    for net in nets:
        for eps in (MNIST_EPS if net.dataset == "mnist" else CIFAR_EPS):
            for domain in args.domains:
                row = benchmark(net, eps, domain, root, args.count if net.dataset == "mnist" else args.cifar_count)
                print(_markdown(row), flush=True)
                if args.csv:
                    new = not args.csv.exists()
                    with args.csv.open("a", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=list(asdict(row)))
                        if new:
                            writer.writeheader()
                        writer.writerow(asdict(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
