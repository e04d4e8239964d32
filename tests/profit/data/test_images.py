"""Image sources: profit.data.load_images and fit_to_network.

Each source is written here in a tmp dir (or read from ../shared, skipped when absent)
and must give the same [0, 1] pixels and labels as the shipped samples.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from networks import MODELS_DIR, load_onnx
from networks.datasets import load_samples
from profit.errors import ProfitError
from profit.data import fit_to_network, load_images

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
MNIST_DIR = SHARED / "data" / "mnist"
CIFAR_CSV = SHARED / "data" / "cifar10" / "cifar10_test_first100.csv"


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not found (shared data absent)")


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    """The shipped samples as uint8 (N, 28, 28) and labels."""
    images, labels = load_samples()
    return np.round(images[:, 0] * 255).astype(np.uint8), labels


def _write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    head = np.array([0x803, len(images), 28, 28], dtype=">u4").tobytes()
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(head + images.tobytes()))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(np.array([0x801, len(labels)], dtype=">u4").tobytes() + labels.astype(np.uint8).tobytes()))
    return path


def _check(loaded, samples, offset: int = 0) -> None:
    pixels, labels = samples
    n = len(loaded)
    assert loaded.images.shape == (n, 1, 28, 28) and loaded.images.dtype == torch.float32
    assert np.allclose(loaded.images[:, 0].numpy() * 255, pixels[offset:offset + n], atol=1e-3)
    assert loaded.labels.tolist() == labels[offset:offset + n].tolist()
    assert loaded.indices == tuple(range(offset, offset + n))


def test_shipped_samples_are_the_default(samples) -> None:
    _check(load_images(), samples)
    _check(load_images("samples", count=3, offset=5), samples, offset=5)


def test_idx_file_and_directory(tmp_path: Path, samples) -> None:
    path = _write_idx(tmp_path / "idx", *samples)
    _check(load_images(path, count=7, offset=2), samples, offset=2)
    _check(load_images(tmp_path / "idx", count=4), samples)


def test_shared_idx_matches_the_samples(samples) -> None:
    _require(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    _check(load_images(MNIST_DIR / "t10k-images-idx3-ubyte.gz", count=10), samples)


def test_idx_without_labels_names_the_missing_file(tmp_path: Path, samples) -> None:
    path = _write_idx(tmp_path, *samples)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ProfitError, match="labels-idx1"):
        load_images(path)


def test_eran_csv_mnist(tmp_path: Path, samples) -> None:
    pixels, labels = samples
    path = tmp_path / "mnist.csv"
    path.write_text("\n".join(f"{l}," + ",".join(map(str, p.reshape(-1))) for p, l in zip(pixels[:5], labels)))
    _check(load_images(path), samples)


def test_eran_csv_cifar_is_hwc() -> None:
    _require(CIFAR_CSV)
    loaded = load_images(CIFAR_CSV, count=2)
    assert loaded.images.shape == (2, 3, 32, 32)
    first = [float(v) for v in CIFAR_CSV.read_text().splitlines()[0].split(",")]
    label, rgb = int(first[0]), np.array(first[1:]).reshape(32, 32, 3) / 255
    assert loaded.labels[0] == label
    assert np.allclose(loaded.images[0].numpy(), rgb.transpose(2, 0, 1), atol=1e-6)


def test_eran_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("1," + ",".join(["0"] * 784) + "\n2,x" + ",0" * 783 + "\n")
    with pytest.raises(ProfitError, match=r"bad\.csv:2"):
        load_images(path)
    path.write_text("1," + ",".join(["0"] * 10) + "\n")
    with pytest.raises(ProfitError, match="neither"):
        load_images(path)


def test_png_folder_labels_from_names_and_csv(tmp_path: Path, samples) -> None:
    pixels, labels = samples
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(12):  # natural order: 2 before 10
        Image.fromarray(pixels[i]).save(folder / f"{i}_label{labels[i]}.png")
    _check(load_images(folder), (pixels, labels))
    table = folder / "labels.csv"
    table.write_text("filename,label\n" + "".join(f"{i}_label{labels[i]}.png,{(labels[i] + 1) % 10}\n"
                                                  for i in range(12)))
    assert load_images(folder).labels.tolist() == [(l + 1) % 10 for l in labels[:12]]
    rgb = load_images(folder, channels=3)
    assert rgb.images.shape == (12, 3, 28, 28)


def test_png_without_label_is_an_error(tmp_path: Path, samples) -> None:
    Image.fromarray(samples[0][0]).save(tmp_path / "digit.png")
    with pytest.raises(ProfitError, match="no label"):
        load_images(tmp_path)


def test_npz_and_npy(tmp_path: Path, samples) -> None:
    pixels, labels = samples
    np.savez(tmp_path / "a.npz", images=pixels[:6], labels=labels[:6])
    _check(load_images(tmp_path / "a.npz"), samples)
    np.savez(tmp_path / "b.npz", x=pixels[:6, None].astype(np.float32) / 255, y=labels[:6])
    _check(load_images(tmp_path / "b.npz"), samples)
    np.save(tmp_path / "c.npy", pixels[:6, :, :, None])  # NHWC, uint8
    unlabelled = load_images(tmp_path / "c.npy")
    assert unlabelled.labels is None and unlabelled.images.shape == (6, 1, 28, 28)
    np.save(tmp_path / "c_labels.npy", labels[:6])
    _check(load_images(tmp_path / "c.npy"), samples)
    np.savez(tmp_path / "d.npz", pictures=pixels[:2])
    with pytest.raises(ProfitError, match="'images' and 'labels'"):
        load_images(tmp_path / "d.npz")


def test_bad_ranges_and_counts(tmp_path: Path) -> None:
    np.savez(tmp_path / "neg.npz", images=-np.ones((2, 4, 4), dtype=np.float32), labels=[0, 1])
    with pytest.raises(ProfitError, match="0..1 or 0..255"):
        load_images(tmp_path / "neg.npz")
    with pytest.raises(ProfitError, match="out of range"):
        load_images(offset=100)
    with pytest.raises(ProfitError, match="--count"):
        load_images(count=0)
    with pytest.raises(ProfitError, match="no such file"):
        load_images(tmp_path / "missing.csv")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ProfitError, match="unknown image source"):
        load_images(tmp_path / "x.txt")


def test_fit_to_network() -> None:
    net = load_onnx(MODELS_DIR / "mnist_mlp.onnx")
    images = load_images(count=2).images
    assert fit_to_network(images, net).shape == (2, 1, 28, 28)
    assert fit_to_network(images.reshape(2, 784), net).shape == (2, 1, 28, 28)
    with pytest.raises(ProfitError, match="3x32x32"):
        fit_to_network(torch.zeros(2, 3, 32, 32), net, "cifar")
