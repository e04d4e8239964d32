"""networks.export.to_onnx: round trips against torch through onnxruntime, and typed refusals."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from networks.export import INPUT_NAME, OUTPUT_NAME, Normalize, to_onnx

ATOL = 1e-5


def _round_trip(model: nn.Sequential, input_shape: tuple[int, ...], path: Path, seed: int = 0) -> onnx.ModelProto:
    """Export ``model``, then check onnxruntime == torch on random inputs (batch 1 and 7)."""
    model = model.eval()
    proto = to_onnx(model, input_shape, path, name="t")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    for batch in (1, 7):
        x = torch.rand((batch, *input_shape), generator=gen) * 2 - 0.5
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {INPUT_NAME: x.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=1e-5)
    return proto


def _op_types(proto: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


def test_mlp_round_trip_and_graph_interface(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    proto = _round_trip(model, (1, 4, 4), tmp_path / "mlp.onnx")
    assert _op_types(proto) == ["Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    gemm = proto.graph.node[1]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute} == {"transB": 1}
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 1, 4, 4]
    assert out_dims == ["batch", 3]
    assert proto.opset_import[0].version == 13
    assert onnx.load(str(tmp_path / "mlp.onnx")) == proto


def test_flat_input_and_no_bias(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 6, bias=False), nn.ReLU(), nn.Linear(6, 2))
    proto = _round_trip(model, (10,), tmp_path / "flat.onnx")
    assert _op_types(proto) == ["Gemm", "Relu", "Gemm"]


def test_conv_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 5, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1), bias=False), nn.ReLU(),
        nn.Conv2d(5, 3, 3, padding="same"), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 6 * 3, 4),
    )  # fmt: skip
    proto = _round_trip(model, (2, 11, 12), tmp_path / "conv.onnx")
    assert _op_types(proto) == ["Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm"]


def test_sigmoid_tanh_and_nested_sequential(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Sequential(nn.Linear(9, 7), nn.Sigmoid()),
        nn.Linear(7, 5), nn.Tanh(),
        nn.Linear(5, 2),
    )  # fmt: skip
    proto = _round_trip(model, (1, 3, 3), tmp_path / "smooth.onnx")
    assert _op_types(proto) == ["Flatten", "Gemm", "Sigmoid", "Gemm", "Tanh", "Gemm"]


def test_normalize_front_scalar_and_per_channel(tmp_path: Path) -> None:
    torch.manual_seed(4)
    scalar = nn.Sequential(Normalize(0.1307, 0.3081), nn.Flatten(), nn.Linear(16, 3))
    proto = _round_trip(scalar, (1, 4, 4), tmp_path / "norm1.onnx")
    assert _op_types(proto) == ["Sub", "Div", "Flatten", "Gemm"]

    per_channel = nn.Sequential(
        Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]),
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 2),
    )  # fmt: skip
    proto = _round_trip(per_channel, (3, 5, 5), tmp_path / "norm3.onnx")
    assert _op_types(proto)[:2] == ["Sub", "Div"]
    mean = next(t for t in proto.graph.initializer if t.name.endswith(".mean"))
    assert list(mean.dims) == [3, 1, 1]

    flat = nn.Sequential(Normalize([0.0, 1.0, 2.0], [1.0, 2.0, 4.0]), nn.Linear(3, 2))
    _round_trip(flat, (3,), tmp_path / "normflat.onnx")


def test_unsupported_modules_are_all_named(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="MaxPool2d") as err:
        to_onnx(model, (1, 6, 6), tmp_path / "bad.onnx")
    assert "BatchNorm1d" in str(err.value)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize(
    ("model", "shape", "word"),
    [
        (nn.Sequential(nn.Linear(4, 2)), (1, 4), "Linear"),
        (nn.Sequential(nn.Flatten(), nn.Linear(10, 2)), (1, 4, 4), "Linear fails"),
        (nn.Sequential(nn.Conv2d(2, 2, 1, groups=2)), (2, 3, 3), "groups"),
        (nn.Sequential(nn.Flatten(start_dim=2), nn.Linear(9, 2)), (1, 3, 3), "Flatten"),
        (nn.Sequential(Normalize([0.0, 0.0], [1.0, 1.0]), nn.Flatten(), nn.Linear(27, 2)), (3, 3, 3), "Normalize"),
    ],
)
def test_unsupported_configurations(model: nn.Sequential, shape: tuple[int, ...], word: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=word):
        to_onnx(model, shape, tmp_path / "bad.onnx")


def test_non_flat_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flat"):
        to_onnx(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 5, 5), tmp_path / "bad.onnx")


def test_pixel_shuffle_and_unflatten_round_trip(tmp_path: Path) -> None:
    """Depth to space as Reshape / Transpose / Reshape in torch's channel order, read back by the IR."""
    from networks.onnx_import import load_onnx

    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.Unflatten(1, (8, 2, 2)), nn.PixelShuffle(2),
                          nn.Conv2d(2, 3, 3, padding=1), nn.Sigmoid(), nn.Flatten())
    proto = _round_trip(model, (3, 2, 2), tmp_path / "shuffle.onnx")
    assert _op_types(proto) == ["Flatten", "Gemm", "Reshape", "Reshape", "Transpose", "Reshape", "Conv", "Sigmoid",
                                "Flatten"]
    net = load_onnx(tmp_path / "shuffle.onnx")
    x = torch.rand(4, 3, 2, 2)
    with torch.no_grad():
        assert torch.allclose(net(x).reshape(4, -1), model(x), atol=1e-6)
    to_onnx(model, (3, 2, 2), tmp_path / "named.onnx", output_name="reconstruction")
    assert onnx.load(str(tmp_path / "named.onnx")).graph.output[0].name == "reconstruction"
