"""Train the networks the project ships, export them to ONNX and write their model cards.

    python -m profit.train [--net all|mnist_mlp|mnist_conv|mnist_5v6|mnist_conv_standard|
                                   mnist_conv_pgd|mnist_conv_ibp] [--epochs E] [--seed S]
                             [--out networks/models]

Data: only the 10k MNIST *test* set is available offline (``../shared/data/mnist``).
We train on test images 2,000-9,999 and evaluate on images 0-1,999; images 0-99 (and
0-499) are what ERAN, ProFIt and VNN-COMP evaluate on, so they are never trained on.
Training is on CPU, single-threaded and deterministic for a seed: each net reseeds
torch and numpy at its start, so ``--net all`` and ``--net <name>`` give the same
weights. Each ONNX file is checked against the torch model with onnxruntime before
its card is written.

The three `mnist_conv_*` nets share mnist_conv's architecture and differ only in how
they are trained (for the proof-feature comparison of ProFIt, ICLR 2024): standard
cross-entropy, PGD adversarial training, and certified training with interval bound
propagation (IBP, Gowal et al. 2018) through the project's own differentiable
`domains.box.interval_bounds`. Their cards add CROWN-certified accuracy.
"""

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from domains import Crown
from domains.box import interval_bounds
from networks import MODELS_DIR
from networks.datasets import load_mnist_test
from networks.export import INPUT_NAME, to_onnx
from networks.ir import Conv, Input, Linear, Network, Node, Relu, Reshape
from networks.onnx_import import load_onnx
from specs import linf_ball, robustness

TRAIN_RANGE = (2000, 10000)  # MNIST test images used for training
TEST_RANGE = (0, 2000)  # held-out MNIST test images used for evaluation
N_SAMPLES = 100  # shipped samples: MNIST test images 0-99
INPUT_SHAPE = (1, 28, 28)
DEFAULT_OUT = MODELS_DIR
MAX_ONNX_DIFF = 1e-4  # max |onnxruntime - torch| on the held-out set before we refuse
CERTIFY_EPS = (0.02, 0.1)  # eps of the CROWN-certified accuracy in the comparison nets' cards
CERTIFY_COUNT = 500  # certified accuracy on test images 0-499 (never trained on)


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters of one training run (defaults are what the shipped nets used)."""

    epochs: int
    lr: float = 2e-3  # Adam, cosine-annealed to 0 over all epochs
    weight_decay: float = 1e-4  # L2 penalty inside Adam
    batch_size: int = 32
    max_shift: int = 2  # random translation augmentation, in pixels (each axis)
    adv_eps: float = 0.0  # L_inf radius of PGD augmentation (0 = none)
    adv_steps: int = 3  # PGD steps (random start, step eps/2)
    adv_start: float = 1 / 3  # PGD augmentation from epoch floor(adv_start * epochs) on
    ibp_eps: float = 0.0  # certified training: L_inf radius of the IBP loss (0 = none)
    ibp_ramp: float = 0.5  # eps ramps linearly from 0 to ibp_eps over this fraction of the steps
    ibp_kappa: float = 0.5  # weight of the clean loss, from 1 down to ibp_kappa during the ramp

    @property
    def adv_from_epoch(self) -> int:
        """First epoch (0-based) with PGD augmentation."""
        return int(self.adv_start * self.epochs)


@dataclass(frozen=True)
class NetSpec:
    """One shipped network: how it is built, what data it sees and how it is trained."""

    name: str
    build: Callable[[], nn.Sequential]
    architecture: str  # human-readable, for the model card
    digits: tuple[int, ...]  # class i = digit digits[i]
    binarize: bool  # threshold the data at 0.5 (the data's preprocessing, not a layer)
    options: TrainOptions
    summary: str  # one line for the README
    certify: tuple[float, ...] = ()  # eps values at which the card reports CROWN-certified accuracy


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 100), nn.ReLU(),
        nn.Linear(100, 100), nn.ReLU(),
        nn.Linear(100, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )  # fmt: skip


def _conv() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )  # fmt: skip


def _mlp_5v6() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 20), nn.ReLU(),
        nn.Linear(20, 10), nn.ReLU(),
        nn.Linear(10, 2),
    )  # fmt: skip


NETS: dict[str, NetSpec] = {
    spec.name: spec
    for spec in (
        NetSpec(
            name="mnist_mlp",
            build=_mlp,
            architecture="Flatten -> Gemm 784x100 -> Relu -> Gemm 100x100 -> Relu -> "
            "Gemm 100x100 -> Relu -> Gemm 100x10",
            digits=tuple(range(10)),
            binarize=False,
            options=TrainOptions(epochs=30, adv_eps=0.02),
            summary="fully connected 3x100 ReLU MNIST classifier",
        ),
        NetSpec(
            name="mnist_conv",
            build=_conv,
            architecture="Conv 1->16 4x4 stride 2 pad 1 -> Relu -> Conv 16->32 4x4 stride 2 pad 1 -> "
            "Relu -> Flatten -> Gemm 1568x100 -> Relu -> Gemm 100x10",
            digits=tuple(range(10)),
            binarize=False,
            options=TrainOptions(epochs=20, adv_eps=0.02),
            summary="small convolutional ReLU MNIST classifier (like ERAN's ConvSmall, with padding 1)",
        ),
        NetSpec(
            name="mnist_5v6",
            build=_mlp_5v6,
            architecture="Flatten -> Gemm 784x20 -> Relu -> Gemm 20x10 -> Relu -> Gemm 10x2",
            digits=(5, 6),
            binarize=True,
            options=TrainOptions(epochs=60, lr=3e-3, weight_decay=1e-3),
            summary="binary 5-vs-6 classifier on binarised MNIST (class 0 = '5', 1 = '6')",
        ),
        *(
            NetSpec(
                name=f"mnist_conv_{method}",
                build=_conv,
                architecture="as mnist_conv: Conv 1->16 4x4 stride 2 pad 1 -> Relu -> Conv 16->32 4x4 "
                "stride 2 pad 1 -> Relu -> Flatten -> Gemm 1568x100 -> Relu -> Gemm 100x10",
                digits=tuple(range(10)),
                binarize=False,
                options=options,
                summary=f"mnist_conv's architecture, {how} (proof-feature comparison)",
                certify=CERTIFY_EPS,
            )
            for method, how, options in (
                ("standard", "standard training", TrainOptions(epochs=10)),
                ("pgd", "PGD adversarial training at eps 0.1",
                 TrainOptions(epochs=15, adv_eps=0.1, adv_steps=5, adv_start=0.2)),
                ("ibp", "certified IBP training at eps 0.15",
                 TrainOptions(epochs=20, max_shift=0, ibp_eps=0.15)),
            )
        ),
    )
}


def _seed_everything(seed: int) -> np.random.Generator:
    """Make torch deterministic for ``seed`` and return the numpy generator to use."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return np.random.default_rng(seed)


def prepare(images: np.ndarray, labels: np.ndarray, spec: NetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) -> float32 (M, 1, 28, 28) in [0, 1] and class indices (M,).

    Keeps only ``spec.digits`` (relabelled 0..k-1) and binarises if the net asks for it.
    """
    keep = np.isin(labels, spec.digits)
    x = images[keep].astype(np.float32)[:, None] / 255.0
    if spec.binarize:
        x = (x > 0.5).astype(np.float32)
    y = np.searchsorted(np.array(spec.digits), labels[keep]).astype(np.int64)
    return x, y


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of x (B, C, H, W) by its own random offset in [-s, s]^2, zero fill."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b)[:, None, None, None]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
         gen: torch.Generator) -> torch.Tensor:
    """L_inf PGD with a random start, clipped to the [0, 1] pixel range."""
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = nn.functional.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 0.5 * eps * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def _to_ir(model: nn.Sequential, input_shape: tuple[int, ...]) -> Network:
    """The IR of a Conv/Linear/ReLU/Flatten model whose layers hold the model's own parameters,
    so that bounds computed on it are differentiable in the weights (IBP training)."""
    nodes = [Node("input", Input(), (), tuple(input_shape))]
    x = torch.zeros(1, *input_shape)
    for i, module in enumerate(model):
        with torch.no_grad():
            x = module(x)
        if isinstance(module, nn.Conv2d):
            p = module.padding
            layer = Conv(module.weight, module.bias, tuple(module.stride), (p[0], p[1], p[0], p[1]))
        elif isinstance(module, nn.Linear):
            layer = Linear(module.weight, module.bias)
        elif isinstance(module, nn.ReLU):
            layer = Relu()
        elif isinstance(module, nn.Flatten):
            layer = Reshape(tuple(x.shape[1:]))
        else:
            raise TypeError(f"module {i}: {type(module).__name__} has no IR layer here")
        nodes.append(Node(f"m{i}", layer, (nodes[-1].name,), tuple(x.shape[1:])))
    return Network(tuple(nodes))


def _margin_lower(net: Network, lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """IBP lower bounds (B, k) of y_label - y_j, with the rows e_label - e_j folded into the
    last Linear layer (tighter than differencing the logit intervals); 0 at j = label."""
    h_lo, h_hi = interval_bounds(net, lower, upper)[net.output.inputs[0]]
    last = net.output.layer
    eye = torch.eye(last.weight.shape[0])
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, k, k): row j = e_label - e_j
    CW, Cb = C.matmul(last.weight), C.matmul(last.bias)
    center, radius = ((h_hi + h_lo) / 2).unsqueeze(-1), ((h_hi - h_lo) / 2).unsqueeze(-1)
    return (CW.matmul(center) - CW.abs().matmul(radius)).squeeze(-1) + Cb


def train(spec: NetSpec, x: np.ndarray, y: np.ndarray, seed: int,
          log: Callable[[str], None] = print) -> nn.Sequential:
    """Train ``spec``'s network on (x, y) with Adam; deterministic for ``seed``."""
    rng = _seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    opts = spec.options
    model = spec.build()
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = -(-len(x) // opts.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=opts.epochs * steps_per_epoch)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ir = _to_ir(model, tuple(x.shape[1:])) if opts.ibp_eps > 0 else None
    ramp_steps = max(1, int(opts.ibp_ramp * opts.epochs * steps_per_epoch))
    step = 0
    for epoch in range(opts.epochs):
        model.train()
        adversarial = opts.adv_eps > 0 and epoch >= opts.adv_from_epoch
        order = torch.from_numpy(rng.permutation(len(x)))
        total, correct = 0.0, 0
        for start in range(0, len(x), opts.batch_size):
            idx = order[start : start + opts.batch_size]
            xb, yb = _random_shift(xt[idx], opts.max_shift, gen), yt[idx]
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            if adversarial:
                x_adv = _pgd(model, xb, yb, opts.adv_eps, opts.adv_steps, gen)
                loss = 0.5 * loss + 0.5 * nn.functional.cross_entropy(model(x_adv), yb)
            if ir is not None:
                ramp = min(1.0, step / ramp_steps)
                eps, kappa = ramp * opts.ibp_eps, 1 - ramp * (1 - opts.ibp_kappa)
                worst = -_margin_lower(ir, (xb - eps).clamp(0, 1), (xb + eps).clamp(0, 1), yb)
                loss = kappa * loss + (1 - kappa) * nn.functional.cross_entropy(worst, yb)
                step += 1
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        log(f"  {spec.name} epoch {epoch + 1}/{opts.epochs}: loss {total / len(x):.4f}, "
            f"train acc {correct / len(x):.4f}{' (+PGD)' if adversarial else ''}"
            f"{f' (+IBP eps {min(1.0, step / ramp_steps) * opts.ibp_eps:.3f})' if ir is not None else ''}")
    return model.eval()


def _onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of the ONNX network at ``path`` for inputs x (N, 1, 28, 28), via onnxruntime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})[0]


def _pgd_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float) -> float:
    """Accuracy under a 10-step PGD attack at ``eps`` (an upper bound on robust accuracy)."""
    gen = torch.Generator().manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    x_adv = _pgd(model, xt, yt, eps, 10, gen)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == yt).float().mean())


def _certified_accuracy(model: nn.Module, path: Path, x: np.ndarray, y: np.ndarray, eps: float) -> float:
    """Fraction of the images (x, y) that CROWN proves robust at `eps` on the exported network.
    Images that are misclassified or broken by a 10-step PGD attack cannot be certified and
    are not sent to CROWN (this only saves time)."""
    net = load_onnx(path)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    x_adv = _pgd(model, xt, yt, eps, 10, torch.Generator().manual_seed(0))
    with torch.no_grad():
        candidate = (model(xt).argmax(1) == yt) & (model(x_adv).argmax(1) == yt)
    index = candidate.nonzero().flatten()
    proven = 0
    for start in range(0, len(index), 50):
        chunk = index[start:start + 50]
        proven += int(Crown(net).bound(linf_ball(xt[chunk], eps), robustness(yt[chunk], 10)).proven.sum())
    return proven / len(x)


def _command(spec: NetSpec, seed: int, epochs: int) -> str:
    return f"python -m profit.train --net {spec.name} --seed {seed} --epochs {epochs}"


def _card(spec: NetSpec, seed: int, path: Path, n_train: int, n_test: int, acc: float,
          acc_samples: float, n_samples: int, pgd: dict[float, float], seconds: float,
          certified: dict[float, float] | None = None) -> str:
    """The model card (markdown) for a trained and exported network."""
    opts = spec.options
    digits = ", ".join(str(d) for d in spec.digits)
    classes = (
        "class i = digit i" if spec.digits == tuple(range(10))
        else "; ".join(f"class {i} = digit {d}" for i, d in enumerate(spec.digits))
    )
    adv = (
        f"from epoch {opts.adv_from_epoch + 1} on, each batch's loss is the mean of the clean loss and "
        f"the loss on {opts.adv_steps}-step L_inf PGD examples (eps {opts.adv_eps}, random start, "
        f"step eps/2), so that small eps-balls (0.01-0.03) are more often provable"
        if opts.adv_eps > 0 else "none"
    )
    if opts.ibp_eps > 0:
        adv += (f"; certified training (IBP, Gowal et al. 2018): the loss is kappa * clean loss + "
                f"(1 - kappa) * cross-entropy of the worst-case logits -lower(y_label - y_j) from "
                f"`domains.box.interval_bounds` on the eps-ball, with eps ramped linearly from 0 to "
                f"{opts.ibp_eps} and kappa from 1 to {opts.ibp_kappa} over the first "
                f"{opts.ibp_ramp:.0%} of the steps")
    pre = (
        "pixels scaled to [0, 1], then **binarised** (pixel > 0.5 -> 1, else 0) as in the "
        "explanation-enumeration work of Ignatiev et al. (NeurIPS 2019); the network itself "
        "takes any input in [0, 1], binarisation is the data's, not a layer"
        if spec.binarize else
        "pixels scaled to [0, 1] (value / 255); no normalisation layer"
    )
    tuning = (
        "- hyper-parameters were set once, without tuning (the held-out images 0-1,999 were never "
        "used to choose them)" if spec.certify else
        "- hyper-parameters were picked on a validation split (train on images 2,000-7,999, validate on\n"
        "  8,000-9,999), never on the held-out images 0-1,999")
    certified_lines = "".join(
        f"| CROWN-certified accuracy, eps {eps} (test images 0-{CERTIFY_COUNT - 1}) | {a:.4f} |\n"
        for eps, a in (certified or {}).items())
    pgd_lines = "".join(
        f"| accuracy under 10-step PGD, eps {eps} (upper bound on robust accuracy) | {a:.4f} |\n"
        for eps, a in pgd.items()
    )
    return f"""# {spec.name}

{spec.summary[0].upper() + spec.summary[1:]}. Trained by `profit/train/classifiers.py`.

| | |
|---|---|
| file | `{path.name}` ({path.stat().st_size:,} bytes) |
| format | ONNX, opset 13, float32, written with `networks.export.to_onnx` (no torch exporter) |
| input | `input`: [batch, 1, 28, 28], values in [0, 1] |
| output | `logits`: [batch, {len(spec.digits)}] ({classes}) |
| architecture | {spec.architecture} |
| parameters | {sum(p.numel() for p in spec.build().parameters()):,} |

## Data
Only the 10,000-image MNIST **test** set is available offline (`../shared/data/mnist/t10k-*.gz`,
MNIST by LeCun, Cortes and Burges, CC BY-SA 3.0). It is split:
- training: test images {TRAIN_RANGE[0]:,}-{TRAIN_RANGE[1] - 1:,}, digits {digits} ({n_train:,} images);
- held-out evaluation: test images {TEST_RANGE[0]}-{TEST_RANGE[1] - 1:,}, digits {digits} ({n_test:,} images).

Test images 0-99 (shipped as `mnist_samples.npz`) and 0-499 are what ERAN, ProFIt and
VNN-COMP evaluate on; they were never seen in training.

Preprocessing: {pre}.

## Training
- optimiser: Adam, lr {opts.lr} cosine-annealed to 0 per step, weight decay (L2) {opts.weight_decay}, batch {opts.batch_size}
- epochs: {opts.epochs}; seed {seed}; CPU, one thread, `torch.use_deterministic_algorithms(True)`
- augmentation: random translation by up to ±{opts.max_shift} px per axis (zero fill)
- adversarial augmentation: {adv}
{tuning}
- training time: {seconds:.0f} s on one CPU core (torch {torch.__version__})

Command (from the repository root):
```
{_command(spec, seed, opts.epochs)}
```

## Results (onnxruntime on the exported file)
| | |
|---|---|
| held-out accuracy (test images 0-1,999, {n_test:,} images) | **{acc:.4f}** |
| accuracy on the shipped samples (test images 0-99, {n_samples} images) | {acc_samples:.4f} |
{pgd_lines}{certified_lines}
The exported ONNX agrees with the torch model to within {MAX_ONNX_DIFF:g} (max abs logit difference) on
the held-out set; training refuses to write the card otherwise.
"""


def _readme() -> str:
    """README of the models directory, listing what the project ships."""
    rows = "".join(
        f"| `{s.name}.onnx`, `{s.name}.md` | {s.summary} (see the card for accuracy) |\n"
        for s in NETS.values()
    )
    return f"""# Shipped models and samples

Small networks and data the project ships so that a fresh clone can verify, explain
and visualise without `../shared`. All were produced by `python -m profit.train`
(see `profit/train/classifiers.py`); each network has a model card with its architecture,
data split, training command and held-out accuracy.

| file | what |
|---|---|
{rows}| `profit/` | ProFIt's published networks rebuilt from their state dicts and exported to ONNX (`networks/profit_zoo.py`; see `profit/README.md`) |
| `mnist_ae.onnx`, `mnist_ae.md` | convolutional MNIST autoencoder for CEM's gamma term (`python -m profit.train.autoencoder`; see the card for the held-out reconstruction error) |
| `mnist_samples.npz` | MNIST test images 0-99, never used for training: `images` uint8 (100, 28, 28), `labels` int64 (100,), `source` (provenance string). Load with `networks.datasets.load_samples()` |

Training data: MNIST test images 2,000-9,999; evaluation: test images 0-1,999 (only the
test set is available offline; images 0-99/0-499 are the verification benchmarks'
images, so they are kept unseen). MNIST is by LeCun, Cortes and Burges, CC BY-SA 3.0.
"""


def write_samples(images: np.ndarray, labels: np.ndarray, out: Path) -> Path:
    """Write ``mnist_samples.npz`` (test images 0-99); leave an identical file untouched."""
    path = out / "mnist_samples.npz"
    imgs, labs = images[:N_SAMPLES].astype(np.uint8), labels[:N_SAMPLES].astype(np.int64)
    source = (
        f"MNIST test set images 0-{N_SAMPLES - 1}, never used for training "
        "(t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz; MNIST by LeCun, Cortes and "
        "Burges, CC BY-SA 3.0)"
    )
    if path.is_file():
        with np.load(path) as old:
            if (np.array_equal(old["images"], imgs) and np.array_equal(old["labels"], labs)
                    and str(old["source"]) == source):
                return path
    np.savez_compressed(path, images=imgs, labels=labs, source=np.array(source))
    return path


def run(spec: NetSpec, images: np.ndarray, labels: np.ndarray, seed: int, out: Path,
        epochs: int | None = None) -> float:
    """Train, export, check and document one network; returns its held-out accuracy."""
    if epochs is not None:
        spec = replace(spec, options=replace(spec.options, epochs=epochs))
    x_train, y_train = prepare(images[slice(*TRAIN_RANGE)], labels[slice(*TRAIN_RANGE)], spec)
    x_test, y_test = prepare(images[slice(*TEST_RANGE)], labels[slice(*TEST_RANGE)], spec)
    x_smp, y_smp = prepare(images[:N_SAMPLES], labels[:N_SAMPLES], spec)
    print(f"{spec.name}: {len(x_train)} training, {len(x_test)} held-out images")
    start = time.perf_counter()
    model = train(spec, x_train, y_train, seed)
    seconds = time.perf_counter() - start

    path = out / f"{spec.name}.onnx"
    to_onnx(model, INPUT_SHAPE, path, name=spec.name)
    with torch.no_grad():
        expected = model(torch.from_numpy(x_test)).numpy()
    got = _onnx_logits(path, x_test)
    diff = float(np.abs(got - expected).max())
    if diff >= MAX_ONNX_DIFF:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff:.2e} >= {MAX_ONNX_DIFF}")
    acc = float((got.argmax(1) == y_test).mean())
    acc_smp = float((_onnx_logits(path, x_smp).argmax(1) == y_smp).mean())
    pgd = {} if spec.binarize else {e: _pgd_accuracy(model, x_test, y_test, e) for e in (0.01, 0.03)}
    certified = {e: _certified_accuracy(model, path, x_test[:CERTIFY_COUNT], y_test[:CERTIFY_COUNT], e)
                 for e in spec.certify}
    card = _card(spec, seed, path, len(x_train), len(x_test), acc, acc_smp, len(x_smp), pgd, seconds,
                 certified)
    (out / f"{spec.name}.md").write_text(card)
    print(f"{spec.name}: held-out accuracy {acc:.4f}, samples {acc_smp:.4f}, PGD {pgd}, certified {certified}, "
          f"onnx diff {diff:.1e}, {path.stat().st_size:,} bytes, {seconds:.0f} s")
    return acc


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: parse arguments, train the chosen nets, write files to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m profit.train", description=__doc__.split("\n")[0])
    parser.add_argument("--net", default="all", choices=["all", *NETS], help="which network (default all)")
    parser.add_argument("--epochs", type=int, default=None, help="override every net's epoch count")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default networks/models)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    try:
        images, labels = load_mnist_test()
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_samples(images, labels, args.out)
    for name in NETS if args.net == "all" else [args.net]:
        run(NETS[name], images, labels, args.seed, args.out, args.epochs)
    (args.out / "README.md").write_text(_readme())
    return 0


if __name__ == "__main__":
    sys.exit(main())
