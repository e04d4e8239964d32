"""Image sources for every subcommand: labelled image sets scaled to [0, 1].

    images = load_images("../shared/data/mnist/t10k-images-idx3-ubyte.gz", count=50)
    images.images   # (N, C, H, W) float32 in [0, 1] (or (N, D) for flat arrays)
    images.labels   # (N,) long, or None: use the network's prediction as the label
    images.indices  # (N,) position of each image in its source

Sources (`source` is a path, or None / "samples" for the shipped samples):
- the shipped MNIST samples (networks/models/mnist_samples.npz; the default);
- MNIST IDX files: the images file (`*-images-idx3-ubyte[.gz]`), whose labels file
  (`images-idx3` -> `labels-idx1` in the name) must lie next to it, or a directory
  holding one such pair;
- ERAN CSV (`.csv`): one image per line, `label,p0,p1,...` with pixels 0..255;
  784 values are a 1x28x28 MNIST image, 3072 values a 32x32 RGB CIFAR-10 image in
  HWC order (r,g,b per pixel), transposed to CHW; other k*k or 3*k*k sizes alike;
- a folder of PNG/JPEG files, in natural filename order. Labels come from a
  `labels.csv` in the folder (lines `filename,label`; a header line is skipped) if
  there is one, else from the filename: the number after `label` (`3_label7.png`,
  `label7.png`, `img-label_7.png` -> 7). Images are read as grayscale when
  `channels` is 1 (or every file is grayscale), else as RGB;
- `.npz` with arrays `images` and `labels` (or `x` and `y`); `.npy` with images only,
  labelled by `labels.npy` or `<stem>_labels.npy` next to it if present, else by the
  network's prediction. Arrays are (N, H, W), (N, C, H, W), (N, H, W, C) with C in
  {1, 3} (moved to CHW), or flat (N, D).

Pixel scaling: IDX, CSV, picture files and integer arrays are divided by 255
(16-bit grayscale PNGs by 65535); a float array whose maximum exceeds 1 is taken as
0..255 and divided by 255 (decided on the whole array). Values outside [0, 1] after
scaling are an error. Every problem raises `ProfitError` naming the file.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from networks.datasets import SAMPLES_PATH, load_mnist_idx, load_samples
from networks.ir import Network
from profit.errors import ProfitError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LABEL_IN_NAME = re.compile(r"label[_-]?(\d+)", re.IGNORECASE)
_IDX_IMAGES = "images-idx3"
_IDX_LABELS = "labels-idx1"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images in [0, 1] and where they came from."""

    images: Tensor  # (N, *image_shape) float32 in [0, 1]
    labels: Tensor | None  # (N,) long, or None: label = the network's prediction
    indices: tuple[int, ...]  # position of each image in the source
    source: str  # what was loaded, for messages and output files

    def __len__(self) -> int:
        return self.images.shape[0]


def load_images(
    source: str | Path | None = None,
    count: int | None = None,
    offset: int = 0,
    channels: int | None = None,
) -> ImageSet:
    """Images `offset .. offset+count-1` of `source` (None: the shipped samples).

    channels: 1 or 3 to read picture files as grayscale / RGB (None: as stored).
    """
    if count is not None and count < 1:
        raise ProfitError(f"--count must be >= 1, got {count}")
    if offset < 0:
        raise ProfitError(f"--offset must be >= 0, got {offset}")
    if source is None or str(source) == "samples":
        images, labels, name = _shipped_samples()
    else:
        images, labels, name = _read_source(Path(source), channels)
    n = images.shape[0]
    if n == 0:
        raise ProfitError(f"{name}: holds no images")
    if offset >= n:
        raise ProfitError(f"--offset {offset} is out of range: {name} holds {n} images (0..{n - 1})")
    stop = n if count is None else min(n, offset + count)
    images = _to_unit_range(images[offset:stop], name)
    labels = None if labels is None else labels[offset:stop]
    return ImageSet(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        labels=None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        indices=tuple(range(offset, stop)),
        source=name,
    )


def fit_to_network(images: Tensor, net: Network, source: str = "images") -> Tensor:
    """images (N, *image_shape) reshaped to (N, *net.input_shape); a one-line error if they do not fit.

    Any layout with the same number of values fits (e.g. 1x28x28 images for a (784, 1) MLP);
    row-major order is kept.
    """
    shape = tuple(images.shape[1:])
    if shape == tuple(net.input_shape):
        return images
    want = math.prod(net.input_shape)
    if math.prod(shape) != want:
        raise ProfitError(f"{source}: images of shape {_fmt(shape)} ({math.prod(shape)} values) do not fit "
                          f"the network input {_fmt(net.input_shape)} ({want} values)")
    return images.reshape(images.shape[0], *net.input_shape)


def network_channels(net: Network) -> int | None:
    """1 or 3 if the network takes (C, H, W) images with that many channels, else None."""
    shape = net.input_shape
    return shape[0] if len(shape) == 3 and shape[0] in (1, 3) else None


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _shipped_samples() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        images, labels = load_samples()
    except FileNotFoundError:
        raise ProfitError(f"the shipped samples ({SAMPLES_PATH.name}) are missing") from None
    return images, labels, "samples"


def _read_source(path: Path, channels: int | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    name = str(path)
    if not path.exists():
        raise ProfitError(f"{name}: no such file or directory")
    if path.is_dir():
        if any(p.suffix.lower() in PICTURE_SUFFIXES for p in path.iterdir()):
            return (*_read_pictures(path, channels), name)
        idx = sorted(p for p in path.iterdir() if _IDX_IMAGES in p.name)
        if idx:
            return (*_read_idx(idx[0]), name)
        raise ProfitError(f"{name}: a directory without picture files or an MNIST *-images-idx3-ubyte file")
    lowered = path.name.lower()
    if _IDX_IMAGES in lowered:
        return (*_read_idx(path), name)
    if lowered.endswith(".csv"):
        return (*_read_eran_csv(path), name)
    if lowered.endswith(".npz"):
        return (*_read_npz(path), name)
    if lowered.endswith(".npy"):
        return (*_read_npy(path), name)
    if path.suffix.lower() in PICTURE_SUFFIXES:
        raise ProfitError(f"{name}: a single picture; give the folder that holds it "
                          f"(labels come from the filename or labels.csv)")
    raise ProfitError(f"{name}: unknown image source (expected an MNIST IDX file or directory, an ERAN .csv, "
                      f"a folder of PNG files, or a .npy/.npz array)")


def _read_idx(images_path: Path) -> tuple[np.ndarray, np.ndarray]:
    labels_path = images_path.with_name(images_path.name.replace(_IDX_IMAGES, _IDX_LABELS))
    if not labels_path.is_file():
        raise ProfitError(f"{images_path}: the labels file {labels_path.name} is not next to it")
    try:
        images, labels = load_mnist_idx(images_path, labels_path)
    except (OSError, ValueError) as exc:
        raise ProfitError(f"not a readable MNIST IDX pair: {exc}") from None
    return images[:, None, :, :] / 255.0, labels


def _square_side(n: int) -> int | None:
    k = math.isqrt(n)
    return k if k * k == n else None


def _read_eran_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """ERAN's `label,p0,...` lines: 784 values -> 1x28x28, 3072 (HWC) -> 3x32x32."""
    try:
        rows = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfitError(f"{path}: cannot read ({exc})") from None
    labels, pixels = [], []
    for number, line in enumerate(rows, 1):
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            raise ProfitError(f"{path}:{number}: expected numbers 'label,p0,p1,...'") from None
        if not values[0].is_integer() or values[0] < 0:
            raise ProfitError(f"{path}:{number}: the label {values[0]:g} is not a class number")
        labels.append(int(values[0]))
        pixels.append(values[1:])
    sizes = {len(p) for p in pixels}
    if len(sizes) != 1:
        raise ProfitError(f"{path}: lines hold different numbers of pixels ({sorted(sizes)})")
    n = sizes.pop()
    array = np.asarray(pixels, dtype=np.float64) / 255.0
    if _square_side(n):
        k = _square_side(n)
        return array.reshape(-1, 1, k, k), np.asarray(labels)
    if n % 3 == 0 and _square_side(n // 3):
        k = _square_side(n // 3)
        return array.reshape(-1, k, k, 3).transpose(0, 3, 1, 2), np.asarray(labels)
    raise ProfitError(f"{path}: {n} pixels per line is neither k*k (grayscale) nor 3*k*k (RGB, HWC)")


def _natural_key(path: Path) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name.lower())]


def _labels_csv(path: Path) -> dict[str, int]:
    labels: dict[str, int] = {}
    with path.open(newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ProfitError(f"{path}:{number}: expected 'filename,label'")
            name, label = row[0].strip(), row[1].strip()
            if not label.isdigit():
                if number == 1:
                    continue  # header
                raise ProfitError(f"{path}:{number}: the label {label!r} is not a class number")
            labels[name] = int(label)
    return labels


def _read_pictures(folder: Path, channels: int | None) -> tuple[np.ndarray, np.ndarray]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES), key=_natural_key)
    table = _labels_csv(folder / "labels.csv") if (folder / "labels.csv").is_file() else None
    labels, pictures = [], []
    for f in files:
        if table is not None:
            if f.name not in table:
                raise ProfitError(f"{f}: no label for it in {folder / 'labels.csv'}")
            labels.append(table[f.name])
        else:
            m = _LABEL_IN_NAME.search(f.stem)
            if m is None:
                raise ProfitError(f"{f}: no label in the filename (e.g. '3_label7.png') and no labels.csv "
                                  f"in the folder")
            labels.append(int(m.group(1)))
        pictures.append(_read_picture(f))
    gray = all(p.mode in ("L", "1", "I", "I;16", "LA") for p in pictures)
    mode = {1: "L", 3: "RGB"}.get(channels or 0, "L" if gray else "RGB")
    arrays = [_picture_array(p, mode) for p in pictures]
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise ProfitError(f"{folder}: the pictures differ in size ({', '.join(_fmt(s) for s in sorted(sizes))})")
    stacked = np.stack(arrays)
    return (stacked[:, None] if mode == "L" else stacked.transpose(0, 3, 1, 2)), np.asarray(labels)


def _read_picture(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProfitError(f"{path}: not a readable image ({reason})") from None


def _picture_array(image: Image.Image, mode: str) -> np.ndarray:
    """Pixels in [0, 1]: 16-bit grayscale by 65535, everything else via 8-bit `mode` by 255."""
    if image.mode in ("I", "I;16") and mode == "L":
        return np.asarray(image, dtype=np.float64) / 65535.0
    return np.asarray(image.convert(mode), dtype=np.float64) / 255.0


def _load_array(path: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProfitError(f"{path}: not a readable array file ({reason})") from None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _load_array(path)
    if isinstance(data, np.ndarray):
        raise ProfitError(f"{path}: a single array, expected an .npz archive with images and labels")
    with data:
        for xs, ys in (("images", "labels"), ("x", "y")):
            if xs in data.files and ys in data.files:
                images, labels = _as_images(data[xs], path), _as_labels(data[ys], path)
                break
        else:
            raise ProfitError(f"{path}: expected arrays 'images' and 'labels' (or 'x' and 'y'), "
                              f"found {', '.join(data.files) or 'none'}")
    if len(labels) != len(images):
        raise ProfitError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    data = _load_array(path)
    if not isinstance(data, np.ndarray):
        data.close()
        raise ProfitError(f"{path}: an .npz archive with a .npy name")
    images = _as_images(data, path)
    for candidate in (path.with_name(f"{path.stem}_labels.npy"), path.with_name("labels.npy")):
        if candidate.is_file() and candidate != path:
            labels = _as_labels(_load_array(candidate), candidate)
            if len(labels) != len(images):
                raise ProfitError(f"{candidate}: {len(labels)} labels for the {len(images)} images of {path}")
            return images, labels
    return images, None


def _as_images(array: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) with C in {1, 3} -> CHW; (N, C, H, W) and (N, D) kept."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ProfitError(f"{path}: the images are not a real-valued array")
    if array.ndim < 2:
        raise ProfitError(f"{path}: images must be (N, ...) with a leading image dimension, got {array.shape}")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[3] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.dtype.kind in "biu":
        return array.astype(np.float64) / 255.0
    array = array.astype(np.float64)
    finite = array[np.isfinite(array)]
    return array / 255.0 if finite.size and finite.max() > 1.0 else array


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    labels = np.asarray(array).reshape(-1)
    if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise ProfitError(f"{path}: labels must be class numbers >= 0")
    return labels.astype(np.int64)


def _to_unit_range(images: np.ndarray, name: str) -> np.ndarray:
    """Check that the (already scaled) pixels are finite and in [0, 1]."""
    images = np.asarray(images, dtype=np.float64)
    if not np.isfinite(images).all():
        raise ProfitError(f"{name}: the images hold NaN or infinite values")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ProfitError(f"{name}: pixel values must lie in 0..1 or 0..255, "
                          f"found {images.min() * 255:g}..{images.max() * 255:g} (in 0..255 units)")
    return images
