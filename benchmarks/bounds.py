"""Bounds benchmark: every domain on every benchmark network over L-inf balls.

Prints one markdown table, one row per network x domain x eps:

    python benchmarks/bounds.py                      # everything (slow: alpha-CROWN on conv nets)
    python benchmarks/bounds.py --quick              # smoke test: 5 images, one eps per dataset
    python benchmarks/bounds.py --nets mnist_mlp,mnist-net_256x2 --domains crown,alpha-crown \
        --eps 0.01,0.03 --count 50 --threads 1 --out bounds.csv

Images: the first `--count` (default 100) *correctly classified* of the first 100 test
images of each dataset, so a row may have fewer than `--count`:
- MNIST: test images 0-99 as shipped in networks/models/mnist_samples.npz (identical to
  ../shared/data/mnist/mnist_test_first100.csv), pixels scaled to [0, 1];
- CIFAR-10: ../shared/data/cifar10/cifar10_test_first100.csv, HWC -> CHW, scaled to [0, 1]
  (convSmallRELU__Point normalises inside the network).
Region: linf_ball(x, eps) clipped to [0, 1]; spec: robustness(label, 10).

Columns:
- proven: images whose robustness the domain proves;
- mean spec lb: mean over images of spec_margin (the lower bound of min_j y_label - y_j);
- mean width: mean over images and outputs of upper - lower of the network output
  (alpha-CROWN optimises the spec rows only, so its output bounds are CROWN's);
- s/img: wall time of the one batched `Domain(net).bound(region, spec)` call / n;
- peak MB: growth of the peak resident set size (getrusage ru_maxrss) during that call.
  Each row runs in a fresh subprocess (tracemalloc does not see torch's CPU allocations),
  so the number is the extra memory the bound computation needed, measured after
  the network and images were loaded; approximate (allocator caching, page granularity).
Before the timed call each worker runs the same domain once on a single image
(warm-up: lazy library initialisation is not counted).

Shared networks (mnistfc, ProFIt's) are skipped with a note if ../shared is absent
(or $PROFIT_SHARED does not point to it). This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from domains import DOMAINS  # noqa: E402
from networks import MODELS_DIR, Network, load_onnx  # noqa: E402
from networks.datasets import load_samples, shared_dir  # noqa: E402
from specs import linf_ball, robustness  # noqa: E402

MNIST_EPS = ("0.005", "0.01", "0.02", "0.03", "0.05")
CIFAR_EPS = ("1/255", "2/255", "8/255")
QUICK_EPS = {"mnist": ("0.02",), "cifar": ("2/255",)}
QUICK_COUNT = 5


@dataclass(frozen=True)
class BenchNet:
    """A benchmark network: where its ONNX file lives and which images it reads."""

    name: str
    relpath: str  # under networks/models (shipped) or ../shared
    shared: bool  # True: relpath is relative to the shared directory
    dataset: str  # "mnist" or "cifar"

    def path(self) -> Path | None:
        """The ONNX file, or None if it lives in ../shared and that is absent."""
        if not self.shared:
            return MODELS_DIR / self.relpath
        root = shared_dir()
        return None if root is None else root / self.relpath

    @property
    def default_eps(self) -> tuple[str, ...]:
        return CIFAR_EPS if self.dataset == "cifar" else MNIST_EPS


_MNISTFC = "benchmarks/vnncomp2021/mnistfc"
NETS: dict[str, BenchNet] = {n.name: n for n in (
    BenchNet("mnist_mlp", "mnist_mlp.onnx", False, "mnist"),
    BenchNet("mnist_conv", "mnist_conv.onnx", False, "mnist"),
    BenchNet("mnist-net_256x2", f"{_MNISTFC}/mnist-net_256x2.onnx", True, "mnist"),
    BenchNet("mnist-net_256x4", f"{_MNISTFC}/mnist-net_256x4.onnx", True, "mnist"),
    BenchNet("mnist-net_256x6", f"{_MNISTFC}/mnist-net_256x6.onnx", True, "mnist"),
    BenchNet("mnist_0.1", "networks/profit/mnist_0.1.onnx", True, "mnist"),
    BenchNet("convSmallRELU__Point", "networks/profit/convSmallRELU__Point.onnx", True, "cifar"),
)}


def parse_eps(text: str) -> float:
    """'0.02' or '2/255' -> float."""
    return float(Fraction(text.strip()))


def load_images(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 100 test images of `dataset` in [0, 1], (100, C, H, W) float32, and labels (100,)."""
    if dataset == "mnist":
        images, labels = load_samples()
        return torch.from_numpy(images), torch.from_numpy(labels)
    root = shared_dir()
    if root is None:
        raise FileNotFoundError("CIFAR-10 images need ../shared/data/cifar10 (shared directory absent)")
    raw = np.loadtxt(root / "data" / "cifar10" / "cifar10_test_first100.csv", delimiter=",", dtype=np.float32)
    images = raw[:, 1:].reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2) / 255.0
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(raw[:, 0].astype(np.int64))


def correctly_classified(net: Network, images: torch.Tensor, labels: torch.Tensor,
                         count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images the network classifies correctly, as net inputs (n, *input_shape)."""
    x = net.prepare(images.reshape(images.shape[0], -1))
    with torch.no_grad():
        ok = net.logits(x).argmax(1) == labels
    keep = ok.nonzero().flatten()[:count]
    return x[keep], labels[keep]


def bench_inputs(bench: BenchNet, count: int) -> tuple[Network, torch.Tensor, torch.Tensor]:
    """Loaded network and its first `count` correctly classified images with labels."""
    path = bench.path()
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{bench.name}: {path or bench.relpath} not found")
    net = load_onnx(path)
    images, labels = load_images(bench.dataset)
    x, y = correctly_classified(net, images, labels, count)
    return net, x, y


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_row(net_name: str, domain: str, eps_text: str, count: int, threads: int | None) -> dict:
    """One benchmark row, measured in this process (call it in a fresh subprocess)."""
    if threads:
        torch.set_num_threads(threads)
    net, x, y = bench_inputs(NETS[net_name], count)
    eps = parse_eps(eps_text)
    region, spec = linf_ball(x, eps, 0.0, 1.0), robustness(y, 10)
    cls = DOMAINS[domain]
    base_rss = _peak_rss_mb()
    cls(net).bound(linf_ball(x[:1], eps, 0.0, 1.0), robustness(y[:1], 10))  # warm-up
    start = time.perf_counter()
    result = cls(net).bound(region, spec)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb() - base_rss
    n = x.shape[0]
    width = (result.upper - result.lower).reshape(n, -1)
    return {
        "net": net_name, "domain": domain, "eps": eps_text, "n": n,
        "proven": int(result.proven.sum()),
        "mean_spec_lb": float(result.spec_margin.double().mean()),
        "mean_width": float(width.double().mean()),
        "s_per_img": seconds / max(n, 1), "peak_mb": peak, "threads": torch.get_num_threads(), "error": "",
    }


def run_row_subprocess(net_name: str, domain: str, eps_text: str, count: int, threads: int | None,
                       timeout: float | None) -> dict:
    """run_row in a fresh Python process (clean peak-RSS accounting); errors become a row note."""
    job = json.dumps({"net": net_name, "domain": domain, "eps": eps_text, "count": count, "threads": threads})
    row = {"net": net_name, "domain": domain, "eps": eps_text}
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", job],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timeout after {timeout:g} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {**row, "error": tail[:200]}
    return json.loads(lines[-1])


COLUMNS = ("net", "domain", "eps", "n", "proven", "mean spec lb", "mean width", "s/img", "peak MB")


def format_row(r: dict) -> str:
    if r.get("error"):
        cells = [r["net"], r["domain"], r["eps"], "", "", "", "", "", f"error: {r['error']}"]
    else:
        cells = [r["net"], r["domain"], r["eps"], str(r["n"]), f"{r['proven']}/{r['n']}",
                 f"{r['mean_spec_lb']:.4g}", f"{r['mean_width']:.4g}", f"{r['s_per_img']:.4f}",
                 f"{r['peak_mb']:.0f}"]
    return "| " + " | ".join(cells) + " |"


def _split(parser: argparse.ArgumentParser, text: str | None, choices, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if choices is not None and t not in choices]
    if bad:
        parser.error(f"unknown {what} {', '.join(bad)} (choose from {', '.join(choices)})")
    return items


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", help=f"comma-separated, default all: {','.join(NETS)}")
    parser.add_argument("--domains", help=f"comma-separated, default all: {','.join(DOMAINS)}")
    parser.add_argument("--eps", help="comma-separated eps for every network (e.g. 0.01,2/255); default "
                        f"MNIST {','.join(MNIST_EPS)}, CIFAR {','.join(CIFAR_EPS)}")
    parser.add_argument("--count", type=int, default=None,
                        help="images per row: the first COUNT correctly classified (default 100, --quick 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads in each worker (default: torch's default)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_COUNT} images, one eps per dataset "
                        f"({QUICK_EPS['mnist'][0]} / {QUICK_EPS['cifar'][0]})")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per row (default 3600)")
    parser.add_argument("--out", type=Path, help="also write the rows to this CSV file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(run_row(job["net"], job["domain"], job["eps"], job["count"], job["threads"])))
        return 0

    nets = _split(parser, args.nets, list(NETS), "network") or list(NETS)
    domains = _split(parser, args.domains, list(DOMAINS), "domain") or list(DOMAINS)
    eps_override = _split(parser, args.eps, None, "eps")
    for e in eps_override or []:
        try:
            parse_eps(e)
        except (ValueError, ZeroDivisionError):
            parser.error(f"bad eps '{e}' (use a number or a fraction like 2/255)")
    count = args.count or (QUICK_COUNT if args.quick else 100)

    notes: list[str] = []
    if shared_dir() is None:
        skipped = [n for n in nets if NETS[n].shared]
        if skipped:
            notes.append(f"skipped {', '.join(skipped)}: ../shared not found (set PROFIT_SHARED)")
        nets = [n for n in nets if not NETS[n].shared]

    threads = args.threads or torch.get_num_threads()
    print(f"# bounds benchmark: commit {_git_commit()}, torch {torch.__version__}, {threads} thread(s), "
          f"{os.cpu_count()} cpu(s), {platform.processor() or platform.machine()}")
    print(f"# images: first {count} correctly classified of the first 100 test images "
          "(MNIST: mnist_samples.npz = mnist_test_first100.csv; CIFAR-10: cifar10_test_first100.csv); "
          "eps-balls clipped to [0, 1]; spec: robustness")
    print("# peak MB: growth of ru_maxrss during the bound call, in a fresh subprocess per row")
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|", flush=True)
    rows: list[dict] = []
    for net_name in nets:
        bench = NETS[net_name]
        eps_list = eps_override or (list(QUICK_EPS[bench.dataset]) if args.quick else list(bench.default_eps))
        for domain in domains:
            for eps_text in eps_list:
                row = run_row_subprocess(net_name, domain, eps_text, count, args.threads, args.timeout)
                rows.append(row)
                print(format_row(row), flush=True)
    for note in notes:
        print(f"\nnote: {note}")
    if args.out:
        fields = ["net", "domain", "eps", "n", "proven", "mean_spec_lb", "mean_width", "s_per_img", "peak_mb",
                  "threads", "error"]
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: r.get(k, "") for k in fields})
        print(f"\nwrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
