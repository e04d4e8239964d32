"""The networks and samples in networks/models: loadable, documented shapes, accurate enough."""

import gzip
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from networks.datasets import SAMPLES_PATH, load_mnist_idx, load_samples, shared_dir

MODELS = SAMPLES_PATH.parent
SHIPPED_NETS = {"mnist_mlp": 10, "mnist_conv": 10, "mnist_5v6": 2}  # name -> number of outputs
ALLOWED_OPS = {"Flatten", "Gemm", "Conv", "Relu"}


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", SHIPPED_NETS)
def test_shipped_net_loads_with_documented_interface(name: str) -> None:
    path = MODELS / f"{name}.onnx"
    assert path.stat().st_size < 2_000_000
    assert (MODELS / f"{name}.md").is_file()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {node.op_type for node in proto.graph.node} <= ALLOWED_OPS
    session = _session(name)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "input" and inp.shape == ["batch", 1, 28, 28]
    assert out.name == "logits" and out.shape == ["batch", SHIPPED_NETS[name]]


def test_samples_file_has_documented_contents() -> None:
    with np.load(SAMPLES_PATH) as data:
        assert set(data.files) == {"images", "labels", "source"}
        assert data["images"].shape == (100, 28, 28) and data["images"].dtype == np.uint8
        assert data["labels"].shape == (100,) and data["labels"].dtype == np.int64
        assert "never used for training" in str(data["source"])
    images, labels = load_samples()
    assert images.shape == (100, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (100,) and labels.dtype == np.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize("name", ["mnist_mlp", "mnist_conv"])
def test_ten_class_nets_accuracy_on_samples(name: str) -> None:
    images, labels = load_samples()
    logits = _session(name).run(None, {"input": images})[0]
    assert (logits.argmax(1) == labels).mean() >= 0.9


def test_5v6_accuracy_on_binarised_samples() -> None:
    images, labels = load_samples()
    keep = np.isin(labels, (5, 6))
    x = (images[keep] > 0.5).astype(np.float32)
    y = (labels[keep] == 6).astype(np.int64)  # class 0 = "5", class 1 = "6"
    assert len(y) >= 10
    logits = _session("mnist_5v6").run(None, {"input": x})[0]
    assert (logits.argmax(1) == y).mean() >= 0.9


def test_shared_mnist_first_100_are_the_shipped_samples() -> None:
    root = shared_dir()
    if root is None or not (root / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/data/mnist is absent (set PROFIT_SHARED to point at shared/)")
    mnist = root / "data" / "mnist"
    images, labels = load_mnist_idx(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    with np.load(SAMPLES_PATH) as data:
        np.testing.assert_array_equal(images[:100], data["images"])
        np.testing.assert_array_equal(labels[:100], data["labels"])


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> Path:
    header = np.array([magic, *dims], dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + payload))
    return path


def test_load_mnist_idx_small_file_and_bad_files(tmp_path: Path) -> None:
    pixels = bytes(range(2 * 3 * 4))
    imgs = _write_idx(tmp_path / "i.gz", 0x803, (2, 3, 4), pixels)
    labs = _write_idx(tmp_path / "l.gz", 0x801, (2,), bytes([7, 1]))
    images, labels = load_mnist_idx(imgs, labs)
    np.testing.assert_array_equal(images, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    np.testing.assert_array_equal(labels, [7, 1])
    assert labels.dtype == np.int64

    with pytest.raises(ValueError, match="magic"):
        load_mnist_idx(labs, imgs)
    truncated = _write_idx(tmp_path / "t.gz", 0x803, (2, 3, 4), pixels[:-1])
    with pytest.raises(ValueError, match="bytes"):
        load_mnist_idx(truncated, labs)
    three = _write_idx(tmp_path / "l3.gz", 0x801, (3,), bytes([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        load_mnist_idx(imgs, three)
    corrupt = tmp_path / "c.gz"
    corrupt.write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(ValueError, match="gzip"):
        load_mnist_idx(corrupt, labs)


def test_shipped_autoencoder_has_documented_interface() -> None:
    """mnist_ae (CEM's gamma term): small, carded, plain ops the IR reads, image in, flat image out in (0, 1)."""
    path = MODELS / "mnist_ae.onnx"
    assert path.stat().st_size < 1_000_000 and (MODELS / "mnist_ae.md").is_file()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {node.op_type for node in proto.graph.node} <= {"Conv", "Relu", "Reshape", "Transpose", "Sigmoid",
                                                          "Flatten"}
    session = _session("mnist_ae")
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "input" and inp.shape == ["batch", 1, 28, 28]
    assert out.name == "reconstruction" and out.shape == ["batch", 784]
    images, _ = load_samples()
    reconstruction = session.run(None, {"input": images})[0]
    assert reconstruction.min() > 0 and reconstruction.max() < 1
