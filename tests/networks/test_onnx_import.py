"""ONNX -> IR import: the IR forward must match onnxruntime to 1e-5 (relative).

Three parts:
- acceptance: every ONNX network in ../shared (ProFIt nets, vnncomp2021 mnistfc,
  acasxu and test) and every shipped network, on random inputs from the valid
  input range and on real MNIST/CIFAR images;
- op coverage: one small onnx.helper model per supported op and attribute variant
  (opsets 10-17), compared with onnxruntime on random batched inputs;
- errors: unsupported ops, bad attributes, unreadable files and wrong input shapes
  raise `NetworkError`/`UnsupportedOpError` with a one-line message that names
  the op, the node and the file.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from networks import MODELS_DIR, Network, NetworkError, UnsupportedOpError, from_model, load_onnx
from networks.ir import Affine, Linear

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VNNCOMP = SHARED / "benchmarks" / "vnncomp2021"
VNNCOMP2022 = SHARED / "benchmarks" / "vnncomp2022"
MNIST_CSV = SHARED / "data" / "mnist" / "mnist_test_first100.csv"
CIFAR_CSV = SHARED / "data" / "cifar10" / "cifar10_test_first100.csv"
RTOL = 1e-5
N_RANDOM = 100


# ----------------------------------------------------------------------------- helpers
def _session(model: str | Path | bytes) -> ort.InferenceSession:
    """A cheap single-threaded CPU session that does not log warnings."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _ort_forward(session: ort.InferenceSession, net: Network, x: np.ndarray) -> np.ndarray:
    """onnxruntime's outputs for the batch x (B, *net.input_shape), stacked to (B, ...).

    A fixed batch of 1 is fed one sample at a time, an unbatched input one sample
    without batch dim at a time, a symbolic batch all at once.
    """
    feed = session.get_inputs()[0]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not net.has_batch_dim:
        return np.stack([session.run(None, {feed.name: x[i]})[0] for i in range(len(x))])
    onnx_shape = (len(x), *net.onnx_input_shape[1:])
    x = x.reshape(onnx_shape)
    if isinstance(feed.shape[0], int):
        return np.concatenate([session.run(None, {feed.name: x[i:i + 1]})[0] for i in range(len(x))])
    return session.run(None, {feed.name: x})[0]


def _assert_close(got: torch.Tensor | np.ndarray, ref: np.ndarray, what: str = "") -> None:
    """max |got - ref| <= 1e-5 * max(1, max |ref|), with identical shapes."""
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == ref.shape, f"{what}: IR output shape {got.shape} != onnxruntime {ref.shape}"
    assert np.isfinite(ref).all(), f"{what}: onnxruntime produced non-finite outputs"
    err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
    tol = RTOL * max(1.0, float(np.abs(ref).max()))
    assert err <= tol, f"{what}: max |IR - onnxruntime| = {err:.3g} > {tol:.3g}"


def _compare(net: Network, session: ort.InferenceSession, x: np.ndarray, what: str) -> None:
    _assert_close(net(torch.from_numpy(x)), _ort_forward(session, net, x), what)


# ------------------------------------------------------------------------ acceptance
def _vnnlib_box(paths: list[Path], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The union over VNN-LIB files of the input boxes `(>= X_i a)`, `(<= X_i b)`."""
    lower, upper = np.full(n, np.inf), np.full(n, -np.inf)
    bound = re.compile(r"\(\s*(<=|>=)\s+X_(\d+)\s+([-+0-9.eE]+)\s*\)")
    for path in paths:
        for op, index, value in bound.findall(path.read_text()):
            i, v = int(index), float(value)
            if op == ">=":
                lower[i] = min(lower[i], v)
            else:
                upper[i] = max(upper[i], v)
    assert np.isfinite(lower).all() and np.isfinite(upper).all(), f"unbounded inputs in {paths}"
    return lower, upper


def _instances(directory: Path) -> dict[str, list[Path]]:
    """onnx file name -> the vnnlib files paired with it in the instances CSV (2021:
    `<name>_instances.csv`, 2022: `instances.csv`)."""
    pairs: dict[str, list[Path]] = {}
    for csv_path in directory.glob("*instances.csv"):
        for row in csv.reader(csv_path.read_text().splitlines()):
            if len(row) >= 2:
                pairs.setdefault(Path(row[0].strip()).name, []).append(directory / row[1].strip())
    return pairs


def _read_csv_images(path: Path) -> np.ndarray:
    """(N, values) pixel rows in [0, 1] from a `label,pixel,...` CSV of 0..255 values."""
    rows = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    return rows[:, 1:] / 255.0


@lru_cache(maxsize=None)
def _real_images(numel: int) -> np.ndarray | None:
    """Real test images fitting a flat input of `numel` values: MNIST (784) or CIFAR CHW (3072)."""
    if numel == 784 and MNIST_CSV.is_file():
        return _read_csv_images(MNIST_CSV)
    if numel == 3072 and CIFAR_CSV.is_file():
        hwc = _read_csv_images(CIFAR_CSV).reshape(-1, 32, 32, 3)
        return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)).reshape(len(hwc), -1)
    return None


def _acceptance_params() -> list[Any]:
    """(path, input box or None for images) for every shared and shipped ONNX network."""
    params: list[Any] = []
    if SHARED.is_dir():
        for path in sorted((SHARED / "networks" / "profit").glob("*.onnx")):
            params.append(pytest.param(path, None, id=f"profit/{path.name}"))
        for bench in ("mnistfc", "acasxu", "test"):
            directory = VNNCOMP / bench
            instances = _instances(directory)
            for path in sorted(directory.glob("*.onnx")):
                box = None if bench == "mnistfc" else instances.get(path.name, [])
                params.append(pytest.param(path, box, id=f"{bench}/{path.name}"))
        for directory in sorted(p for p in VNNCOMP2022.glob("*") if p.is_dir()):
            instances = _instances(directory)
            for path in sorted((directory / "onnx").glob("*.onnx")):
                params.append(pytest.param(path, instances.get(path.name, []),
                                           id=f"2022/{directory.name}/{path.name}"))
    else:
        params.append(pytest.param(None, None, id="shared", marks=pytest.mark.skip(
            reason=f"shared networks not found at {SHARED}")))
    shipped = sorted(MODELS_DIR.glob("*.onnx"))
    params += [pytest.param(path, None, id=f"shipped/{path.name}") for path in shipped]
    if not shipped:
        params.append(pytest.param(None, None, id="shipped", marks=pytest.mark.skip(
            reason=f"no shipped networks in {MODELS_DIR} yet")))
    return params


def test_acceptance_covers_all_acasxu_networks() -> None:
    if not VNNCOMP.is_dir():
        pytest.skip(f"vnncomp2021 benchmarks not found at {VNNCOMP}")
    ids = [p.id for p in _acceptance_params()]
    assert sum(i.startswith("acasxu/") for i in ids) == 45
    assert sum(i.startswith("mnistfc/") for i in ids) == 3
    assert sum(i.startswith("test/") for i in ids) == 5
    assert sum(i.startswith("2022/") for i in ids) == 10  # collins 3, reach_prob 3, rl 3, sri_resnet_a 1


@pytest.mark.parametrize("path, vnnlib", _acceptance_params())
def test_ir_matches_onnxruntime(path: Path, vnnlib: list[Path] | None) -> None:
    net = load_onnx(path)
    session = _session(path)
    rng = np.random.default_rng(0)
    numel = int(np.prod(net.input_shape))
    if vnnlib is None:  # an image classifier: pixels in [0, 1]
        x = rng.uniform(0.0, 1.0, (N_RANDOM, numel))
        _compare(net, session, x.astype(np.float32).reshape(N_RANDOM, *net.input_shape), "random images")
        real = _real_images(numel)
        if real is not None:
            _compare(net, session, real.reshape(len(real), *net.input_shape), "real images")
        return
    assert vnnlib, f"no vnnlib files paired with {path.name}"
    lower, upper = _vnnlib_box(vnnlib, numel)
    for what, lo, hi in (("vnnlib box", lower, upper),
                         ("generous box", np.minimum(lower, -1.0), np.maximum(upper, 1.0))):
        x = rng.uniform(lo, hi, (N_RANDOM, numel)).astype(np.float32)
        _compare(net, session, x.reshape(N_RANDOM, *net.input_shape), what)


# ----------------------------------------------------------------------- op coverage
_SEED = 1234


def _rand(shape: tuple[int, ...], seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], shape: tuple[int, ...], inits: dict[str, np.ndarray] | None = None,
           opset: int = 13, batch: str = "symbolic", out_dims: list[int | str] | None = None) -> onnx.ModelProto:
    """A checked single-input model with input "x" of per-sample `shape` and output "y".

    batch: "symbolic" (dims [N, *shape]), "fixed" ([1, *shape]) or "none" ([*shape]).
    out_dims: the declared output dims, where ONNX shape inference cannot find them.
    """
    dims: list[int | str] = {"symbolic": ["N", *shape], "fixed": [1, *shape], "none": [*shape]}[batch]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 13 else 6
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # also types the output
    onnx.checker.check_model(model, full_check=True)
    return model


def _check(model: onnx.ModelProto, n: int = 8, low: float = -1.0, high: float = 1.0) -> Network:
    """Import `model`, run it and onnxruntime on n random inputs, assert they agree."""
    net = from_model(model)
    x = _rand((n, *net.input_shape), seed=_SEED, low=low, high=high)
    _compare(net, _session(model.SerializeToString()), x, model.graph.node[-1].op_type)
    return net


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, name=f"{op.lower()}_{outputs[0]}", **attrs)


@pytest.mark.parametrize("trans_b, alpha, beta, bias_shape", [
    (0, 1.0, 1.0, (4,)), (1, 1.0, 1.0, (4,)), (1, 1.0, 1.0, (1, 4)), (0, 1.0, 1.0, (1, 4)),
    (1, 0.5, 2.0, (4,)), (0, -1.5, 0.25, (1, 4)), (1, 1.0, 1.0, None), (1, 2.0, 3.0, (1,)),
    (0, 1.0, -1.0, ()),
])
def test_gemm(trans_b: int, alpha: float, beta: float, bias_shape: tuple[int, ...] | None) -> None:
    inits = {"W": _rand((4, 6) if trans_b else (6, 4), 1)}
    inputs = ["x", "W"]
    if bias_shape is not None:
        inits["b"] = _rand(bias_shape, 2)
        inputs.append("b")
    net = _check(_model([_node("Gemm", inputs, ["y"], transB=trans_b, alpha=alpha, beta=beta)], (6,), inits))
    assert [n.layer.op for n in net] == ["Input", "Linear"]


@pytest.mark.parametrize("op, const_first", [("Add", False), ("Add", True), ("Sub", False), ("Sub", True)])
def test_matmul_bias(op: str, const_first: bool) -> None:
    inits = {"W": _rand((6, 4), 1), "b": _rand((4,), 2)}
    operands = ["b", "h"] if const_first else ["h", "b"]
    net = _check(_model([_node("MatMul", ["x", "W"], ["h"]), _node(op, operands, ["y"])], (6,), inits))
    if not const_first:  # x W + b fuses into one Linear
        assert [n.layer.op for n in net] == ["Input", "Linear"]
        assert net.output.onnx_op == f"MatMul+{op}"


def test_matmul_add_fusion_keeps_shared_intermediate() -> None:
    """A MatMul output read twice must not absorb the bias of one reader."""
    inits = {"W": _rand((6, 4), 1), "b": _rand((4,), 2)}
    nodes = [_node("MatMul", ["x", "W"], ["h"]), _node("Add", ["h", "b"], ["a"]), _node("Relu", ["h"], ["r"]),
             _node("Add", ["a", "r"], ["y"])]
    _check(_model(nodes, (6,), inits))


_ELEMENTWISE_CONSTS = [(), (1,), (3, 1, 1), (1, 3, 1, 1), (3, 4, 5), (5,), (1, 1, 1, 5), (4, 1)]


@pytest.mark.parametrize("const_shape", _ELEMENTWISE_CONSTS, ids=str)
@pytest.mark.parametrize("const_first", [False, True], ids=["x_op_c", "c_op_x"])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_elementwise_constant(op: str, const_first: bool, const_shape: tuple[int, ...]) -> None:
    c = _rand(const_shape, 3, 0.5, 2.0) * np.where(_rand(const_shape, 4) < 0, -1, 1).astype(np.float32)
    model = _model([_node(op, ["c", "x"] if const_first else ["x", "c"], ["y"])], (3, 4, 5), {"c": c})
    if op == "Div" and const_first:
        with pytest.raises(UnsupportedOpError, match="Div"):
            from_model(model)
        return
    net = _check(model)
    assert [n.layer.op for n in net] == ["Input", "Affine"]


def test_normalization_chain_merges_into_one_affine() -> None:
    inits = {"mean": _rand((1, 3, 1, 1), 1), "std": _rand((1, 3, 1, 1), 2, 0.2, 0.5),
             "k": np.float32(2.0), "W": _rand((2, 3, 3, 3), 3)}
    nodes = [_node("Sub", ["x", "mean"], ["s"]), _node("Div", ["s", "std"], ["d"]), _node("Mul", ["k", "d"], ["m"]),
             _node("Conv", ["m", "W"], ["y"])]
    net = _check(_model(nodes, (3, 6, 6), inits), low=0.0)
    assert [n.layer.op for n in net] == ["Input", "Affine", "Conv"]
    assert isinstance(net.nodes[1].layer, Affine) and net.nodes[1].onnx_op == "Sub+Div+Mul"


@pytest.mark.parametrize("attrs, bias, kernel", [
    ({}, True, (3, 3)),
    ({"strides": [2, 2]}, True, (3, 3)),
    ({"strides": [2, 1], "pads": [1, 1, 1, 1]}, True, (3, 3)),
    ({"pads": [0, 1, 2, 1]}, True, (3, 3)),
    ({"pads": [2, 0, 0, 1], "strides": [2, 2]}, True, (3, 3)),
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, True, (3, 3)),
    ({"dilations": [2, 1]}, True, (3, 3)),
    ({}, False, (3, 3)),
    ({"strides": [1, 2]}, False, (2, 3)),
    ({"auto_pad": "SAME_UPPER"}, True, (3, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True, (2, 2)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True, (3, 3)),
    ({"auto_pad": "SAME_LOWER"}, True, (2, 2)),
    ({"auto_pad": "VALID", "strides": [2, 2]}, True, (3, 3)),
], ids=lambda v: str(v).replace(" ", ""))
def test_conv(attrs: dict[str, Any], bias: bool, kernel: tuple[int, int]) -> None:
    inits = {"W": _rand((3, 2, *kernel), 1)}
    if bias:
        inits["B"] = _rand((3,), 2)
    net = _check(_model([_node("Conv", ["x", "W"] + (["B"] if bias else []), ["y"], **attrs)], (2, 9, 9), inits))
    assert [n.layer.op for n in net] == ["Input", "Conv"]


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh"])
def test_activation(op: str) -> None:
    _check(_model([_node(op, ["x"], ["y"])], (3, 7)), low=-4.0, high=4.0)


@pytest.mark.parametrize("shape, axis, opset", [
    ((3, 4, 5), 1, 13), ((3, 4, 5), None, 11), ((12,), 1, 13), ((1, 12), -1, 13), ((1, 4, 5), 2, 13),
])
def test_flatten(shape: tuple[int, ...], axis: int | None, opset: int) -> None:
    """Flatten of a batched input keeps the batch axis: axis 1, or later past size-1 dims."""
    attrs = {} if axis is None else {"axis": axis}
    full_axis = (1 if axis is None else axis) % (len(shape) + 1)
    features = int(np.prod(shape[full_axis - 1:]))
    nodes = [_node("Flatten", ["x"], ["f"], **attrs), _node("Gemm", ["f", "W"], ["y"], transB=1)]
    net = _check(_model(nodes, shape, {"W": _rand((4, features), 1)}, opset=opset))
    assert net.output_shape == (4,)


def test_flatten_unbatched() -> None:
    _check(_model([_node("Flatten", ["x"], ["y"], axis=1)], (3, 4), batch="none"))


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
def test_reshape_from_shape_chain(opset: int) -> None:
    """x.view(x.size(0), -1) as torch.onnx exported it in ProFIt's mnist_0.1.onnx."""
    unsqueeze = (_node("Unsqueeze", ["n", "zero_axis"], ["n1"]) if opset >= 13
                 else _node("Unsqueeze", ["n"], ["n1"], axes=[0]))
    nodes = [
        _node("Conv", ["x", "W"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        _node("Relu", ["c"], ["r"]),
        _node("Shape", ["r"], ["s"]),
        helper.make_node("Constant", [], ["i0"], name="const_i0",
                         value=numpy_helper.from_array(np.array(0, dtype=np.int64))),
        _node("Gather", ["s", "i0"], ["n"], axis=0),
        unsqueeze,
        _node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        _node("Reshape", ["r", "target"], ["flat"]),
        _node("Gemm", ["flat", "W2", "B2"], ["y"], transB=1),
    ]
    inits = {"W": _rand((4, 1, 3, 3), 1), "W2": _rand((5, 4 * 4 * 4), 2), "B2": _rand((5,), 3),
             "minus_one": np.array([-1], dtype=np.int64)}
    if opset >= 13:
        inits["zero_axis"] = np.array([0], dtype=np.int64)
    net = _check(_model(nodes, (1, 8, 8), inits, opset=opset, out_dims=["N", 5]))
    assert [n.layer.op for n in net] == ["Input", "Conv", "Relu", "Reshape", "Linear"]


@pytest.mark.parametrize("target, batch", [
    ([0, -1], "symbolic"), ([0, 0, -1], "symbolic"), ([-1, 60], "symbolic"), ([0, 12, 5], "symbolic"),
    ([0, 3, -1, 2], "symbolic"), ([1, 3, 20], "fixed"), ([-1], "none"), ([0, -1], "none"), ([0, 2, -1], "none"),
])
def test_reshape_zero_and_minus_one(target: list[int], batch: str) -> None:
    """0 copies the input dim, -1 is inferred; the batch dim stays dim 0."""
    model = _model([_node("Reshape", ["x", "t"], ["y"])], (3, 4, 5), {"t": np.array(target, dtype=np.int64)},
                   batch=batch)
    _check(model)


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 1, 3, 2], [0, 3, 1, 2], [0, 1, 2, 3]])
def test_transpose(perm: list[int]) -> None:
    nodes = [_node("Transpose", ["x"], ["t"], perm=perm), _node("Flatten", ["t"], ["f"]),
             _node("Gemm", ["f", "W"], ["y"], transB=1)]
    _check(_model(nodes, (3, 4, 5), {"W": _rand((2, 60), 1)}))


def test_transpose_output_shape() -> None:
    net = _check(_model([_node("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])], (3, 4, 5)))
    assert net.output_shape == (5, 3, 4)


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("shape", [(3, 4, 5), (3,)], ids=["NCHW", "NC"])
def test_batchnorm(opset: int, shape: tuple[int, ...]) -> None:
    c = shape[0]
    inits = {"g": _rand((c,), 1), "b": _rand((c,), 2), "m": _rand((c,), 3), "v": _rand((c,), 4, 0.1, 2.0)}
    _check(_model([_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], epsilon=1e-3)], shape, inits,
                  opset=opset))


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3]},
    {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1], "count_include_pad": 1},
    {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]},
], ids=lambda a: str(a).replace(" ", ""))
def test_average_pool(attrs: dict[str, Any]) -> None:
    _check(_model([_node("AveragePool", ["x"], ["y"], **attrs)], (2, 8, 8)))


def test_global_average_pool() -> None:
    net = _check(_model([_node("GlobalAveragePool", ["x"], ["y"])], (3, 5, 7)))
    assert net.output_shape == (3, 1, 1)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 2], "pads": [1, 0, 0, 1]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [1, 2]},
], ids=lambda a: str(a).replace(" ", ""))
@pytest.mark.parametrize("low, high", [(-1.0, 1.0), (-3.0, -1.0)], ids=["mixed", "negative"])
def test_max_pool(attrs: dict[str, Any], low: float, high: float) -> None:
    """Padded cells never win, even when every input is negative."""
    _check(_model([_node("MaxPool", ["x"], ["y"], **attrs)], (2, 8, 8)), low=low, high=high)


_PADS = [0, 0, 1, 2, 0, 0, 2, 0]


@pytest.mark.parametrize("opset, value", [(10, 0.0), (10, 1.5), (11, None), (13, -0.5), (17, 2.0)])
def test_pad(opset: int, value: float | None) -> None:
    """Opset < 11 gives pads/value as attributes, later opsets as inputs."""
    if opset < 11:
        node = _node("Pad", ["x"], ["y"], pads=_PADS, value=value, mode="constant")
        inits: dict[str, np.ndarray] = {}
    else:
        inits = {"p": np.array(_PADS, dtype=np.int64)}
        if value is not None:
            inits["v"] = np.array(value, dtype=np.float32)
        node = _node("Pad", ["x", "p"] + (["v"] if value is not None else []), ["y"], mode="constant")
    net = _check(_model([node], (2, 4, 5), inits, opset=opset))
    assert net.output_shape == (2, 7, 7)


def test_concat_of_two_branches() -> None:
    nodes = [_node("Conv", ["x", "W1"], ["a"], pads=[1, 1, 1, 1]), _node("Relu", ["a"], ["ra"]),
             _node("Conv", ["x", "W2"], ["b"], pads=[1, 1, 1, 1]),
             _node("Concat", ["ra", "b"], ["c"], axis=1), _node("Flatten", ["c"], ["f"]),
             _node("Gemm", ["f", "W3"], ["y"], transB=1)]
    inits = {"W1": _rand((2, 2, 3, 3), 1), "W2": _rand((3, 2, 3, 3), 2), "W3": _rand((4, 5 * 6 * 6), 3)}
    net = _check(_model(nodes, (2, 6, 6), inits))
    assert "Concat" in [n.layer.op for n in net]


@pytest.mark.parametrize("axis", [-1, 1])
def test_concat_flat(axis: int) -> None:
    nodes = [_node("Gemm", ["x", "W1"], ["a"], transB=1), _node("Relu", ["x"], ["b"]),
             _node("Concat", ["a", "b"], ["y"], axis=axis)]
    net = _check(_model(nodes, (5,), {"W1": _rand((3, 5), 1)}))
    assert net.output_shape == (8,)


def test_residual_add() -> None:
    nodes = [_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), _node("Relu", ["c"], ["r"]),
             _node("Add", ["x", "r"], ["s"]), _node("Relu", ["s"], ["y"])]
    net = _check(_model(nodes, (2, 5, 5), {"W": _rand((2, 2, 3, 3), 1)}))
    assert "Add" in [n.layer.op for n in net]


def test_constant_identity_dropout() -> None:
    nodes = [
        helper.make_node("Constant", [], ["W"], name="const_w", value=numpy_helper.from_array(_rand((5, 3), 1))),
        helper.make_node("Constant", [], ["k"], name="const_k", value_float=0.5),
        helper.make_node("Constant", [], ["b"], name="const_b", value_floats=[0.1, -0.2, 0.3]),
        _node("Identity", ["x"], ["i"]),
        _node("MatMul", ["i", "W"], ["m"]),
        _node("Add", ["m", "b"], ["a"]),
        _node("Dropout", ["a"], ["d"]),
        _node("Mul", ["d", "k"], ["y"]),
    ]
    net = _check(_model(nodes, (5,)))
    assert [n.layer.op for n in net] == ["Input", "Linear", "Affine"]


def test_dropout_opset11_ratio_attribute() -> None:
    nodes = [_node("Dropout", ["x"], ["d"], ratio=0.3), _node("Relu", ["d"], ["y"])]
    _check(_model(nodes, (4,), opset=11))


@pytest.mark.parametrize("opset, axes", [(11, [1]), (11, [-2]), (13, [1]), (13, [-2]), (13, None), (17, [1])])
def test_squeeze_unsqueeze(opset: int, axes: list[int] | None) -> None:
    """Opset 11 gives axes as an attribute, 13+ as an input (optional for Squeeze)."""
    inits: dict[str, np.ndarray] = {"W": _rand((6, 4), 1)}
    if opset >= 13:
        squeeze = _node("Squeeze", ["x"] + (["axes"] if axes is not None else []), ["s"])
        unsqueeze = _node("Unsqueeze", ["h", "axes_u"], ["y"])
        if axes is not None:
            inits["axes"] = np.array(axes, dtype=np.int64)
        inits["axes_u"] = np.array(axes or [1], dtype=np.int64)
    else:
        squeeze = _node("Squeeze", ["x"], ["s"], axes=axes)
        unsqueeze = _node("Unsqueeze", ["h"], ["y"], axes=axes)
    model = _model([squeeze, _node("MatMul", ["s", "W"], ["h"]), unsqueeze], (1, 6), inits, opset=opset,
                   out_dims=["N", 1, 4])
    net = _check(model)
    assert net.output_shape == (1, 4)


@pytest.mark.parametrize("batch", ["symbolic", "fixed", "none"])
def test_batch_modes(batch: str) -> None:
    """An MLP with a symbolic batch, a fixed batch of 1, or no batch dim (vnncomp test nets)."""
    inits = {"W1": _rand((5, 8), 1), "b1": _rand((8,), 2), "W2": _rand((8, 3), 3), "b2": _rand((3,), 4)}
    nodes = [_node("MatMul", ["x", "W1"], ["h"]), _node("Add", ["h", "b1"], ["a"]), _node("Relu", ["a"], ["r"]),
             _node("MatMul", ["r", "W2"], ["o"]), _node("Add", ["o", "b2"], ["y"])]
    net = _check(_model(nodes, (5,), inits, batch=batch), n=16)
    assert net.has_batch_dim == (batch != "none")
    assert net.onnx_input_shape == {"symbolic": ("N", 5), "fixed": (1, 5), "none": (5,)}[batch]
    assert net.input_shape == (5,) and net.output_shape == (3,)
    assert [n.layer.op for n in net] == ["Input", "Linear", "Relu", "Linear"]


def test_unbatched_weight_times_vector() -> None:
    """W @ x on a 1-D input, as in vnncomp's test_nano.onnx."""
    inits = {"W": _rand((3, 5), 1), "W2": _rand((2, 3), 2)}
    nodes = [_node("MatMul", ["W", "x"], ["h"]), _node("Relu", ["h"], ["r"]), _node("MatMul", ["W2", "r"], ["y"])]
    net = _check(_model(nodes, (5,), inits, batch="none"))
    assert all(isinstance(n.layer, Linear) for n in net.nodes[1::2])


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_small_cnn_across_opsets(opset: int) -> None:
    """A conv net mixing normalisation, BatchNorm, Pad, pooling and Gemm at several opsets."""
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)
    inits = {"mean": np.float32(0.5), "std": np.float32(0.25), "W": _rand((4, 1, 3, 3), 1), "B": _rand((4,), 2),
             "g": _rand((4,), 3), "b": _rand((4,), 4), "m": _rand((4,), 5), "v": _rand((4,), 6, 0.5, 1.5),
             "p": pads, "W2": _rand((10, 4 * 5 * 5), 7), "B2": _rand((10,), 8)}
    nodes = [
        _node("Sub", ["x", "mean"], ["s"]), _node("Div", ["s", "std"], ["n"]),
        _node("Conv", ["n", "W", "B"], ["c"], strides=[2, 2]),
        _node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]),
        _node("Relu", ["bn"], ["r"]),
        _node("Pad", ["r", "p"], ["pd"], mode="constant"),
        _node("MaxPool", ["pd"], ["mp"], kernel_shape=[2, 2], strides=[1, 1]),
        _node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[1, 1]),
        _node("Flatten", ["ap"], ["f"]),
        _node("Gemm", ["f", "W2", "B2"], ["y"], transB=1),
    ]
    _check(_model(nodes, (1, 11, 11), inits, opset=opset), low=0.0)


# ---------------------------------------------------------------------------- errors
def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _assert_one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    return message


def test_unsupported_op_names_op_node_and_file(tmp_path: Path) -> None:
    nodes = [_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node("Softmax", ["h"], ["y"], name="probs")]
    path = _save(_model(nodes, (5,), {"W": _rand((3, 5), 1)}), tmp_path / "softmax.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(path)
    message = _assert_one_line(info.value)
    assert "Softmax" in message and "probs" in message and str(path) in message


def test_all_unsupported_ops_are_listed(tmp_path: Path) -> None:
    seq = 3
    nodes = [
        helper.make_node("Softmax", ["x"], ["s"], name="first_softmax"),
        helper.make_node("LSTM", ["s3", "Wl", "Rl"], ["", "h"], name="the_lstm", hidden_size=2),
        helper.make_node("Unsqueeze", ["s", "ax"], ["s3"], name="unsq"),
        helper.make_node("Erf", ["h"], ["y"], name="erf_node"),
    ]
    inits = {"Wl": _rand((1, 8, 4), 1), "Rl": _rand((1, 8, 2), 2), "ax": np.array([0], dtype=np.int64)}
    graph = helper.make_graph(
        [nodes[0], nodes[2], nodes[1], nodes[3]], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = _save(model, tmp_path / "many.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(path)
    message = _assert_one_line(info.value)
    for op, name in (("Softmax", "first_softmax"), ("LSTM", "the_lstm"), ("Erf", "erf_node")):
        assert op in message and name in message, message
    assert "Unsqueeze" not in message and str(path) in message


def test_grouped_conv_loads_as_a_linear_map() -> None:
    """A grouped Conv has no IR layer of its own; on a small input it is its affine map (a Linear)."""
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="grouped", group=2)
    net = _check(_model([node], (4, 6, 6), {"W": _rand((4, 2, 3, 3), 1)}))
    assert any(isinstance(n.layer, Linear) for n in net)


def test_conv_group_names_the_attribute(tmp_path: Path) -> None:
    """Too large for the affine fallback: the error names the attribute the Conv handler rejects."""
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="grouped", group=2)
    path = _save(_model([node], (4, 40, 40), {"W": _rand((4, 2, 3, 3), 1)}), tmp_path / "group.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        load_onnx(path)
    message = _assert_one_line(info.value)
    assert "group" in message and "grouped" in message and "Conv" in message and str(path) in message


def test_mul_of_two_computed_tensors() -> None:
    nodes = [_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["x", "r"], ["y"], name="square")]
    with pytest.raises(UnsupportedOpError) as info:
        from_model(_model(nodes, (4,)), source="mul.onnx")
    message = _assert_one_line(info.value)
    assert "Mul" in message and "square" in message and "mul.onnx" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(NetworkError) as info:
        load_onnx(path)
    assert str(path) in _assert_one_line(info.value)


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(2000), np.random.default_rng(1).bytes(17), b"",
    b"this is a text file, not a network\nsecond line\n", b"ir_version: 8\ngraph { node { op_type: 'Relu' } }\n",
], ids=["random", "random_short", "empty", "text", "textproto"])
def test_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(NetworkError) as info:
        load_onnx(path)
    assert str(path) in _assert_one_line(info.value)


def _shared_onnx_files() -> list[Path]:
    return sorted((SHARED / "networks" / "profit").glob("*.onnx")) + sorted(VNNCOMP.glob("*/*.onnx"))[:3]


def test_truncated_onnx(tmp_path: Path) -> None:
    sources = _shared_onnx_files() or sorted(MODELS_DIR.glob("*.onnx"))
    if not sources:
        pytest.skip("no real ONNX file to truncate (shared and shipped networks absent)")
    for source in sources:
        data = source.read_bytes()
        for fraction in (0.5, 0.1, 0.9):
            path = tmp_path / f"cut_{fraction}_{source.name}"
            path.write_bytes(data[: int(len(data) * fraction)])
            with pytest.raises(NetworkError) as info:
                load_onnx(path)
            assert str(path) in _assert_one_line(info.value)


def test_model_with_undefined_tensor() -> None:
    nodes = [_node("Relu", ["x"], ["r"]), _node("Add", ["r", "ghost"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(NetworkError) as info:
        from_model(helper.make_model(graph), source="ghost.onnx")
    assert "ghost" in _assert_one_line(info.value)


@pytest.mark.parametrize("bad_shape", [(2, 5, 6), (7,), (2, 4), (2, 6, 5, 1), (2, 2, 6, 5), ()], ids=str)
def test_prepare_rejects_wrong_shapes(bad_shape: tuple[int, ...]) -> None:
    net = from_model(_model([_node("Relu", ["x"], ["y"])], (1, 6, 5)))
    assert net.prepare(torch.zeros(2, 1, 6, 5)).shape == (2, 1, 6, 5)
    assert net.prepare(torch.zeros(1, 6, 5)).shape == (1, 1, 6, 5)
    assert net.prepare(torch.zeros(3, 30)).shape == (3, 1, 6, 5)
    with pytest.raises(NetworkError) as info:
        net.prepare(torch.zeros(bad_shape))
    assert "(1, 6, 5)" in _assert_one_line(info.value)
    with pytest.raises(NetworkError):
        net(torch.zeros(bad_shape))
