"""MNIST loading: the IDX files in ``../shared`` and the 100 samples the project ships.

The project must work from a fresh clone, so everything it needs at run time comes
from ``networks/models/mnist_samples.npz`` (MNIST test images 0-99, never used for
training). The full 10k test set in ``../shared/data/mnist`` is only for training
(``profit.train``), tests and benchmarks, which skip when it is absent.
"""

import gzip
import os
from pathlib import Path

import numpy as np

SAMPLES_PATH = Path(__file__).resolve().parent / "models" / "mnist_samples.npz"
_IMAGES_MAGIC = 0x00000803  # IDX: unsigned byte data, 3 dims
_LABELS_MAGIC = 0x00000801  # IDX: unsigned byte data, 1 dim
_GZIP_MAGIC = b"\x1f\x8b"


def _read_idx_bytes(path: str | Path) -> bytes:
    """The decompressed bytes of an IDX file (gzip or, if not gzip-compressed, raw)."""
    raw = Path(path).read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: corrupt gzip data ({err})") from err


def _parse_idx(path: str | Path, magic: int, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file with the given magic number and rank."""
    data = _read_idx_bytes(path)
    header_len = 4 + 4 * ndim
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        got = "none (file shorter than 4 bytes)" if found is None else f"0x{found:08x}"
        raise ValueError(f"{path}: bad IDX magic number {got}, expected 0x{magic:08x}")
    if len(data) < header_len:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    n_values = int(np.prod(shape))
    if len(data) - header_len != n_values:
        raise ValueError(
            f"{path}: header says shape {shape} ({n_values} bytes) "
            f"but the file holds {len(data) - header_len} bytes of data"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def load_mnist_idx(images_gz: str | Path, labels_gz: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST image/label pair of IDX files (gzip-compressed, as distributed).

    Returns images uint8 (N, 28, 28) with values 0..255 and labels int64 (N,).
    Raises ValueError for a wrong magic number, a truncated file or mismatched counts.
    """
    images = _parse_idx(images_gz, _IMAGES_MAGIC, 3)
    labels = _parse_idx(labels_gz, _LABELS_MAGIC, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{images_gz} has {len(images)} images but {labels_gz} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_gz}: labels must be digits 0-9, found {labels.max()}")
    return images, labels


def shared_dir() -> Path | None:
    """The shared data directory: ``$PROFIT_SHARED`` if set, else ``../shared`` next to the repo.

    None if that directory does not exist (e.g. a fresh clone), so callers can skip.
    """
    env = os.environ.get("PROFIT_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    return path if path.is_dir() else None


def load_mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The full 10k MNIST test set from the shared directory (uint8 images, int64 labels).

    Raises FileNotFoundError, naming where it looked, if the shared data is absent.
    """
    root = shared_dir()
    mnist = (root / "data" / "mnist") if root is not None else None
    if mnist is None or not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(
            "MNIST test set not found: expected ../shared/data/mnist/t10k-*.gz "
            "next to the repository, or set PROFIT_SHARED"
        )
    return load_mnist_idx(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz")


def load_samples() -> tuple[np.ndarray, np.ndarray]:
    """The 100 shipped MNIST samples (test images 0-99, never used for training).

    Returns images float32 (100, 1, 28, 28) scaled to [0, 1] and labels int64 (100,).
    """
    with np.load(SAMPLES_PATH) as data:
        images = data["images"].astype(np.float32)[:, None, :, :] / 255.0
        labels = data["labels"].astype(np.int64)
    return images, labels
