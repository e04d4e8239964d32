"""Train the MNIST autoencoder of CEM's gamma term, export it to ONNX and write its model card.

    python -m profit.train.autoencoder [--epochs E] [--seed S] [--out networks/models]

The same data split as the shipped classifiers (`profit.train.classifiers`): trained on
MNIST test images 2,000-9,999, reconstruction error measured on images 0-1,999 (never
trained on). CPU, one thread, deterministic for a seed. A small fully convolutional
network: two stride-2 convolutions down to a 4 x 7 x 7 code, back up by convolutions and
pixel shuffles (depth to space: Reshape / Transpose in ONNX, so the project's IR runs it and
CEM differentiates through it), a sigmoid to [0, 1]. The output is flat (784,), as
`networks.export.to_onnx` writes it; CEM reshapes it to the image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from networks import MODELS_DIR
from networks.datasets import load_mnist_test
from networks.export import INPUT_NAME, to_onnx
from profit.train.classifiers import INPUT_SHAPE, N_SAMPLES, TEST_RANGE, TRAIN_RANGE, _seed_everything

NAME = "mnist_ae"
OUTPUT_NAME = "reconstruction"
EPOCHS = 12
LR = 1e-3
BATCH = 64
MAX_ONNX_DIFF = 1e-4
ARCHITECTURE = ("Conv 1->16 3x3 stride 2 pad 1 -> Relu -> Conv 16->32 3x3 stride 2 pad 1 -> Relu -> "
                "Conv 32->4 3x3 pad 1 (linear code 4x7x7) -> Conv 4->64 3x3 pad 1 -> Relu -> PixelShuffle 2 "
                "(16x14x14) -> Conv 16->16 3x3 pad 1 -> Relu -> Conv 16->4 3x3 pad 1 -> PixelShuffle 2 "
                "(1x28x28) -> Sigmoid -> Flatten")


def build() -> nn.Sequential:
    """The autoencoder (input (1, 28, 28), output (784,) in [0, 1]); convolutions He-initialised
    with zero biases (torch's default initialisation shrinks the signal over the seven
    convolutions and training collapses to the all-black output)."""
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 4, 3, padding=1),
        nn.Conv2d(4, 64, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 4, 3, padding=1), nn.PixelShuffle(2),
        nn.Sigmoid(), nn.Flatten(),
    )  # fmt: skip
    for module in model:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model


def _images(images: np.ndarray, part: tuple[int, int]) -> np.ndarray:
    return images[slice(*part)].astype(np.float32)[:, None] / 255.0


def mse(reconstruction: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per image: the mean squared pixel error ||x - AE(x)||^2 / 784."""
    return ((reconstruction.reshape(len(x), -1) - x.reshape(len(x), -1)) ** 2).mean(1)


def train(x: np.ndarray, seed: int, epochs: int = EPOCHS, log=print) -> nn.Sequential:
    """Adam on the mean squared pixel error, cosine-annealed, batch 64; deterministic for `seed`."""
    rng = _seed_everything(seed)
    model = build()
    optim = torch.optim.Adam(model.parameters(), lr=LR)
    steps = epochs * -(-len(x) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=steps)
    xt = torch.from_numpy(x)
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), BATCH):
            xb = xt[order[start:start + BATCH]]
            loss = (model(xb) - xb.reshape(len(xb), -1)).pow(2).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            total += loss.item() * len(xb)
        log(f"  {NAME} epoch {epoch + 1}/{epochs}: MSE per pixel {total / len(x):.5f}")
    return model.eval()


def _card(path: Path, seed: int, epochs: int, n_train: int, held_out: np.ndarray, samples: np.ndarray,
          seconds: float) -> str:
    command = "python -m profit.train.autoencoder" + (f" --seed {seed}" if seed else "") + (
        f" --epochs {epochs}" if epochs != EPOCHS else "")
    return f"""# {NAME}

Convolutional autoencoder of MNIST digits for the gamma term of CEM (`profit cem --gamma G --ae {NAME}`):
it scores how close an explanation stays to the data manifold, ||x - AE(x)||^2. Trained by
`profit/train/autoencoder.py`.

| | |
|---|---|
| file | `{path.name}` ({path.stat().st_size:,} bytes) |
| format | ONNX, opset 13, float32, written with `networks.export.to_onnx` (no torch exporter) |
| input | `input`: [batch, 1, 28, 28], values in [0, 1] |
| output | `{OUTPUT_NAME}`: [batch, 784], values in (0, 1) (the image in row-major order) |
| architecture | {ARCHITECTURE} |
| parameters | {sum(p.numel() for p in build().parameters()):,} |

## Data
The 10,000-image MNIST **test** set (`../shared/data/mnist/t10k-*.gz`; MNIST by LeCun, Cortes and
Burges, CC BY-SA 3.0), split as for the shipped classifiers:
- training: test images {TRAIN_RANGE[0]:,}-{TRAIN_RANGE[1] - 1:,}, all digits ({n_train:,} images), labels unused;
- held-out evaluation: test images {TEST_RANGE[0]}-{TEST_RANGE[1] - 1:,} ({len(held_out):,} images), never trained on.

Preprocessing: pixels scaled to [0, 1] (value / 255).

## Training
- loss: mean squared pixel error
- optimiser: Adam, lr {LR} cosine-annealed to 0 per step, batch {BATCH}, no augmentation; He initialisation
- epochs: {epochs}; seed {seed}; CPU, one thread, `torch.use_deterministic_algorithms(True)`
- hyper-parameters set once, without tuning on the held-out images
- training time: {seconds:.0f} s on one CPU core (torch {torch.__version__})

Command (from the repository root):
```
{command}
```

## Results (onnxruntime on the exported file)
| | |
|---|---|
| held-out reconstruction MSE per pixel (test images 0-1,999), mean | **{held_out.mean():.5f}** |
| held-out reconstruction MSE per pixel, 95th percentile | {np.quantile(held_out, 0.95):.5f} |
| held-out squared error per image ‖x − AE(x)‖², mean | {held_out.mean() * 784:.2f} |
| shipped samples (test images 0-{N_SAMPLES - 1}) MSE per pixel, mean | {samples.mean():.5f} |

The exported ONNX agrees with the torch model to within {MAX_ONNX_DIFF:g} (max abs difference) on the
held-out set; training refuses to write the card otherwise.
"""


def run(seed: int, out: Path, epochs: int = EPOCHS) -> float:
    """Train, export, check and document the autoencoder; returns its held-out MSE per pixel."""
    images, _ = load_mnist_test()
    x_train, x_test = _images(images, TRAIN_RANGE), _images(images, TEST_RANGE)
    start = time.perf_counter()
    model = train(x_train, seed, epochs)
    seconds = time.perf_counter() - start
    path = out / f"{NAME}.onnx"
    to_onnx(model, INPUT_SHAPE, path, name=NAME, output_name=OUTPUT_NAME)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x_test})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x_test)).numpy()
    diff = float(np.abs(got - expected).max())
    if diff >= MAX_ONNX_DIFF:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff:.2e} >= {MAX_ONNX_DIFF}")
    held_out = mse(got, x_test)
    samples = held_out[:N_SAMPLES]
    (out / f"{NAME}.md").write_text(_card(path, seed, epochs, len(x_train), held_out, samples, seconds))
    print(f"{NAME}: held-out MSE per pixel {held_out.mean():.5f}, onnx diff {diff:.1e}, "
          f"{path.stat().st_size:,} bytes, {seconds:.0f} s")
    return float(held_out.mean())


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: train the autoencoder and write it with its card to `--out`."""
    parser = argparse.ArgumentParser(prog="python -m profit.train.autoencoder", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs (default {EPOCHS})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output directory (default networks/models)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    try:
        load_mnist_test()
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.seed, args.out, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
