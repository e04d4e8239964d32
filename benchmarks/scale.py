"""Throughput of batch runs with 1 and 2 local workers, and a scheduling simulation for 10 / 100 nodes.

    .venv/bin/python benchmarks/scale.py                        # 200 eps-balls + the acasxu suite, ~6 minutes
    .venv/bin/python benchmarks/scale.py --suites eps --count 50 # a quick look

Suites: `eps`: `profit verify` items (one eps-ball of the mnist_mlp per item, eps 0.02,
domain auto) on the first --count MNIST test images (../shared IDX, else the shipped 100
samples); `acasxu`: the 186 VNN-COMP 2021 acasxu instances at their own timeouts
(`profit vnnlib --batch`). Each suite runs through `profit.runs.Batch` into a throw-away
store with --workers 1 and 2 (one torch thread each), after a warm-up; printed: items, wall
seconds, items/s, speed-up. The eps suite also gives today's batched in-process
`verify_images` (no store, no pool) for comparison.

Simulation: greedy list scheduling (each item, in the suite's order, to the node that frees
first) of item times drawn from the measured 1-worker distribution, for 10 and 100 nodes
with one worker each, plus a per-item dispatch overhead (the measured pool overhead) and a
fixed cluster start-up (Ray's, ~7 s). Printed per suite and node count: makespan, speed-up
over one node, and the lower bound max(total / nodes, longest item), which shows when a few
long items (hard branch-and-bound instances) cap the speed-up. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from networks.datasets import shared_dir  # noqa: E402
from profit.data import load_images, load_network  # noqa: E402
from profit.runs import Batch, RunOptions, VerifyJob, VnnlibJob, image_tasks, read_instances  # noqa: E402
from profit.verify import VerifyOptions, verify_images  # noqa: E402

RAY_STARTUP = 7.0  # seconds, measured on this machine (ray.init of a local Ray)


def _images(count: int):
    shared = shared_dir()
    idx = shared / "data" / "mnist" / "t10k-images-idx3-ubyte.gz" if shared else None
    return load_images(idx if idx is not None and idx.is_file() else None, count=count)


def _measure(job, tasks, workers: int) -> tuple[float, list[float]]:
    """(wall seconds, per-item seconds as the workers saw them) of one batch into a fresh store."""
    with tempfile.TemporaryDirectory() as tmp:
        batch = Batch(job, tasks, RunOptions(store=Path(tmp) / "s.sqlite", workers=workers, progress=False))
        start = time.perf_counter()
        done = batch.execute()
        wall = time.perf_counter() - start
    return wall, [float(r["wall_seconds"]) for r in done.rows]


def simulate(times: list[float], nodes: int, overhead: float, startup: float, seed: int = 0,
             n_items: int | None = None) -> tuple[float, float]:
    """(makespan, lower bound) of list scheduling n_items item times (bootstrap-drawn from `times`)."""
    rng = random.Random(seed)
    items = list(times) if n_items is None else [rng.choice(times) for _ in range(n_items)]
    free = [0.0] * nodes
    for t in items:
        i = min(range(nodes), key=free.__getitem__)
        free[i] += t + overhead
    bound = max(sum(items) / nodes, max(items))
    return startup + max(free), startup + bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="eps,acasxu", help="comma-separated: eps, acasxu")
    parser.add_argument("--count", type=int, default=200, help="eps-balls (default 200)")
    parser.add_argument("--scale-items", type=int, default=10000,
                        help="items of the simulated eps suite (default 10000; acasxu keeps its 186)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    suites = args.suites.split(",")
    measured: dict[str, list[float]] = {}
    overheads: list[float] = []
    print("| suite | workers | items | wall s | items/s | speed-up |")
    print("|---|---|---|---|---|---|")
    if "eps" in suites:
        net = load_network("mnist_mlp")
        images = _images(args.count)
        options = VerifyOptions(eps=0.02)
        verify_images(net, images.images[:4], images.labels[:4], options, progress=False)  # warm-up
        start = time.perf_counter()
        verify_images(net, images.images, images.labels, options, progress=False)
        batched = time.perf_counter() - start
        print(f"| eps (batched verify_images, in-process) | - | {len(images)} | {batched:.1f} | "
              f"{len(images) / batched:.1f} | - |")
        job, tasks = VerifyJob(net.source, options, images.source), image_tasks(images)
        _measure(job, tasks[:2], 2)  # warm-up: the forkserver starts once per process
        base = None
        for workers in (1, 2):
            wall, times = _measure(job, tasks, workers)
            base = base or wall
            print(f"| eps | {workers} | {len(tasks)} | {wall:.1f} | {len(tasks) / wall:.2f} | {base / wall:.2f} |")
            if workers == 1:
                measured["eps"] = times
                overheads.append(max(0.0, wall / len(tasks) - statistics.mean(times)))
    shared = shared_dir()
    folder = shared / "benchmarks" / "vnncomp2021" / "acasxu" if shared else None
    if "acasxu" in suites and folder is not None and folder.is_dir():
        csv_path = folder / "acasxu_instances.csv"
        job, tasks = VnnlibJob(str(csv_path)), read_instances(csv_path)
        base = None
        for workers in (1, 2):
            wall, times = _measure(job, tasks, workers)
            base = base or wall
            print(f"| acasxu | {workers} | {len(tasks)} | {wall:.1f} | {len(tasks) / wall:.2f} | {base / wall:.2f} |")
            if workers == 1:
                measured["acasxu"] = times
                overheads.append(max(0.0, wall / len(tasks) - statistics.mean(times)))
    elif "acasxu" in suites:
        print("| acasxu | skipped: ../shared/benchmarks/vnncomp2021/acasxu not found | | | | |")
    overhead = statistics.mean(overheads) if overheads else 0.0
    print()
    print(f"simulation: list scheduling, per-item overhead {overhead * 1000:.1f} ms (measured), "
          f"start-up {RAY_STARTUP:.0f} s (Ray)")
    print("| suite | items | item s: median / p99 / max | nodes | makespan s | lower bound s | speed-up vs 1 node |")
    print("|---|---|---|---|---|---|---|")
    for name, times in measured.items():
        n = args.scale_items if name == "eps" else None
        one, _ = simulate(times, 1, overhead, 0.0, n_items=n)
        q = sorted(times)
        spread = f"{statistics.median(q):.3f} / {q[int(0.99 * (len(q) - 1))]:.3f} / {q[-1]:.3f}"
        for nodes in (1, 10, 100):
            span, bound = simulate(times, nodes, overhead, 0.0 if nodes == 1 else RAY_STARTUP, n_items=n)
            print(f"| {name} | {n or len(times)} | {spread} | {nodes} | {span:.1f} | {bound:.1f} | {one / span:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
