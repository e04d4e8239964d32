"""ONNX forms imported as their affine map (`_Converter.affine_map`) and the batch-axis retry:
each model's IR forward must match onnxruntime (the helpers of test_onnx_import); nonlinear
forms must still be rejected with one line naming the op."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from networks import UnsupportedOpError, from_model
from networks.ir import Linear
from tests.networks.test_onnx_import import _assert_one_line, _check, _model, _node, _rand

I64 = np.int64


@pytest.mark.parametrize("batch", ["symbolic", "fixed", "none"])
def test_slice_of_a_computed_tensor(batch: str) -> None:
    inits = {"s": np.array([1], I64), "e": np.array([3], I64), "a": np.array([-1], I64), "W": _rand((3, 3), 1)}
    nodes = [_node("MatMul", ["x", "W"], ["h"]), _node("Relu", ["h"], ["r"]), _node("Slice", ["r", "s", "e", "a"], ["y"])]
    _check(_model(nodes, (2, 3) if batch == "none" else (3,), inits, batch=batch))


def test_gather_split_and_concat_with_a_constant() -> None:
    inits = {"i": np.array([2, 0, 0], I64), "c": _rand((1, 2), 3), "parts": np.array([1, 2], I64)}
    nodes = [_node("Relu", ["x"], ["r"]), _node("Gather", ["r", "i"], ["g"], axis=1),
             _node("Split", ["g", "parts"], ["first", "rest"], axis=1),
             _node("Concat", ["rest", "c"], ["y"], axis=1)]
    net = _check(_model(nodes, (3,), inits, batch="fixed"))  # a constant operand: a batch of one
    assert net.output_shape == (4,)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions(op: str, keepdims: int) -> None:
    if op == "ReduceSum":  # axes is an input from opset 13
        nodes, inits = [_node(op, ["x", "ax"], ["y"], keepdims=keepdims)], {"ax": np.array([2], I64)}
    else:
        nodes, inits = [_node(op, ["x"], ["y"], axes=[2], keepdims=keepdims)], {}
    _check(_model(nodes, (2, 3), inits))


def test_neg_expand_and_float_cast() -> None:
    nodes = [_node("Neg", ["x"], ["n"]), _node("Cast", ["n"], ["c"], to=TensorProto.FLOAT),
             _node("Expand", ["c", "shape"], ["y"])]
    net = _check(_model(nodes, (1, 3), {"shape": np.array([1, 2, 3], I64)}))
    assert net.output_shape == (2, 3)


def test_conv1d() -> None:
    nodes = [_node("Conv", ["x", "W", "b"], ["y"], pads=[1, 1], strides=[2])]
    _check(_model(nodes, (2, 7), {"W": _rand((3, 2, 3), 1), "b": _rand((3,), 2)}))


def test_mul_by_a_constant_that_broadcasts_the_shape() -> None:
    """(2, 1) * (1, 2): the product has a larger shape than the computed operand."""
    _check(_model([_node("Mul", ["x", "c"], ["y"])], (2, 1), {"c": _rand((1, 2), 4)}, batch="none"))


@pytest.mark.parametrize("shape, perm", [((2,), [1, 0]), ((2, 3), [2, 1, 0]), ((2, 3), [1, 0, 2])])
def test_transpose_moving_the_fixed_batch_axis(shape: tuple[int, ...], perm: list[int]) -> None:
    """dims [1, ...]: the leading 1 becomes an ordinary dim of the one sample."""
    nodes = [_node("Transpose", ["x"], ["t"], perm=perm), _node("Relu", ["t"], ["y"])]
    net = _check(_model(nodes, shape, batch="fixed"))
    assert not net.has_batch_dim and net.input_shape == (1, *shape)


def test_gather_on_the_symbolic_batch_axis_is_rejected() -> None:
    nodes = [_node("Gather", ["x", "i"], ["y"], axis=0)]
    with pytest.raises(UnsupportedOpError) as info:
        from_model(_model(nodes, (3,), {"i": np.array([0], I64)}), source="g.onnx")
    assert "Gather" in _assert_one_line(info.value)


@pytest.mark.parametrize("to", [TensorProto.BOOL, TensorProto.INT64, TensorProto.FLOAT16])
def test_nonlinear_casts_are_rejected(to: int) -> None:
    nodes = [_node("Cast", ["x"], ["c"], to=to), _node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    with pytest.raises(UnsupportedOpError) as info:
        from_model(_model(nodes, (3,)), source="cast.onnx")
    message = _assert_one_line(info.value)
    assert "Cast" in message and "cast.onnx" in message


def test_division_by_a_computed_tensor_is_rejected() -> None:
    with pytest.raises(UnsupportedOpError, match="Div"):
        from_model(_model([_node("Div", ["c", "x"], ["y"])], (3,), {"c": _rand((3,), 1)}))


def test_a_linear_map_is_one_linear_layer() -> None:
    net = _check(_model([_node("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], (4,), {"ax": np.array([1], I64)}))
    assert [type(n.layer) for n in net][1] == Linear and len(net.nodes) <= 3


def test_an_unused_split_output_is_not_emitted() -> None:
    nodes = [_node("Split", ["x", "parts"], ["a", "b"], axis=1), _node("Relu", ["b"], ["y"])]
    net = _check(_model(nodes, (4,), {"parts": np.array([1, 3], I64)}))
    assert len(net.nodes) == 3


@pytest.mark.parametrize("size, kernel, stride, pads", [
    (3, 2, 2, [0, 0, 0, 0]), (5, 3, 2, [0, 0, 0, 0]), (6, 3, 2, [1, 1, 0, 0]), (4, 2, 3, [0, 0, 1, 1]),
])
def test_maxpool_ceil_mode(size: int, kernel: int, stride: int, pads: list[int]) -> None:
    """ceil_mode=1 keeps the last partial window (extra end padding that never wins)."""
    node = _node("MaxPool", ["x"], ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride], pads=pads,
                 ceil_mode=1)
    _check(_model([node], (2, size, size)))
