"""Turn what a user names on the command line into a network and network inputs.

    net = load_network("mnist_mlp")            # a shipped name or an ONNX path
    x = load_input("digit.png", net)           # (1, *net.input_shape), float32
    x, label = load_sample(3, net)             # the 4th shipped MNIST sample

Supported input files: PNG/JPEG images (grayscale for 1-channel networks, RGB for
3-channel ones, scaled by 1/255 to [0, 1], size exactly the network's H x W) and
.npy arrays (the network's input shape, with an optional leading batch dim of 1,
or flat). Every problem raises `ProfitError` with a one-line message naming the
file; nothing here prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from networks import MODELS_DIR, Network, load_onnx
from networks.datasets import load_samples
from profit.errors import ProfitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy",)


def load_network(name: str | Path) -> Network:
    """Load an ONNX file, or a shipped network by bare name (e.g. "mnist_mlp").

    A path that exists always wins over a shipped name; anything else goes to
    `load_onnx`, whose `NetworkError` names the missing file.
    """
    path = Path(name)
    if not path.exists() and path.name == str(name):
        shipped = MODELS_DIR / (path.name if path.suffix == ".onnx" else f"{path.name}.onnx")
        if shipped.is_file():
            path = shipped
    return load_onnx(path)


def load_input(path: str | Path, net: Network) -> Tensor:
    """One network input from an image or .npy file, as a (1, *net.input_shape) float32 tensor."""
    path = Path(path)
    if not path.exists():
        raise ProfitError(f"{path}: no such file")
    if path.is_dir():
        raise ProfitError(f"{path}: is a directory, expected an image or .npy file")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        array = _read_image(path, net)
    elif suffix in ARRAY_SUFFIXES:
        array = _read_array(path, net)
    else:
        raise ProfitError(
            f"{path}: unsupported input format '{suffix or path.name}' "
            f"(expected {', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)})")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(0)


def load_sample(index: int, net: Network) -> tuple[Tensor, int]:
    """The `index`-th shipped MNIST sample as a (1, *net.input_shape) tensor, and its label.

    The samples are 1x28x28 images in [0, 1]; any network input with 784 values
    takes them in row-major order (e.g. vnncomp's (784, 1) MLPs).
    """
    try:
        images, labels = load_samples()
    except FileNotFoundError:
        raise ProfitError("the shipped samples (networks/models/mnist_samples.npz) are missing") from None
    if not 0 <= index < len(images):
        raise ProfitError(f"sample index {index} is out of range: the {len(images)} shipped "
                          f"samples are numbered 0..{len(images) - 1}")
    image = images[index]
    if image.size != _numel(net):
        raise ProfitError(f"the shipped samples are {'x'.join(map(str, image.shape))} MNIST images, "
                          f"which do not fit the network input shape {net.input_shape}")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).reshape(1, *net.input_shape)
    return x, int(labels[index])


def _numel(net: Network) -> int:
    return int(np.prod(net.input_shape, dtype=np.int64))


def _image_layout(net: Network) -> tuple[str, int, int] | None:
    """(PIL mode, H, W) of the images the network takes, or None if its input is flat."""
    shape = net.input_shape
    if len(shape) == 3 and shape[0] in (1, 3):
        return ("L" if shape[0] == 1 else "RGB"), shape[1], shape[2]
    if len(shape) == 2 and 1 not in shape:
        return "L", shape[0], shape[1]
    return None


def _read_image(path: Path, net: Network) -> np.ndarray:
    """Pixels of an image file, scaled to [0, 1] and shaped like the network input."""
    layout = _image_layout(net)
    try:
        with Image.open(path) as image:
            mode = layout[0] if layout else "L"
            pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProfitError(f"{path}: not a readable image ({reason})") from None
    height, width = pixels.shape[:2]
    if layout is None:
        if height * width != _numel(net):
            raise ProfitError(
                f"{path}: a {width}x{height} image has {height * width} pixels but the network "
                f"input {net.input_shape} takes {_numel(net)} values")
        return pixels.reshape(net.input_shape)
    mode, want_h, want_w = layout
    if (height, width) != (want_h, want_w):
        raise ProfitError(
            f"{path}: image is {width}x{height} (width x height) but the network takes "
            f"{want_w}x{want_h} images (input shape {net.input_shape})")
    if mode == "RGB":
        return pixels.transpose(2, 0, 1)  # HWC -> CHW
    return pixels.reshape(net.input_shape)


def _read_array(path: Path, net: Network) -> np.ndarray:
    """A .npy array of the network's input shape, (1, *input_shape), or flat."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProfitError(f"{path}: not a readable .npy file ({reason})") from None
    if not isinstance(array, np.ndarray):
        raise ProfitError(f"{path}: holds several arrays (an .npz archive), expected one .npy array")
    if array.dtype.kind not in "biuf":
        raise ProfitError(f"{path}: array of dtype {array.dtype} is not real-valued")
    shape = tuple(array.shape)
    if shape not in (net.input_shape, (1, *net.input_shape)) and shape != (_numel(net),):
        raise ProfitError(
            f"{path}: array of shape {shape} does not fit the network input {net.input_shape} "
            f"(expected {net.input_shape}, {(1, *net.input_shape)} or ({_numel(net)},))")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported just below
        values = array.astype(np.float32).reshape(net.input_shape)
    if not np.isfinite(values).all():
        raise ProfitError(f"{path}: array holds NaN or infinite values "
                          f"(or values too large for float32)")
    return values
