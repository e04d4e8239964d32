"""Proof features over many images: batches of `ProofFeatures`, one CSV row per image, a summary.

    run = run_features(net, images, labels, FeatureRunOptions(eps=0.02, domain="crown"))
    run.rows, run.summary, run.topk, run.maps      # write_csv(path, run.rows)
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from domains import DOMAINS
from networks.ir import Network
from profit.features.proof import FeatureError, FeatureMaps, ProofFeatures, PruneOptions, Pruned, TopK, resolve_layer


@dataclass(frozen=True)
class Row:
    """One CSV row of a feature run (see `rows` and the CLI)."""

    idx: int
    label: int
    proven: bool
    width: int
    nonzero: int
    kept_suffix: int
    kept_greedy: int
    kept_indices: str
    layer: str
    calls: int
    checks: int
    seconds: float
    margin: float
    kept_margin: float


CSV_COLUMNS = tuple(f.name for f in dataclasses.fields(Row))


def rows(pruned: Sequence[Pruned], labels: Sequence[int], indices: Sequence[int], layer: str) -> list[Row]:
    """CSV rows, one per image: labels and indices (the images' positions in their source) are
    looked up by `Pruned.index`."""
    return [Row(int(indices[p.index]), int(labels[p.index]), p.proven, p.width, p.nonzero,
                len(p.kept_suffix) if p.proven else 0, len(p.kept_greedy) if p.proven else 0,
                " ".join(str(int(k)) for k in p.kept_greedy), layer, p.calls, p.checks, round(p.seconds, 4),
                p.margin, p.kept_margin) for p in pruned]


@dataclass(frozen=True)
class Summary:
    """Kept-set statistics over the proven images."""

    images: int
    proven: int
    mean_suffix: float
    median_suffix: float
    mean_greedy: float
    median_greedy: float
    max_greedy: int
    le5: float  # % of proven images with <= 5 kept features (greedy)
    le10: float
    seconds_per_image: float


def summarize(pruned: Sequence[Pruned]) -> Summary:
    """Mean/median/max kept features and % <= 5 / <= 10 over the proven images."""
    done = [p for p in pruned if p.proven]
    suffix = torch.tensor([len(p.kept_suffix) for p in done], dtype=torch.float)
    greedy = torch.tensor([len(p.kept_greedy) for p in done], dtype=torch.float)
    seconds = sum(p.seconds for p in pruned) / max(1, len(pruned))
    if not done:
        return Summary(len(pruned), 0, *[float("nan")] * 4, 0, float("nan"), float("nan"), seconds)
    return Summary(len(pruned), len(done), float(suffix.mean()), float(suffix.median()), float(greedy.mean()),
                   float(greedy.median()), int(greedy.max()), float(100 * (greedy <= 5).float().mean()),
                   float(100 * (greedy <= 10).float().mean()), seconds)


def batches(net: Network, x: Tensor, labels: Tensor, eps: float, domain: str = "crown", layer: int | str = -1,
            batch_size: int = 16, first: int = 0) -> Iterator[ProofFeatures]:
    """ProofFeatures of x in batches of `batch_size` images (`offset` = first + the batch's first index
    in x; it seeds the random priority, so x[j] of a call with `first` = i is seeded as x[i + j] of a
    call on a larger x)."""
    for start in range(0, len(x), batch_size):
        pf = ProofFeatures.compute(net, x[start:start + batch_size], labels[start:start + batch_size], eps,
                                   domain, layer)
        pf.offset = first + start
        yield pf


def write_csv(path: str | Path, table: Sequence[Row]) -> Path:
    """Write the rows as CSV (header CSV_COLUMNS), overwriting `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(dataclasses.astuple(r) for r in table)
    return path


@dataclass(frozen=True)
class FeatureRunOptions:
    """A feature run over many images: the property (eps), domain, layer, pruning, top-k up to
    `topk` (0: skip), gradient maps of the kept features (`visualize`), images per bound call."""

    eps: float = 0.02
    domain: str = "crown"
    layer: int | str = -1
    prune: PruneOptions = PruneOptions()
    topk: int = 0
    visualize: bool = False
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise FeatureError(f"unknown domain '{self.domain}' (choose from {', '.join(DOMAINS)})")
        if not 0 <= self.topk <= 100:
            raise FeatureError(f"topk must be in 0..100, got {self.topk}")
        if self.eps < 0 or self.batch_size < 1:
            raise FeatureError("eps must be >= 0 and batch_size >= 1")


@dataclass(frozen=True)
class FeatureRun:
    """What `run_features` found: one Pruned and Row per image (Pruned.index = position in the
    given images), the summary, the top-k curves (or None) and the gradient maps (or [])."""

    layer: str
    pruned: list[Pruned]
    rows: list[Row]
    summary: Summary
    topk: TopK | None
    maps: list[FeatureMaps] = field(default_factory=list)


def run_features(net: Network, images: Tensor, labels: Tensor | None, options: FeatureRunOptions = FeatureRunOptions(),
                 indices: Sequence[int] | None = None, progress: Callable[[int], None] | None = None,
                 first: int = 0) -> FeatureRun:
    """Prove, prune (and optionally evaluate top-k and visualise) every image in batches.

    labels None: each image's own prediction is the label. indices: the images' positions in
    their source (for the CSV; default 0..N-1). progress(n) is called after each batch. first:
    the position of images[0] in a larger run, for the random priority's seeds (`batches`)."""
    x = net.prepare(torch.as_tensor(images, dtype=torch.float32))
    labels = net.logits(x).argmax(1) if labels is None else torch.as_tensor(labels, dtype=torch.long)
    indices = list(range(len(x))) if indices is None else list(indices)
    pruned: list[Pruned] = []
    maps: list[FeatureMaps] = []
    curves: list[TopK] = []
    layer = resolve_layer(net, options.layer)
    for pf in batches(net, x, labels, options.eps, options.domain, options.layer, options.batch_size, first):
        part = pf.prune(options.prune)
        if options.topk:
            curves.append(pf.topk(ks=range(1, options.topk + 1), seed=options.prune.seed))
        if options.visualize:
            maps += [dataclasses.replace(m, index=m.index + pf.offset - first) for m in pf.visualize(part)]
        pruned += [dataclasses.replace(p, index=p.index + pf.offset - first) for p in part]
        if progress is not None:
            progress(len(part))
    topk = None
    if curves:
        topk = TopK(curves[0].ks, curves[0].priorities, torch.cat([c.proven for c in curves], -1),
                    torch.cat([c.rel_change for c in curves], -1))
    return FeatureRun(layer, pruned, rows(pruned, labels.tolist(), indices, layer), summarize(pruned), topk, maps)
