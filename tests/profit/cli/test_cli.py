"""The `profit` CLI: `info` and `run`, in-process via `main([...])` and as a real process.

Every expected error must print exactly one line `profit: error: ...` on stderr,
nothing on stdout, and return exit code 2 — never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from networks import MODELS_DIR, load_onnx
from networks.datasets import SAMPLES_PATH
from profit.cli import main

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared"
MNIST_01 = SHARED / "networks" / "profit" / "mnist_0.1.onnx"
MNISTFC = SHARED / "benchmarks" / "vnncomp2021" / "mnistfc" / "mnist-net_256x2.onnx"
CIFAR_NET = SHARED / "networks" / "profit" / "convSmall_pgd_cifar.onnx"
CIFAR_CSV = SHARED / "data" / "cifar10" / "cifar10_test_first100.csv"
SHIPPED_MLP = MODELS_DIR / "mnist_mlp.onnx"


def _require(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            pytest.skip(f"{path} not found")


@pytest.fixture(params=["shipped", "shared"])
def mnist_net(request: pytest.FixtureRequest) -> Path:
    """An MNIST classifier taking (1, 28, 28): the shipped MLP and ProFIt's mnist_0.1 (fixed batch 1)."""
    path = SHIPPED_MLP if request.param == "shipped" else MNIST_01
    _require(path, SAMPLES_PATH)
    return path


@pytest.fixture
def any_net() -> Path:
    """Some MNIST network, for error cases that do not depend on which."""
    for path in (SHIPPED_MLP, MNIST_01):
        if path.exists():
            return path
    pytest.skip("no MNIST network (shipped or shared) found")


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit code 2, nothing on stdout, one line `profit: error: ...` containing `fragments`."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("profit: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's output for one sample x (any shape with the right number of values)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dims = [1 if isinstance(d, str) or d is None else d for d in feed.shape]
    return session.run(None, {feed.name: x.astype(np.float32).reshape(dims)})[0].reshape(-1)


def _sample(k: int) -> np.ndarray:
    """The k-th shipped sample as uint8 (28, 28)."""
    with np.load(SAMPLES_PATH) as data:
        return data["images"][k]


def _run_json(capsys: pytest.CaptureFixture[str], *argv: object) -> dict:
    code, out, err = _cli(capsys, "run", *argv, "--json")
    assert code == 0 and err == "", err
    assert len(out.splitlines()) == 1
    result = json.loads(out)
    assert set(result) == {"predicted", "logits"}
    return result


def _assert_logits(got: list[float], ref: np.ndarray) -> None:
    got_arr = np.asarray(got)
    assert got_arr.shape == ref.shape
    assert np.abs(got_arr - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


# ---------------------------------------------------------------------------- info
def test_info_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    _require(SHIPPED_MLP)
    net = load_onnx(SHIPPED_MLP)
    code, out, err = _cli(capsys, "info", SHIPPED_MLP)
    assert code == 0 and err == ""
    assert "Linear (Gemm)" in out and "Relu" in out
    assert f"parameters:   {net.n_params():,}" in out
    assert f"nodes:        {len(net)}" in out
    assert "input shape:  (1, 28, 28)" in out and "output shape: (10,)" in out
    assert str(SHIPPED_MLP) in out
    table = out.split("\n\n")[0].splitlines()
    assert len(table) == 1 + len(net)  # header + one row per IR node
    for i, node in enumerate(net.nodes):
        assert table[i + 1].split()[:2] == [str(i), node.name]


def test_info_by_shipped_name(capsys: pytest.CaptureFixture[str]) -> None:
    _require(SHIPPED_MLP)
    assert _cli(capsys, "info", "mnist_mlp")[1] == _cli(capsys, "info", SHIPPED_MLP)[1]


def test_info_mnist_01(capsys: pytest.CaptureFixture[str]) -> None:
    """ProFIt's torch-exported net: Shape/Gather/Unsqueeze/Concat folded into one Reshape."""
    _require(MNIST_01)
    code, out, err = _cli(capsys, "info", MNIST_01)
    assert code == 0 and err == ""
    assert "Conv" in out and "Reshape" in out and "Linear (Gemm)" in out
    assert "Shape" not in out and "Gather" not in out
    assert "(64, 7, 7)" in out and "(3136,)" in out
    assert f"parameters:   {load_onnx(MNIST_01).n_params():,}" in out


# ----------------------------------------------------------------------------- run
def test_run_sample_json(capsys: pytest.CaptureFixture[str], mnist_net: Path) -> None:
    for k in (0, 7, 99):
        result = _run_json(capsys, mnist_net, "--sample", k)
        assert result["predicted"] == int(np.argmax(result["logits"]))
        _assert_logits(result["logits"], _ort_logits(mnist_net, _sample(k) / np.float32(255)))


def test_run_sample_text(capsys: pytest.CaptureFixture[str], mnist_net: Path) -> None:
    code, out, err = _cli(capsys, "run", mnist_net, "--sample", 3)
    assert code == 0 and err == ""
    predicted = json.loads(_cli(capsys, "run", mnist_net, "--sample", 3, "--json")[1])["predicted"]
    assert f"predicted: {predicted}\n" in out
    logits_line = next(line for line in out.splitlines() if line.startswith("logits: "))
    values = logits_line.removeprefix("logits: [").removesuffix("]").split(", ")
    assert len(values) == 10 and all(len(v.split(".")[1]) == 4 for v in values)


def test_run_png_matches_sample(capsys: pytest.CaptureFixture[str], mnist_net: Path, tmp_path: Path) -> None:
    for k in (0, 1, 2):
        png = tmp_path / f"sample_{k}.png"
        Image.fromarray(_sample(k), mode="L").save(png)
        from_png = _run_json(capsys, mnist_net, png)
        from_sample = _run_json(capsys, mnist_net, "--sample", k)
        assert from_png == from_sample


def test_run_rgb_png_on_cifar_net(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """RGB images go to CHW order: the PNG of a CIFAR test image gives onnxruntime's logits."""
    _require(CIFAR_NET, CIFAR_CSV)
    row = np.loadtxt(CIFAR_CSV, delimiter=",", dtype=np.int64, max_rows=1)
    hwc = row[1:].reshape(32, 32, 3).astype(np.uint8)
    png = tmp_path / "cifar.png"
    Image.fromarray(hwc, mode="RGB").save(png)
    result = _run_json(capsys, CIFAR_NET, png)
    _assert_logits(result["logits"], _ort_logits(CIFAR_NET, hwc.transpose(2, 0, 1) / np.float32(255)))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 1, 28, 28), (784,)], ids=["input", "batch1", "flat"])
def test_run_npy(capsys: pytest.CaptureFixture[str], mnist_net: Path, tmp_path: Path,
                 shape: tuple[int, ...]) -> None:
    path = tmp_path / "x.npy"
    np.save(path, (_sample(5) / np.float32(255)).reshape(shape))
    assert _run_json(capsys, mnist_net, path) == _run_json(capsys, mnist_net, "--sample", 5)


def test_run_npy_outside_unit_interval(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path) -> None:
    """A network takes any real input; only images are confined to [0, 1]."""
    path = tmp_path / "x.npy"
    x = np.random.default_rng(0).normal(0.0, 3.0, (1, 28, 28))
    np.save(path, x)
    _assert_logits(_run_json(capsys, any_net, path)["logits"], _ort_logits(any_net, x))


def test_run_sample_on_flat_mnist_net(capsys: pytest.CaptureFixture[str]) -> None:
    """vnncomp's mnistfc nets take (784, 1): samples go in row-major order."""
    _require(MNISTFC, SAMPLES_PATH)
    result = _run_json(capsys, MNISTFC, "--sample", 4)
    _assert_logits(result["logits"], _ort_logits(MNISTFC, _sample(4) / np.float32(255)))


# -------------------------------------------------------------------------- errors
def _truncated(source: Path, tmp_path: Path) -> Path:
    path = tmp_path / "truncated.onnx"
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_error_missing_network(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "missing.onnx"
    _assert_user_error(_cli(capsys, "info", path), str(path), "no such file")
    _assert_user_error(_cli(capsys, "run", path, "--sample", 0), str(path))


def test_error_random_bytes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_user_error(_cli(capsys, "info", path), str(path))
    _assert_user_error(_cli(capsys, "run", path, "--sample", 0), str(path))


def test_error_text_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a network\nat all\n")
    _assert_user_error(_cli(capsys, "info", path), str(path))


def test_error_truncated_onnx(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path) -> None:
    path = _truncated(any_net, tmp_path)
    _assert_user_error(_cli(capsys, "info", path), str(path))


def test_error_unsupported_op(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="probs")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])])
    path = tmp_path / "softmax.onnx"
    save(helper.make_model(graph), str(path))
    _assert_user_error(_cli(capsys, "info", path), "Softmax", "probs", str(path))


def test_error_wrong_image_size(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path) -> None:
    png = tmp_path / "wide.png"
    Image.fromarray(np.zeros((28, 30), dtype=np.uint8), mode="L").save(png)
    _assert_user_error(_cli(capsys, "run", any_net, png), str(png), "30x28", "28x28")


def test_error_unreadable_image(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path) -> None:
    png = tmp_path / "broken.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(100))
    _assert_user_error(_cli(capsys, "run", any_net, png), str(png), "not a readable image")


@pytest.mark.parametrize("shape", [(28, 27), (2, 1, 28, 28), (783,), (28, 28, 1)], ids=str)
def test_error_wrong_npy_shape(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path,
                               shape: tuple[int, ...]) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(shape, dtype=np.float32))
    _assert_user_error(_cli(capsys, "run", any_net, path), str(path), str(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300], ids=["nan", "inf", "-inf", "overflow"])
def test_error_non_finite_npy(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path,
                              bad: float) -> None:
    path = tmp_path / "x.npy"
    x = np.zeros((1, 28, 28))
    x[0, 3, 4] = bad
    np.save(path, x)
    _assert_user_error(_cli(capsys, "run", any_net, path), str(path), "NaN or infinite")


def test_error_bad_npy_content(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy")
    _assert_user_error(_cli(capsys, "run", any_net, garbage), str(garbage))
    strings = tmp_path / "strings.npy"
    np.save(strings, np.array(["a"] * 784))
    _assert_user_error(_cli(capsys, "run", any_net, strings), str(strings))


@pytest.mark.parametrize("k", [100, -1, 10**6])
def test_error_sample_out_of_range(capsys: pytest.CaptureFixture[str], any_net: Path, k: int) -> None:
    _require(SAMPLES_PATH)
    _assert_user_error(_cli(capsys, "run", any_net, "--sample", k), str(k), "0..99")


@pytest.mark.parametrize("argv", [
    ["run", "{net}"], ["run", "{net}", "x.npy", "--sample", "0"], ["run", "{net}", "--sample", "zero"],
    [], ["frobnicate"], ["run"],
], ids=["no-input", "both-inputs", "non-int-sample", "no-command", "unknown-command", "no-net"])
def test_error_bad_arguments(capsys: pytest.CaptureFixture[str], any_net: Path, argv: list[str]) -> None:
    _assert_user_error(_cli(capsys, *(a.format(net=any_net) for a in argv)))


def test_error_unsupported_input_format(capsys: pytest.CaptureFixture[str], any_net: Path, tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_text("0.5\n")
    _assert_user_error(_cli(capsys, "run", any_net, path), str(path), "unsupported input format")
    _assert_user_error(_cli(capsys, "run", any_net, tmp_path / "absent.png"), "no such file")


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--help")
    assert code == 0 and "info" in out and "run" in out
    code, out, _ = _cli(capsys, "--version")
    assert code == 0 and out.strip() == "profit 0.1.0"


# ------------------------------------------------------------------- real process
def _process(*argv: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "profit", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def _assert_process_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("profit: error: ") and fragment in lines[0], proc.stderr


def test_process_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.onnx"
    _assert_process_error(_process("info", path), str(path))


def test_process_truncated_onnx(any_net: Path, tmp_path: Path) -> None:
    path = _truncated(any_net, tmp_path)
    _assert_process_error(_process("run", path, "--sample", "0", "--json"), str(path))


def test_process_run_json(any_net: Path) -> None:
    _require(SAMPLES_PATH)
    proc = _process("run", any_net, "--sample", "0", "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    result = json.loads(proc.stdout)
    assert result["predicted"] == int(np.argmax(result["logits"]))
