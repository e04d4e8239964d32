"""Picklable job descriptions: one per job kind, each an item function payload -> record.

    job = VerifyJob(network="networks/models/mnist_mlp.onnx", options=VerifyOptions(eps=0.02))
    tasks = image_tasks(load_images(count=10))           # one Task per image
    record = job(tasks[0].payload)                       # what a worker computes for one item
    results = job.results(rows)                          # stored rows -> ImageResult, as the CLI prints

A job holds what is shared by its items (the network's path, the options); a task's payload
holds one item (an image with its index and label, a VNN-LIB instance). The item functions
call the library functions the CLI calls for a single run, on one item, so a pooled run
gives the same records as the same items run one by one:

- `VerifyJob`: `profit.verify.verify_images` on one image (record: `ImageResult.record()`
  plus the counterexample);
- `VnnlibJob`: `profit.verify.run_vnnlib` on one instance (record: result, seconds, the
  VNN-COMP result text);
- `FeaturesJob`: `profit.features.run_features` on one image (record: the CSV `Row`, plus
  the image's top-k curves);
- `ExplainJob`: `profit.explain.Explainer(...).enumerate(...)` on one image of a data set
  (record: counts, status and the --json document);
- `CEMJob`: `profit.cem.cem` on one image keyed by the caller's id and carrying its meta
  data (record: classes, distance, sparsity, AE error, the explanation, the meta data).

Each job names its store table (`kind`) and columns, says what its items mean as JSON
(`options`, compared when a run is resumed), fills the record of an item that was killed
at its time limit or crashed (`placeholder`), and turns stored rows back into the
library's result types (`results`). Networks are loaded once per worker process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from networks.ir import Network
from profit.cem import CEMOptions, cem, grid_segments
from profit.cem.components import OPTIMIZERS, check_autoencoder, make_optimizer, reconstruction_error
from profit.data import ImageSet, fit_to_network, load_network
from profit.errors import ProfitError
from profit.explain import ENUMS, MODES, CascadeOracle, ExplainOptions, Explainer, OracleOptions, PixelDomain, Problem
from profit.features import CSV_COLUMNS, FeatureRunOptions, Row, TopK, run_features
from profit.features import Summary as FeatureSummary
from profit.outcomes import Verdict
from profit.runs.pool import Task
from profit.verify import ImageResult, VerifyOptions, VnnlibInstance, run_vnnlib, verify_images
from profit.verify import read_instances as parse_instances

HARD_LIMIT_FACTOR = 1.5  # a worker is killed at factor x its own time budget + grace ...
HARD_LIMIT_GRACE = 10.0  # ... seconds: the library stops itself at its budget, this is the backstop
_NETWORKS: dict[str, Network] = {}  # per process: a worker loads each network once


def cached_network(path: str) -> Network:
    """The network at `path` (or a shipped name), loaded once per process."""
    net = _NETWORKS.get(path)
    if net is None:
        net = _NETWORKS[path] = load_network(path)
    return net


def hard_limit(budget: float | None) -> float | None:
    """The wall-clock limit after which a worker running an item with this time budget is killed."""
    return None if budget is None else HARD_LIMIT_FACTOR * budget + HARD_LIMIT_GRACE


def as_json(value: Any) -> Any:
    """Options as JSON values: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ImageItem:
    """One image of a data set: its index in the source, pixels (*image_shape) in [0, 1] and label."""

    idx: int
    image: np.ndarray
    label: int | None


def image_tasks(images: ImageSet, timeout: float | None = None) -> list[Task]:
    """One task per image, keyed and positioned by the image's index in its source."""
    labels = None if images.labels is None else images.labels.tolist()
    return [Task(str(idx), ImageItem(idx, images.images[i].numpy(), None if labels is None else int(labels[i])),
                 idx, timeout) for i, idx in enumerate(images.indices)]


# ---------------------------------------------------------------------------- verify

@dataclass(frozen=True)
class VerifyJob:
    """Eps-ball robustness of single images (`verify_images` on one image per item)."""

    network: str  # ONNX path
    options: VerifyOptions = VerifyOptions()
    images: str = ""  # the images' source, for the run's options

    kind: ClassVar[str] = "verify"
    columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("idx", "INTEGER"), ("label", "INTEGER"), ("predicted", "INTEGER"), ("verdict", "TEXT"),
        ("margin", "REAL"), ("decided_by", "TEXT"), ("seconds", "REAL"), ("counterexample", "TEXT"))
    json_columns: ClassVar[tuple[str, ...]] = ("counterexample",)

    def __call__(self, item: ImageItem) -> dict[str, Any]:
        net = cached_network(self.network)
        labels = None if item.label is None else [item.label]
        result = verify_images(net, torch.from_numpy(item.image)[None], labels, self.options, progress=False,
                               indices=[item.idx])[0]
        cex = result.counterexample
        return {**result.record(), "counterexample": None if cex is None else cex.tolist()}

    def options_json(self) -> dict[str, Any]:
        return {"network": self.network, "images": self.images, "options": as_json(self.options)}

    def item_budget(self) -> float | None:
        return self.options.timeout

    def placeholder(self, task: Task, status: str, seconds: float) -> dict[str, Any]:
        """A killed item timed out (its verdict is timeout); a crashed one has no verdict."""
        item: ImageItem = task.payload
        if status == "timeout":
            return {"idx": item.idx, "label": item.label, "verdict": Verdict.TIMEOUT.value, "decided_by": "killed",
                    "seconds": seconds}
        return {"idx": item.idx, "label": item.label}

    def results(self, rows: Sequence[dict[str, Any]]) -> list[ImageResult]:
        """ImageResults of stored rows; a crashed item is unknown, decided by "error" (predicted -1)."""
        out = []
        for r in rows:
            cex = r.get("counterexample")
            seconds = r["seconds"] if r["seconds"] is not None else r["wall_seconds"] or 0.0
            out.append(ImageResult(
                int(r["idx"]), -1 if r["label"] is None else int(r["label"]),
                -1 if r["predicted"] is None else int(r["predicted"]),
                Verdict(r["verdict"]) if r["verdict"] else Verdict.UNKNOWN, r["margin"],
                r["decided_by"] or r["status"], float(seconds),
                None if cex is None else torch.tensor(cex, dtype=torch.float32)))
        return out


# ---------------------------------------------------------------------------- vnnlib

def read_instances(path: str | Path, timeout: float | None = None) -> list[Task]:
    """One task per row of a VNN-COMP instances CSV (`profit.verify.read_instances`), keyed
    `onnx,vnnlib` (a repeated pair gets `#2`, ...); `timeout` overrides every row's."""
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for instance in parse_instances(path, timeout):
        key = f"{instance.onnx},{instance.vnnlib}"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}#{seen[key]}"
        tasks.append(Task(key, instance, len(tasks), hard_limit(instance.timeout)))
    return tasks


@dataclass(frozen=True)
class VnnlibJob:
    """VNN-LIB instances (`run_vnnlib` per item); `instances` is the CSV, for the run's options."""

    instances: str = ""
    timeout: float | None = None  # the override of the CSV's timeouts, for the run's options

    kind: ClassVar[str] = "vnnlib"
    columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("onnx", "TEXT"), ("vnnlib", "TEXT"), ("timeout", "REAL"), ("result", "TEXT"), ("seconds", "REAL"),
        ("decided_by", "TEXT"), ("text", "TEXT"))
    json_columns: ClassVar[tuple[str, ...]] = ()

    def __call__(self, item: VnnlibInstance) -> dict[str, Any]:
        outcome = run_vnnlib(item.onnx_path, item.vnnlib_path, timeout=item.timeout)
        return {"onnx": item.onnx, "vnnlib": item.vnnlib, "timeout": item.timeout, "result": outcome.result,
                "seconds": outcome.seconds, "decided_by": outcome.decision.decided_by, "text": outcome.text()}

    def options_json(self) -> dict[str, Any]:
        return {"instances": self.instances, "timeout": self.timeout}

    def item_budget(self) -> float | None:
        return self.timeout

    def placeholder(self, task: Task, status: str, seconds: float) -> dict[str, Any]:
        """A killed instance timed out (result "timeout", as VNN-COMP counts it); a crashed one has no result."""
        item: VnnlibInstance = task.payload
        record: dict[str, Any] = {"onnx": item.onnx, "vnnlib": item.vnnlib, "timeout": item.timeout}
        if status == "timeout":
            record |= {"result": "timeout", "seconds": seconds, "decided_by": "killed", "text": "timeout\n"}
        return record

    def results(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-instance rows: onnx, vnnlib, timeout, result ("error" for a crash), seconds, decided_by, status, error."""
        return [{"onnx": r["onnx"], "vnnlib": r["vnnlib"], "timeout": r["timeout"], "result": r["result"] or "error",
                 "seconds": r["seconds"] if r["seconds"] is not None else r["wall_seconds"],
                 "decided_by": r["decided_by"] or "", "status": r["status"], "error": r["error"] or ""}
                for r in rows]


# ---------------------------------------------------------------------------- features

@dataclass(frozen=True)
class FeaturesJob:
    """Proof features of single images (`run_features` on one image per item)."""

    network: str
    options: FeatureRunOptions = FeatureRunOptions()
    images: str = ""
    first: int = 0  # the index of the run's first image: the random priority is seeded by idx - first,
    # as a run_features call on all the images at once seeds it (by position)

    kind: ClassVar[str] = "features"
    columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("idx", "INTEGER"), ("label", "INTEGER"), ("proven", "INTEGER"), ("width", "INTEGER"),
        ("nonzero", "INTEGER"), ("kept_suffix", "INTEGER"), ("kept_greedy", "INTEGER"), ("kept_indices", "TEXT"),
        ("layer", "TEXT"), ("calls", "INTEGER"), ("checks", "INTEGER"), ("seconds", "REAL"), ("margin", "REAL"),
        ("kept_margin", "REAL"), ("topk", "TEXT"))
    json_columns: ClassVar[tuple[str, ...]] = ("topk",)

    def __post_init__(self) -> None:
        if self.options.visualize:
            raise ProfitError("gradient maps (--save-dir) are not stored by batch runs: run without the batch "
                              "flags to draw them")

    def __call__(self, item: ImageItem) -> dict[str, Any]:
        net = cached_network(self.network)
        x = fit_to_network(torch.from_numpy(item.image)[None], net)
        labels = None if item.label is None else torch.tensor([item.label])
        run = run_features(net, x, labels, self.options, indices=[item.idx], first=item.idx - self.first)
        topk = None
        if run.topk is not None:
            topk = {"ks": list(run.topk.ks), "priorities": list(run.topk.priorities),
                    "proven": run.topk.proven[..., 0].tolist(), "rel_change": run.topk.rel_change[..., 0].tolist()}
        return {**dataclasses.asdict(run.rows[0]), "topk": topk}

    def options_json(self) -> dict[str, Any]:
        return {"network": self.network, "images": self.images, "first": self.first, "options": as_json(self.options)}

    def item_budget(self) -> float | None:
        return None

    def placeholder(self, task: Task, status: str, seconds: float) -> dict[str, Any]:
        item: ImageItem = task.payload
        return {"idx": item.idx, "label": item.label, "seconds": seconds}

    def results(self, rows: Sequence[dict[str, Any]]) -> list[Row]:
        """The CSV rows of the items that ran to the end (killed and crashed items have none)."""
        return [Row(**{c: (bool(r[c]) if c == "proven" else r[c]) for c in CSV_COLUMNS}) for r in rows
                if r["status"] == "ok"]

    def topk(self, rows: Sequence[dict[str, Any]]) -> TopK | None:
        """The top-k curves of the finished items, concatenated as `run_features` does (or None)."""
        curves = [r["topk"] for r in rows if r["status"] == "ok" and r.get("topk")]
        if not curves:
            return None
        return TopK(tuple(curves[0]["ks"]), tuple(curves[0]["priorities"]),
                    torch.tensor([c["proven"] for c in curves]).permute(1, 2, 0),
                    torch.tensor([c["rel_change"] for c in curves]).permute(1, 2, 0))


def summarize_rows(rows: Sequence[Row]) -> FeatureSummary:
    """`profit.features.summarize` from CSV rows: kept-set statistics over the proven images."""
    done = [r for r in rows if r.proven]
    suffix = torch.tensor([r.kept_suffix for r in done], dtype=torch.float)
    greedy = torch.tensor([r.kept_greedy for r in done], dtype=torch.float)
    seconds = sum(r.seconds for r in rows) / max(1, len(rows))
    if not done:
        return FeatureSummary(len(rows), 0, *[float("nan")] * 4, 0, float("nan"), float("nan"), seconds)
    return FeatureSummary(len(rows), len(done), float(suffix.mean()), float(suffix.median()), float(greedy.mean()),
                          float(greedy.median()), int(greedy.max()), float(100 * (greedy <= 5).float().mean()),
                          float(100 * (greedy <= 10).float().mean()), seconds)


# ---------------------------------------------------------------------------- explain

@dataclass(frozen=True)
class ExplainJob:
    """Formal explanations of single images over one patch (an `Explainer` per item)."""

    network: str
    patch: tuple[int, ...]
    domain: str = "binary"  # a PixelDomain name; discrete domains quantise the image
    mode: str = "local"
    enum: str = "axp"
    limit: int | None = None
    timeout: float | None = None  # seconds per instance (the whole enumeration)
    options: ExplainOptions = ExplainOptions()
    oracle: OracleOptions = field(default_factory=OracleOptions)
    dataset: str = ""

    kind: ClassVar[str] = "explain"
    columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("instance", "INTEGER"), ("label", "INTEGER"), ("predicted", "INTEGER"), ("target", "TEXT"),
        ("enumeration", "TEXT"), ("explanations", "INTEGER"), ("counterexamples", "INTEGER"), ("seconds", "REAL"),
        ("document", "TEXT"))
    json_columns: ClassVar[tuple[str, ...]] = ("document",)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ProfitError(f"unknown mode '{self.mode}' (choose from {', '.join(MODES)})")
        if self.enum not in ENUMS:
            raise ProfitError(f"unknown enumeration '{self.enum}' (choose from {', '.join(ENUMS)})")
        domain = PixelDomain.parse(self.domain)
        if self.mode == "absolute" and not domain.discrete:
            raise ProfitError(f"absolute mode needs a discrete pixel domain (binary or levels:K), not {domain}")

    def check(self, net: Network, image: Tensor) -> None:
        """The errors every instance would have (patch pixels, margin, class): one ProfitError now
        instead of one error row per item."""
        x = fit_to_network(torch.as_tensor(image)[None], net)[0]
        target = self.options.target if isinstance(self.options.target, int) else 0
        Problem(net, x.double().numpy().reshape(-1), self.patch, PixelDomain.parse(self.domain), target,
                self.options.margin)

    def __call__(self, item: ImageItem) -> dict[str, Any]:
        net = cached_network(self.network)
        domain = PixelDomain.parse(self.domain)
        x = fit_to_network(torch.from_numpy(item.image)[None], net)[0]
        if domain.discrete:
            x = torch.from_numpy(domain.quantize(x.double().numpy()))
        oracle = self.oracle
        explainer = Explainer(net, x, self.patch, domain, oracle=lambda p: CascadeOracle(p, oracle),
                              mode=self.mode, options=self.options)
        run = explainer.enumerate(self.enum, limit=self.limit, timeout=self.timeout).run()
        return {"instance": item.idx, "label": item.label, "predicted": explainer.predicted,
                "target": explainer.target_name, "enumeration": run.status, "explanations": len(run.explanations),
                "counterexamples": len(run.counterexamples), "seconds": run.seconds,
                "document": {"network": net.source, "instance": item.idx, **run.to_json()}}

    def options_json(self) -> dict[str, Any]:
        return {name: as_json(getattr(self, name)) for name in
                ("network", "patch", "domain", "mode", "enum", "limit", "timeout", "options", "oracle", "dataset")}

    def item_budget(self) -> float | None:
        return self.timeout

    def placeholder(self, task: Task, status: str, seconds: float) -> dict[str, Any]:
        item: ImageItem = task.payload
        return {"instance": item.idx, "label": item.label,
                "enumeration": "partial" if status == "timeout" else None, "seconds": seconds}

    def results(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-instance rows; "enumeration" is complete / partial (killed at its limit), or "error" (a crash)."""
        return [{**r, "enumeration": r["enumeration"] or "error"} for r in rows]


# ---------------------------------------------------------------------------- cem

@dataclass(frozen=True)
class CEMItem:
    """One image to explain: its id (the store's item key), pixels in [0, 1] and the caller's
    meta data (JSON values), returned with its result."""

    key: str
    image: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def cem_tasks(items: Sequence[CEMItem], timeout: float | None = None) -> list[Task]:
    """One task per item, keyed by its id, in the given order."""
    return [Task(item.key, item, position, timeout) for position, item in enumerate(items)]


@dataclass(frozen=True)
class CEMJob:
    """Contrastive explanations of single images (`profit.cem.cem` on one image per item):
    the network and autoencoder paths (or shipped names), CEM's options, the optimizer
    ("fista", "adam" or "adaexpgrad") and, for the superpixel variant, a k x k grid."""

    network: str
    options: CEMOptions = CEMOptions()
    optimizer: str = "fista"
    eta: float = 1.0  # AdaExpGrad's step scale
    autoencoder: str | None = None  # also gives the AE error with gamma = 0
    grid: int | None = None  # superpixels: k x k patches

    kind: ClassVar[str] = "cem"
    columns: ClassVar[tuple[tuple[str, str], ...]] = (
        ("target", "INTEGER"), ("predicted", "INTEGER"), ("found", "INTEGER"), ("distance", "REAL"), ("c", "REAL"),
        ("l0", "INTEGER"), ("l1", "REAL"), ("l2", "REAL"), ("ae_error", "REAL"), ("seconds", "REAL"),
        ("explanation", "TEXT"), ("meta", "TEXT"))
    json_columns: ClassVar[tuple[str, ...]] = ("explanation", "meta")

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ProfitError(f"unknown optimizer '{self.optimizer}' (choose from {', '.join(OPTIMIZERS)})")
        if self.options.gamma > 0 and self.autoencoder is None:
            raise ProfitError("gamma > 0 needs an autoencoder")

    def __call__(self, item: CEMItem) -> dict[str, Any]:
        import time

        start = time.perf_counter()
        net = cached_network(self.network)
        x = fit_to_network(torch.as_tensor(np.asarray(item.image, dtype=np.float64))[None], net,
                           f"item {item.key}").double()
        autoencoder = None if self.autoencoder is None else cached_network(self.autoencoder)
        if autoencoder is not None:
            check_autoencoder(autoencoder, net)
        optimizer = make_optimizer(self.optimizer, self.options.lr, self.eta, self.options.original_threshold)
        segments = None if self.grid is None else grid_segments(tuple(net.input_shape[-2:]), self.grid)
        result = cem(net, x, self.options, optimizer=optimizer,
                     autoencoder=autoencoder if self.options.gamma > 0 else None, segments=segments)
        delta = result.delta[0].reshape(-1)
        ae_error = None
        if autoencoder is not None:
            with torch.no_grad():
                ae_error = float(reconstruction_error(autoencoder, result.explanation)[0])
        return {"target": int(result.target[0]), "predicted": int(result.predicted[0]),
                "found": bool(result.found[0]), "distance": float(result.distance[0]), "c": float(result.c[0]),
                "l0": int((delta != 0).sum()), "l1": float(delta.abs().sum()), "l2": float(delta.norm()),
                "ae_error": ae_error, "seconds": time.perf_counter() - start,
                "explanation": result.explanation[0].tolist(), "meta": item.meta}

    def options_json(self) -> dict[str, Any]:
        return {name: as_json(getattr(self, name)) for name in
                ("network", "options", "optimizer", "eta", "autoencoder", "grid")}

    def item_budget(self) -> float | None:
        return None

    def placeholder(self, task: Task, status: str, seconds: float) -> dict[str, Any]:
        """A killed or crashed item keeps its meta data, nothing else."""
        return {"meta": task.payload.meta, "seconds": seconds}

    def results(self, rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Rows by item id: status ("ok" / "timeout" / "error"), error, meta and the record."""
        return {r["item_key"]: {**{c: r[c] for c, _ in self.columns}, "status": r["status"], "error": r["error"],
                                "found": bool(r["found"]) if r["found"] is not None else None} for r in rows}


JOBS = (VerifyJob, VnnlibJob, FeaturesJob, ExplainJob, CEMJob)
Job = VerifyJob | VnnlibJob | FeaturesJob | ExplainJob | CEMJob
