"""Rebuild ProFIt's PyTorch state-dict networks and export them to ONNX.

    python -m networks.profit_zoo [--src ../shared/networks/profit] [--out networks/models/profit]

ProFIt ("Interpreting Robustness Proofs of Deep Neural Networks", ICLR 2024) published four
of its networks as bare PyTorch state dicts. A state dict has weights but no architecture,
so each is rebuilt here *from the shapes of its weights* and checked against them:

- CROWN-IBP model zoo `cnn_2layer` (Zhang et al., ICLR 2020): Conv(in -> 4w, 4x4, stride 2,
  pad 1) -> ReLU -> Conv(4w -> 8w, 4x4, stride 2, pad 1) -> ReLU -> Flatten ->
  FC(8w * (H/4)^2 -> L) -> ReLU -> FC(L -> 10); `mnist_cnn_2layer_width_1_best.pth` (w = 1,
  L = 128) and `cifar_cnn_2layer_width_2_best.pth` (w = 2, L = 256);
- ProFIt's "modified" template: Conv(1 -> 32, 5x5, stride 2, pad 2) -> ReLU -> Conv(32 -> 64,
  4x4, stride 2, pad 1) -> ReLU -> FC 3136 -> 100 -> ReLU -> FC 100 -> 10;
  `mnist_cnn_2layer_width_1_best_modified.pth` and `mnist_standard_modified.pt`.

Both templates are "two stride-2 convolutions with padding (k - 1) // 2, then two dense
layers", so one builder reads channels, kernel sizes and widths from the state dict
(keys 0, 2, 5, 7 of the original nn.Sequential). Inputs are pixels in [0, 1]: ProFIt feeds
MNIST unnormalised (mean 0, std 1) and normalises CIFAR-10 with the CROWN-IBP statistics,
which the CIFAR export carries as a Sub/Div (`networks.export.Normalize`) so that every
exported file takes [0, 1] images. Each export is checked against the torch model with
onnxruntime, and its accuracy on the evaluation images is written to the README.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from networks.datasets import load_mnist_idx, shared_dir
from networks.export import INPUT_NAME, Normalize, to_onnx

DEFAULT_OUT = Path(__file__).resolve().parent / "models" / "profit"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # CROWN-IBP / ProFIt (src/specs/spec.py get_mean_std)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
MAX_ONNX_DIFF = 1e-4  # max |onnxruntime - torch| logit difference before we refuse


@dataclass(frozen=True)
class ZooEntry:
    """One published state dict: its file, input shape and input normalisation."""

    file: str
    input_shape: tuple[int, int, int]
    template: str  # for the README
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        return self.file.rsplit(".", 1)[0]


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("mnist_cnn_2layer_width_1_best.pth", (1, 28, 28), "CROWN-IBP cnn_2layer, width 1, linear 128"),
    ZooEntry("mnist_cnn_2layer_width_1_best_modified.pth", (1, 28, 28), "ProFIt modified 32/64 conv"),
    ZooEntry("mnist_standard_modified.pt", (1, 28, 28), "ProFIt modified 32/64 conv"),
    ZooEntry("cifar_cnn_2layer_width_2_best.pth", (3, 32, 32), "CROWN-IBP cnn_2layer, width 2, linear 256",
             CIFAR_MEAN, CIFAR_STD),
)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a ProFIt checkpoint: a bare state dict or {'state_dict': ...}."""
    # the checkpoints also hold numpy scalars (the error rates): allow exactly those
    scalar = (getattr(np, "_core", None) or np.core).multiarray.scalar  # numpy 2 renamed np.core
    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, *{type(np.dtype(t)) for t in ("f4", "f8", "i8")}]
    with torch.serialization.safe_globals(allowed):
        data = torch.load(path, map_location="cpu", weights_only=True)
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a PyTorch state dict")
    return state


def build_from_state_dict(state: dict[str, torch.Tensor], input_shape: tuple[int, int, int]) -> nn.Sequential:
    """Two stride-2 convolutions and two dense layers, sized from the weight shapes.

    Raises ValueError when the shapes do not fit that template (e.g. the flattened
    convolution output does not match the first dense layer's input width)."""
    expected = ["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias", "7.weight", "7.bias"]
    if sorted(state) != sorted(expected):
        raise ValueError(f"unexpected state dict keys {sorted(state)} (expected {expected})")
    c_in, height, width = input_shape
    (c1, c1_in, k1, _), (c2, c2_in, k2, _) = state["0.weight"].shape, state["2.weight"].shape
    hidden, flat = state["5.weight"].shape
    classes, hidden_in = state["7.weight"].shape
    out_h, out_w = height // 4, width // 4
    if (c1_in, c2_in, hidden_in) != (c_in, c1, hidden) or flat != c2 * out_h * out_w:
        raise ValueError(f"state dict shapes do not fit two stride-2 convs on {input_shape}: "
                         f"{ {k: tuple(v.shape) for k, v in state.items()} }")
    model = nn.Sequential(
        nn.Conv2d(c_in, c1, k1, stride=2, padding=(k1 - 1) // 2), nn.ReLU(),
        nn.Conv2d(c1, c2, k2, stride=2, padding=(k2 - 1) // 2), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(flat, hidden), nn.ReLU(),
        nn.Linear(hidden, classes),
    )  # fmt: skip
    model.load_state_dict(state)
    with torch.no_grad():
        shape = model[:4](torch.zeros(1, *input_shape)).shape[1:]
    if tuple(shape) != (c2, out_h, out_w):
        raise ValueError(f"convolution output {tuple(shape)} != expected {(c2, out_h, out_w)}")
    return model.eval()


def rebuild(entry: ZooEntry, src: Path) -> nn.Sequential:
    """The torch model of `entry` (with its input normalisation in front, if any)."""
    model = build_from_state_dict(load_state_dict(src / entry.file), entry.input_shape)
    if entry.mean is not None:
        return nn.Sequential(Normalize(entry.mean, entry.std), *model).eval()
    return model


def _eval_images(input_shape: tuple[int, ...], root: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Evaluation images in [0, 1]: MNIST test 0-499, or the 100 CIFAR-10 images of shared/."""
    if input_shape[0] == 1:
        mnist = root / "data" / "mnist"
        x, y = load_mnist_idx(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz")
        return x[:500, None].astype(np.float32) / 255, y[:500], "MNIST test images 0-499"
    rows = np.loadtxt(root / "data" / "cifar10" / "cifar10_test_first100.csv", delimiter=",", dtype=np.float32)
    x = rows[:, 1:].reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2) / 255
    return np.ascontiguousarray(x), rows[:, 0].astype(np.int64), "CIFAR-10 test images 0-99"


def export(entry: ZooEntry, src: Path, out: Path, root: Path) -> tuple[Path, float, str]:
    """Rebuild, export and check one network; returns (path, accuracy, evaluation set)."""
    model = rebuild(entry, src)
    path = out / f"{entry.name}.onnx"
    to_onnx(model, entry.input_shape, path, name=entry.name)
    x, y, what = _eval_images(entry.input_shape, root)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x})[0]
    diff = float(np.abs(got - expected).max())
    if diff >= MAX_ONNX_DIFF:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff:.2e}")
    return path, float((got.argmax(1) == y).mean()), what


def _readme(rows: list[tuple[ZooEntry, Path, float, str]]) -> str:
    table = "".join(
        f"| `{p.name}` | `{e.file}` | {e.template} | {'CIFAR mean/std Sub/Div' if e.mean else 'none'} | "
        f"{acc:.3f} on {what} | {p.stat().st_size:,} |\n"
        for e, p, acc, what in rows)
    return f"""# ProFIt's state-dict networks, as ONNX

Written by `python -m networks.profit_zoo` from the PyTorch state dicts published with
ProFIt ("Interpreting Robustness Proofs of Deep Neural Networks", ICLR 2024; copies in
`../shared/networks/profit/`). The architectures are rebuilt from the weight shapes (see the
module docstring of `networks/profit_zoo.py`); inputs are pixels in [0, 1]. The originals carry
no licence statement; they are here only to compare proof features with ProFIt's results.

| file | from | architecture | normalisation | accuracy | bytes |
|---|---|---|---|---|---|
{table}
Each file agrees with the rebuilt torch model to within {MAX_ONNX_DIFF:g} (onnxruntime).
`comparison.png` is the proof-feature comparison figure (rows = MNIST test images 0-3,
columns = image | one network per training method; aggregate gradient maps of the kept proof
features, CROWN, eps 0.02), written by
`python -m benchmarks.features --figure networks/models/profit/comparison.png`.
"""


def main(argv: list[str] | None = None) -> int:
    """Export every network of ZOO and write the README next to them."""
    parser = argparse.ArgumentParser(prog="python -m networks.profit_zoo", description=__doc__.split("\n")[0])
    root = shared_dir()
    parser.add_argument("--src", type=Path, default=None if root is None else root / "networks" / "profit",
                        help="directory of the state dicts (default ../shared/networks/profit)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default %(default)s)")
    args = parser.parse_args(argv)
    if root is None or args.src is None or not args.src.is_dir():
        print("error: ../shared (networks/profit and data/) not found; set PROFIT_SHARED", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for entry in ZOO:
        path, acc, what = export(entry, args.src, args.out, root)
        print(f"{path}: accuracy {acc:.3f} on {what}")
        rows.append((entry, path, acc, what))
    (args.out / "README.md").write_text(_readme(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
