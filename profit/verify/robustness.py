"""Local robustness of images: is every input in the eps-ball classified like the image?

    results = verify_images(net, images, labels, VerifyOptions(eps=0.02))
    print(summary_line(summarize(results)))

Per image the answer is a `Verdict`: verified (every abstract-domain bound proves
the label wins on the whole ball), falsified (a counterexample confirmed by
onnxruntime), unknown, timeout, or misclassified (the image itself is already
misclassified; not verified).

Pipeline (`domain="auto"`), cheapest first, each stage on the whole batch of
still-undecided images at once, each image stopping at its first conclusive answer:

    quick-attack (FGSM vertex + random samples) -> pgd -> box -> crown -> alpha-crown
    [-> bab with complete=True]

With a named domain the stages are quick-attack -> pgd -> that domain. An image's
`seconds` is its share of the stages it took part in (stage time / batch size);
once it reaches `timeout` it takes part in no further stage and, if undecided,
gets the verdict timeout.

Soundness: the eps-ball is built in [0, 1] pixel space, clipped, then mapped
through the normalisation (x - mean) / std, which is monotone and affine per
channel, so the mapped box is exactly the image of the pixel box; its bounds are
rounded outward to float32 (`specs.Box`). Domains are sound, so verified holds
for every input in the ball; a float32 margin within rounding of 0 counts only if
the domain's float64 bound agrees (`domains.base.checked_proofs`). Attacks search
the float32 box rounded *inward* (`attack_regions`), and falsified only comes with
a point that lies inside the exact ball and whose onnxruntime outputs are
misclassified (`profit.attacks.confirm`).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from domains import DOMAINS
from domains.base import Domain, checked_proofs
from networks.ir import Network
from profit import bab
from profit.attacks import AttackOptions, confirm, pgd, quick_attack
from profit.errors import ProfitError
from profit.data import fit_to_network
from profit.outcomes import Verdict
from specs.properties import Spec, robustness
from specs.regions import Box, inner_box

AUTO_DOMAINS = ("box", "crown", "alpha-crown")  # the domains `auto` tries, cheapest first
ATTACK_STAGES = ("quick-attack", "pgd")
COMPLETE_STAGE = "bab"


@dataclass(frozen=True)
class VerifyOptions:
    """How to verify a batch of images.

    eps: L-inf radius in [0, 1] pixel units (>= 0); domain: "auto" or a name in
    domains.DOMAINS; timeout: seconds per image (> 0) or None; attack: the PGD
    settings; mean / std: per-channel normalisation (x - mean) / std applied before
    the network (None: the network takes [0, 1] pixels, or normalises itself);
    complete: after the incomplete stages, run branch and bound (`profit.bab.check`,
    one image at a time, with the image's remaining time) on what is left; batch_size: images per batch inside each stage (memory).
    """

    eps: float = 0.02
    domain: str = "auto"
    timeout: float | None = None
    attack: AttackOptions = field(default_factory=AttackOptions)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    complete: bool = False
    batch_size: int = 100

    def __post_init__(self) -> None:
        if not self.eps >= 0 or math.isinf(self.eps):
            raise ProfitError(f"eps must be a finite number >= 0, got {self.eps}")
        if self.domain != "auto" and self.domain not in DOMAINS:
            raise ProfitError(f"unknown domain '{self.domain}' (choose from auto, {', '.join(DOMAINS)})")
        if self.timeout is not None and not self.timeout > 0:
            raise ProfitError(f"timeout must be > 0 seconds, got {self.timeout}")
        if (self.mean is None) != (self.std is None):
            raise ProfitError("give both mean and std for normalisation, or neither")
        if self.std is not None and not all(s > 0 and math.isfinite(s) for s in self.std):
            raise ProfitError(f"std must be > 0, got {self.std}")
        if self.mean is not None and not all(math.isfinite(m) for m in self.mean):
            raise ProfitError(f"mean must be finite, got {self.mean}")
        if self.batch_size < 1:
            raise ProfitError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages in the order they run."""
        domains = AUTO_DOMAINS if self.domain == "auto" else (self.domain,)
        return ATTACK_STAGES + domains + ((COMPLETE_STAGE,) if self.complete else ())


@dataclass(frozen=True)
class ImageResult:
    """The answer for one image.

    margin: for verified / unknown / timeout the best sound lower bound of the
    robustness margin min_j (y_label - y_j) over the ball (None if no domain ran, or
    if branch and bound verified it: its proof has no single bound);
    for falsified the margin at the counterexample (<= 0); for misclassified the
    margin of the image itself (<= 0). decided_by: the stage that decided, or the
    last stage run. counterexample: for falsified, the confirmed point in the
    images' own layout and pixel space [0, 1] (mapped back through mean/std).
    """

    idx: int
    label: int
    predicted: int
    verdict: Verdict
    margin: float | None
    decided_by: str
    seconds: float
    counterexample: Tensor | None = None

    def record(self) -> dict[str, object]:
        """The JSON/CSV record: idx, label, predicted, verdict, margin, decided_by, seconds."""
        return {"idx": self.idx, "label": self.label, "predicted": self.predicted, "verdict": self.verdict.value,
                "margin": self.margin, "decided_by": self.decided_by, "seconds": self.seconds}


@dataclass(frozen=True)
class Summary:
    """Counts per verdict and the total time of a run."""

    total: int
    verified: int
    falsified: int
    unknown: int
    timeout: int
    misclassified: int
    seconds: float

    def percent(self, count: int) -> float:
        """count as a percentage of all images."""
        return 100.0 * count / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        counts = {v.value: getattr(self, v.value) for v in Verdict}
        return {"total": self.total, **counts,
                **{f"{k}_pct": round(self.percent(n), 2) for k, n in counts.items()},
                "seconds": round(self.seconds, 3)}


def summarize(results: Sequence[ImageResult], seconds: float | None = None) -> Summary:
    """Counts per verdict; seconds defaults to the sum of the per-image times."""
    count = {v: sum(r.verdict is v for r in results) for v in Verdict}
    total_time = sum(r.seconds for r in results) if seconds is None else seconds
    return Summary(len(results), count[Verdict.VERIFIED], count[Verdict.FALSIFIED], count[Verdict.UNKNOWN],
                   count[Verdict.TIMEOUT], count[Verdict.MISCLASSIFIED], total_time)


def summary_line(summary: Summary) -> str:
    """One line: verified %, falsified %, unknown %, (timeout, misclassified), total time."""
    s = summary
    return (f"verified {s.verified}/{s.total} ({s.percent(s.verified):.1f}%), "
            f"falsified {s.falsified} ({s.percent(s.falsified):.1f}%), "
            f"unknown {s.unknown} ({s.percent(s.unknown):.1f}%), "
            f"timeout {s.timeout}, misclassified {s.misclassified}; total {s.seconds:.2f} s")


def _channel_tensor(values: tuple[float, ...], images: Tensor, what: str) -> Tensor:
    """Per-channel constants shaped to broadcast over images (N, C, ...) in float64."""
    t = torch.tensor(values, dtype=torch.float64)
    if t.numel() == 1:
        return t.reshape(())
    if images.ndim < 3 or images.shape[1] != t.numel():
        layout = "x".join(map(str, images.shape[1:]))
        raise ProfitError(f"{what} has {t.numel()} values but the images ({layout}) have "
                          f"{images.shape[1] if images.ndim >= 3 else 1} channel(s)")
    return t.reshape(t.numel(), *[1] * (images.ndim - 2))


def _bounds64(net: Network, images: Tensor, options: VerifyOptions) -> tuple[Tensor, Tensor, Tensor]:
    """Exact (float64) lower, upper and centre of the balls in the network's input space."""
    if not options.eps >= 0:
        raise ProfitError(f"eps must be >= 0, got {options.eps}")
    center = images.to(torch.float64)
    lower, upper = (center - options.eps).clamp(0.0, 1.0), (center + options.eps).clamp(0.0, 1.0)
    if options.mean is not None and options.std is not None:
        mean = _channel_tensor(options.mean, images, "--mean")
        std = _channel_tensor(options.std, images, "--std")
        lower, upper, center = (lower - mean) / std, (upper - mean) / std, (center - mean) / std
    return fit_to_network(lower, net), fit_to_network(upper, net), fit_to_network(center, net)


def build_regions(net: Network, images: Tensor, options: VerifyOptions) -> tuple[Tensor, Box]:
    """Network inputs (N, *net.input_shape) and their eps-balls, in the network's input space.

    The ball is clipped to [0, 1] in pixel space, then normalised (in float64); the box
    is rounded outward to float32, so it contains the exact image of the pixel ball.
    """
    lower, upper, center = _bounds64(net, images, options)
    region = Box(lower, upper)
    return torch.minimum(torch.maximum(center.to(torch.float32), region.lower), region.upper), region


def attack_regions(net: Network, images: Tensor, options: VerifyOptions) -> tuple[Box, Tensor]:
    """The float32 boxes inside the exact balls (where counterexamples are searched and
    confirmed), and (N,) bool: whether a box is non-empty (see `specs.regions.inner_box`)."""
    lower, upper, _ = _bounds64(net, images, options)
    return inner_box(lower, upper)


def _to_pixels(x: Tensor, images: Tensor, options: VerifyOptions) -> Tensor:
    """A network input mapped back to the images' layout and [0, 1] pixel space."""
    x = x.detach().double().reshape(images.shape[1:])
    if options.mean is not None and options.std is not None:
        std = _channel_tensor(options.std, images, "--std")
        mean = _channel_tensor(options.mean, images, "--mean")
        x = x * std + mean
    return x.clamp(0.0, 1.0).float()


class _Ledger:
    """Mutable bookkeeping of one `verify_images` call (per-image state as lists)."""

    def __init__(self, n: int, timeout: float | None, bar: tqdm) -> None:
        self.verdict: list[Verdict | None] = [None] * n
        self.margin: list[float | None] = [None] * n
        self.decided_by = [""] * n
        self.seconds = [0.0] * n
        self.cex: list[Tensor | None] = [None] * n
        self.timeout = timeout
        self.bar = bar

    def decide(self, i: int, verdict: Verdict, stage: str, margin: float | None = None) -> None:
        self.verdict[i], self.decided_by[i] = verdict, stage
        if margin is not None:
            self.margin[i] = margin
        self.bar.update(1)

    def improve_bound(self, i: int, bound: float) -> None:
        if self.margin[i] is None or bound > self.margin[i]:
            self.margin[i] = bound

    def pending(self) -> list[int]:
        return [i for i, v in enumerate(self.verdict) if v is None]

    def charge(self, chunk: list[int], seconds: float) -> None:
        for i in chunk:
            self.seconds[i] += seconds / len(chunk)

    def expire(self, stage: str) -> None:
        """Undecided images that used up their time: timeout."""
        if self.timeout is None:
            return
        for i in self.pending():
            if self.seconds[i] >= self.timeout:
                self.decide(i, Verdict.TIMEOUT, stage)


def verify_images(
    net: Network,
    images: Tensor,
    labels: Tensor | Sequence[int] | None,
    options: VerifyOptions = VerifyOptions(),
    onnx_path: str | Path | None = None,
    progress: bool = True,
    indices: Sequence[int] | None = None,
) -> list[ImageResult]:
    """Verify L-inf robustness of each image at options.eps; one ImageResult per image.

    images: (N, *image_shape) in [0, 1], any layout with as many values as the network
    input (normalisation channels are dim 1); labels: (N,) or None (use the prediction);
    onnx_path: the ONNX file used to confirm counterexamples (default: net.source);
    indices: the images' numbers for the results (default 0..N-1); progress: a tqdm
    bar on stderr.
    """
    onnx = Path(onnx_path) if onnx_path is not None else Path(net.source) if net.source else None
    if onnx is None or not onnx.is_file():
        raise ProfitError("verify needs the network's ONNX file to confirm counterexamples with onnxruntime "
                          f"(got {onnx_path or net.source or 'none'})")
    images = torch.as_tensor(images)
    N = images.shape[0]
    indices = list(range(N)) if indices is None else list(indices)
    if len(indices) != N:
        raise ProfitError(f"{len(indices)} indices for {N} images")
    start = time.perf_counter()
    x, region = build_regions(net, images, options)
    search, searchable = attack_regions(net, images, options)
    with torch.no_grad():
        logits = net.logits(x)
    predicted = logits.argmax(dim=1)
    labels_t = predicted.clone() if labels is None else torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels_t.shape[0] != N:
        raise ProfitError(f"{labels_t.shape[0]} labels for {N} images")
    if N and (labels_t.min() < 0 or labels_t.max() >= net.n_outputs):
        raise ProfitError(f"labels must be classes 0..{net.n_outputs - 1} of the network, "
                          f"found {int(labels_t.min())}..{int(labels_t.max())}")
    if net.n_outputs < 2:
        raise ProfitError(f"robustness needs a classifier with >= 2 outputs, the network has {net.n_outputs}")
    spec = robustness(labels_t, net.n_outputs)
    domains: dict[str, Domain] = {name: DOMAINS[name](net) for name in options.stages if name in DOMAINS}
    bar = tqdm(total=N, desc="verify", unit="img", file=sys.stderr, disable=not progress, leave=False)
    run = _Ledger(N, options.timeout, bar)
    clean_margin = spec.margin(logits)
    if N:
        run.charge(list(range(N)), time.perf_counter() - start)
    for i in range(N):
        if predicted[i] != labels_t[i]:
            run.decide(i, Verdict.MISCLASSIFIED, "forward", float(clean_margin[i]))
    for stage in options.stages:
        pending = run.pending()
        size = 1 if stage == COMPLETE_STAGE else options.batch_size  # bab decides one image at a time
        for lo in range(0, len(pending), size):
            chunk = pending[lo:lo + size]
            t0 = time.perf_counter()
            index = torch.tensor(chunk, dtype=torch.long)
            regions = (region[index], search[index], searchable[index])
            _run_stage(stage, net, onnx, regions, spec[index], options, chunk, run, images, domains)
            run.charge(chunk, time.perf_counter() - t0)
        for i in pending:
            if run.verdict[i] is None:
                run.decided_by[i] = stage
        run.expire(stage)
    for i in run.pending():
        run.decide(i, Verdict.UNKNOWN, run.decided_by[i] or "none")
    bar.close()
    return [ImageResult(indices[i], int(labels_t[i]), int(predicted[i]), run.verdict[i], run.margin[i],
                        run.decided_by[i], run.seconds[i], run.cex[i]) for i in range(N)]


def _run_stage(stage: str, net: Network, onnx: Path, regions: tuple[Box, Box, Tensor], spec: Spec,
               options: VerifyOptions, chunk: list[int], run: _Ledger, images: Tensor,
               domains: dict[str, Domain]) -> None:
    """Run one stage on a batch of undecided images and record what it decided.

    regions: the outward-rounded boxes (proofs), the inward-rounded ones (attacks) and
    which of the latter are non-empty.
    """
    region, search, searchable = regions
    if stage in ATTACK_STAGES:
        a = options.attack
        if stage == "pgd":
            x, found = pgd(net, search, spec, a)
        else:
            x, found = quick_attack(net, search, spec, seed=a.seed)
        found = found & searchable
        if not found.any():
            return
        hits = found.nonzero().flatten()
        ok = confirm(onnx, net, x[hits], search[hits], spec[hits])
        with torch.no_grad():
            margins = spec[hits].margin(net.logits(x[hits]))
        for k, good, m in zip(hits.tolist(), ok.tolist(), margins.tolist()):
            if good:
                run.cex[chunk[k]] = _to_pixels(x[k], images, options)
                run.decide(chunk[k], Verdict.FALSIFIED, stage, m)
        return
    if stage == COMPLETE_STAGE:
        i = chunk[0]
        remaining = None if options.timeout is None else options.timeout - run.seconds[i]
        if remaining is not None and remaining <= 0:
            return
        outcome = bab.check(net, region, spec, timeout=remaining, onnx_path=onnx, attack_region=search)
        verdict = Verdict(outcome.verdict)
        if verdict is Verdict.FALSIFIED:
            x = outcome.x.reshape(search.lower.shape)
            if not (bool(searchable[0]) and bool(confirm(onnx, net, x, search, spec)[0])):
                return
            run.cex[i] = _to_pixels(x[0], images, options)
            with torch.no_grad():
                run.decide(i, verdict, stage, float(spec.margin(net.logits(x))[0]))
        elif verdict is Verdict.VERIFIED:
            run.margin[i] = None  # proven over subdomains: no single bound for the whole ball
            run.decide(i, verdict, stage)
        return
    _, proven, margin = checked_proofs(domains[stage], region, spec)
    for k, (proven, bound) in enumerate(zip(proven.tolist(), margin.tolist())):
        run.improve_bound(chunk[k], bound)
        if proven:
            run.decide(chunk[k], Verdict.VERIFIED, stage)


OUT_FORMATS = (".json", ".csv")
RECORD_COLUMNS = ("idx", "label", "predicted", "verdict", "margin", "decided_by", "seconds")


def check_out_path(path: str | Path) -> Path:
    """The --out path, if its suffix is a known format (.json or .csv)."""
    path = Path(path)
    if path.suffix.lower() not in OUT_FORMATS:
        raise ProfitError(f"{path}: --out must end in .json or .csv")
    if path.is_dir():
        raise ProfitError(f"{path}: --out is a directory")
    return path


def results_document(results: Sequence[ImageResult], network: str, options: VerifyOptions,
                     summary: Summary | None = None) -> dict[str, object]:
    """The JSON document: network, eps, domain, images (records), summary."""
    summary = summary or summarize(results)
    return {"network": network, "eps": options.eps, "domain": options.domain,
            "images": [r.record() for r in results], "summary": summary.as_dict()}


def write_results(path: str | Path, results: Sequence[ImageResult], network: str, options: VerifyOptions,
                  summary: Summary | None = None) -> Path:
    """Write the run as JSON (`results_document`) or CSV (RECORD_COLUMNS, empty margin for None)."""
    path = check_out_path(path)
    try:
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(results_document(results, network, options, summary), indent=1) + "\n")
        else:
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=RECORD_COLUMNS)
                writer.writeheader()
                for r in results:
                    record = r.record()
                    writer.writerow({k: "" if v is None else v for k, v in record.items()})
    except OSError as exc:
        raise ProfitError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path
