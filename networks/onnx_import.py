"""Load an ONNX file into the IR.

Constant subgraphs (initializers, Constant nodes, Shape/Gather/Unsqueeze/Concat
chains that compute reshape targets) are folded at load time with numpy. The
remaining ops become IR layers; MatMul/Gemm followed by a constant Add becomes
one `Linear`, and consecutive elementwise affine ops are merged. Every
unsupported op is collected and reported in one `UnsupportedOpError` naming
the op, the node and the file, before any conversion happens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Input, Layer, Linear, MaxPool, Network, NetworkError,
    Node, Pad, Relu, Reshape, Sigmoid, Tanh, Transpose, UnsupportedOpError,
)

# Ops that can appear on the computed (input-dependent) path.
_DYNAMIC_OPS = {
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "Relu", "Sigmoid", "Tanh", "Flatten",
    "Reshape", "Transpose", "BatchNormalization", "AveragePool", "MaxPool", "Pad", "Concat",
    "Identity", "Dropout", "Squeeze", "Unsqueeze", "Shape", "GlobalAveragePool",
    "Slice", "Gather", "Split", "ReduceSum", "ReduceMean", "Neg", "Expand", "Cast",
}
# Ops that are affine in their one computed input when their other inputs are constant: a
# specialised handler that rejects a form (or no handler) falls back to `_Converter.affine_map`.
_AFFINE_OPS = {
    "Slice", "Gather", "Split", "ReduceSum", "ReduceMean", "Neg", "Expand", "Cast", "Concat", "Transpose",
    "Add", "Sub", "Mul", "Div", "Conv", "Gemm", "MatMul", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Pad",
    "AveragePool", "GlobalAveragePool", "BatchNormalization",
}
_AFFINE_MAX_INPUTS = 4096  # affine_map evaluates the op on each basis vector: small tensors only
_AFFINE_MAX_WEIGHTS = 2 ** 24
# Ops that are only folded when all their inputs are constant.
_CONSTANT_OPS = {
    "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Reshape",
    "Add", "Sub", "Mul", "Div", "Identity", "Slice", "ConstantOfShape", "Transpose", "Flatten",
    "MatMul", "Gather",
}

# What a network may contain, for capability queries (`profit vnnlib2 supports --onnx-operators`):
# the ops supported on computed tensors, and Constant and ConstantOfShape (folded: the latter's input
# is a shape, which Shape folds). Not Cast: only its identity forms (to float or double) load, the
# casts that matter (to bool or integers) do not.
SUPPORTED_OPS = frozenset((_DYNAMIC_OPS - {"Cast"}) | {"Constant", "ConstantOfShape"})


def load_onnx(path: str | Path) -> Network:
    """Load `path` into a `Network`; raises `NetworkError` with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise NetworkError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise NetworkError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if len(model.graph.node) == 0:
        raise NetworkError(f"{path}: not a readable ONNX model (empty graph)")
    return from_model(model, source=str(path))


class _BatchAxisError(UnsupportedOpError):
    """An op moves, mixes or slices the (size-1) batch axis."""


def from_model(model: onnx.ModelProto, source: str = "<onnx>") -> Network:
    """Convert an in-memory ONNX model. An input of shape (1, ...) is read as a batch of one,
    unless an op works along that axis (e.g. a Transpose moving it): then the whole model is
    converted again with the leading 1 as an ordinary dimension of the one sample."""
    try:
        return _Converter(model, source).convert()
    except _BatchAxisError as first:
        dims = [d.dim_value if d.HasField("dim_value") else None
                for i in model.graph.input for d in i.type.tensor_type.shape.dim][:1]
        if dims != [1]:
            raise UnsupportedOpError(str(first)) from None
        return _Converter(model, source, batch_axis=False).convert()


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.array(array, dtype=np.float32))


class _Converter:
    """One-shot ONNX -> IR conversion state."""

    def __init__(self, model: onnx.ModelProto, source: str, batch_axis: bool = True) -> None:
        self.model = model
        self.batch_axis = batch_axis  # False: a leading dim of 1 is an ordinary dim, not the batch axis
        self.graph = model.graph
        self.source = source
        self.consts: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in self.graph.initializer}
        self.alias: dict[str, str] = {}  # onnx value name -> IR node name
        self.nodes: list[Node] = []
        self.examples: dict[str, torch.Tensor] = {}  # IR node name -> batch-1 example output
        self.consumers: dict[str, int] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1

    # ------------------------------------------------------------------ helpers
    def fail(self, node: onnx.NodeProto, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"{self.source}: unsupported {node.op_type} (node '{node.name or node.output[0]}'): {why}")

    def batch_fail(self, node: onnx.NodeProto, why: str) -> UnsupportedOpError:
        """The error of an op that mixes the batch axis; `from_model` retries without a batch axis."""
        return _BatchAxisError(str(self.fail(node, why)))

    def is_const(self, name: str) -> bool:
        return name == "" or name in self.consts

    def dyn(self, name: str) -> str:
        return self.alias[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.examples[self.dyn(name)].shape[1:])

    def emit(self, out: str, layer: Layer, inputs: tuple[str, ...], op: str) -> None:
        """Append a node and record its example output (this also checks shapes)."""
        name = out
        while any(n.name == name for n in self.nodes):
            name += "_"
        try:
            example = layer.forward(*(self.examples[i] for i in inputs))
        except RuntimeError as exc:
            raise NetworkError(f"{self.source}: {op} node '{out}': shape error: "
                               f"{str(exc).splitlines()[0]}") from None
        self.nodes.append(Node(name, layer, inputs, tuple(example.shape[1:]), op))
        self.examples[name] = example
        self.alias[out] = name

    def per_sample_axis(self, axis: int, rank: int, node: onnx.NodeProto) -> int:
        """Map an ONNX axis of a full tensor to a per-sample axis."""
        full_rank = rank + (1 if self.batch else 0)
        axis = axis + full_rank if axis < 0 else axis
        if self.batch:
            if axis == 0:
                raise self.batch_fail(node, "operates along the batch axis")
            return axis - 1
        return axis

    def per_sample_const(self, c: np.ndarray, shape: tuple[int, ...], node) -> torch.Tensor:
        """A constant operand broadcast to the per-sample shape."""
        if self.batch and c.ndim == len(shape) + 1:
            if c.shape[0] != 1:
                raise self.batch_fail(node, f"constant of shape {c.shape} varies along the batch axis")
            c = c[0]
        try:
            return _tensor(np.broadcast_to(c, shape).copy())
        except ValueError:
            raise self.fail(node, f"constant of shape {c.shape} does not broadcast to {shape}") from None

    # --------------------------------------------------------------- conversion
    def convert(self) -> Network:
        inits = set(self.consts)
        inputs = [i for i in self.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise NetworkError(f"{self.source}: expected one input tensor, found {len(inputs)}")
        if len(self.graph.output) != 1:
            raise NetworkError(f"{self.source}: expected one output tensor, found {len(self.graph.output)}")
        self.check_ops()
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in inputs[0].type.tensor_type.shape.dim]
        if any(isinstance(d, str) for d in dims[1:]) or (dims and isinstance(dims[0], str) and len(dims) == 1):
            raise NetworkError(f"{self.source}: input shape {dims} has symbolic non-batch dims")
        self.batch = self.batch_axis and len(dims) >= 2 and (isinstance(dims[0], str) or dims[0] == 1)
        self.symbolic_batch = self.batch and isinstance(dims[0], str)
        shape = tuple(int(d) for d in (dims[1:] if self.batch else dims))
        name = inputs[0].name
        self.nodes.append(Node(name, Input(), (), shape, "input"))
        self.examples[name] = torch.zeros(1, *shape)
        self.alias[name] = name
        for node in self.graph.node:
            self.convert_node(node)
        out = self.graph.output[0].name
        if out in self.consts or out not in self.alias:
            raise NetworkError(f"{self.source}: the output '{out}' does not depend on the input")
        nodes = self.nodes
        if nodes[-1].name != self.alias[out]:
            raise NetworkError(f"{self.source}: the output '{out}' is not the last computed node")
        return Network(tuple(nodes), self.source, tuple(dims), self.batch)

    def check_ops(self) -> None:
        bad = [f"{n.op_type} (node '{n.name or n.output[0]}')" for n in self.graph.node
               if n.op_type not in _DYNAMIC_OPS | _CONSTANT_OPS]
        if bad:
            raise UnsupportedOpError(f"{self.source}: unsupported ONNX ops: {', '.join(bad)}")

    def convert_node(self, node: onnx.NodeProto) -> None:
        undefined = [i for i in node.input if i and i not in self.consts and i not in self.alias]
        if undefined:
            raise NetworkError(f"{self.source}: {node.op_type} node '{node.name or node.output[0]}' "
                               f"reads undefined tensor(s) {', '.join(undefined)}")
        if all(self.is_const(i) for i in node.input):
            self.fold(node)
            return
        handler = _HANDLERS.get(node.op_type)
        if handler is None and node.op_type not in _AFFINE_OPS:
            raise self.fail(node, "this op is only supported on constant inputs")
        if handler is None:
            self.affine_map(node)
            return
        try:
            handler(self, node)
        except UnsupportedOpError as error:
            if node.op_type not in _AFFINE_OPS:
                raise
            try:
                self.affine_map(node)
            except UnsupportedOpError:
                raise error from None

    def affine_map(self, node: onnx.NodeProto) -> None:
        """An op affine in its one computed input x (the others constant), as Reshape -> Linear -> Reshape
        per output: y = W x + b with b = op(0) and W's columns op(e_i) - b, the op run by ONNX's
        reference evaluator on the batch-1 tensor (so its axes mean what they mean in ONNX). The
        map is then checked on random points: a nonlinear form (e.g. a Cast to bool) is rejected."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        computed = {i for i in node.input if i and not self.is_const(i)}
        if len(computed) != 1:
            raise self.fail(node, f"{len(computed)} computed operands (affine only in one)")
        if node.op_type == "Cast" and _attrs(node).get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            raise self.fail(node, f"cast to {onnx.TensorProto.DataType.Name(_attrs(node).get('to', 0))}")
        x, = computed
        shape = self.shape(x)
        full = ((1,) if self.batch else ()) + shape
        n = int(np.prod(shape))
        if n > _AFFINE_MAX_INPUTS:
            raise self.fail(node, f"{n} inputs is too many for the affine form")
        consts = {i: self.consts[i] for i in node.input if i and self.is_const(i)}
        graph = helper.make_graph(
            [node], "op", [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, ["N", *shape] if self.symbolic_batch
                                                         else full)],
            [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o],
            [numpy_helper.from_array(v, k) for k, v in consts.items()])
        model = helper.make_model(graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        try:
            evaluator = ReferenceEvaluator(model)

            def run(v: np.ndarray) -> list[np.ndarray]:
                return [np.asarray(o) for o in evaluator.run(None, {x: v.astype(np.float32).reshape(full)})]

            with np.errstate(all="ignore"):
                zero = run(np.zeros(n))
                if any(not np.issubdtype(o.dtype, np.floating) for o in zero):
                    raise self.fail(node, "a non-float output")
                if self.batch and any(o.ndim == 0 or o.shape[0] != 1 for o in zero):
                    raise self.batch_fail(node, "moves the batch axis")
                if sum(o.size for o in zero) * n > _AFFINE_MAX_WEIGHTS:
                    raise self.fail(node, "too large for the affine form")
                basis = [run(e) for e in np.eye(n)]
                if self.symbolic_batch:  # the op must act on each sample of a batch alone
                    pair = np.stack([np.zeros(n), np.eye(n)[0]]).astype(np.float32).reshape(2, *shape)
                    both = [np.asarray(o) for o in evaluator.run(None, {x: pair})]
                    if any(o.shape[:1] != (2,) or not np.array_equal(o, np.concatenate([z, e]))
                           for o, z, e in zip(both, zero, basis[0])):
                        raise self.batch_fail(node, "mixes the samples of a batch")
        except UnsupportedOpError:
            raise
        except Exception as exc:
            raise self.fail(node, f"cannot evaluate ({type(exc).__name__})") from None
        if not all(np.isfinite(o).all() for col in [zero, *basis] for o in col):
            raise self.fail(node, "not affine in its computed input (non-finite values)")
        rng = np.random.default_rng(0)
        used = {o.name for o in self.graph.output} | set(self.consumers)
        for k, (out, b) in enumerate(zip([o for o in node.output if o], zero)):
            if out not in used:  # e.g. a Split output nothing reads
                continue
            W = np.stack([col[k].reshape(-1) - b.reshape(-1) for col in basis], axis=1).astype(np.float64)
            for scale in (1.0, 100.0):
                point = rng.uniform(-scale, scale, n).astype(np.float32)
                with np.errstate(all="ignore"):
                    want = run(point)[k].reshape(-1).astype(np.float64)
                got = W @ point.astype(np.float64) + b.reshape(-1)
                if not np.allclose(got, want, rtol=1e-4, atol=1e-5 * scale):
                    raise self.fail(node, "not affine in its computed input")
            out_shape = tuple(b.shape[1:] if self.batch else b.shape)
            src = self.dyn(x)
            if len(shape) != 1:
                self.emit(f"{out}/flat", Reshape((n,)), (src,), node.op_type)
                src = self.alias[f"{out}/flat"]
            linear = Linear(_tensor(W.astype(np.float32)), _tensor(b.reshape(-1).astype(np.float32)))
            if out_shape == (b.size,):
                self.emit(out, linear, (src,), node.op_type)
            else:
                self.emit(f"{out}/linear", linear, (src,), node.op_type)
                self.emit(out, Reshape(out_shape), (self.alias[f"{out}/linear"],), node.op_type)

    def fold(self, node: onnx.NodeProto) -> None:
        fn = _FOLDERS.get(node.op_type)
        if fn is None:
            raise self.fail(node, "cannot fold this op on constants")
        ins = [self.consts[i] if i else None for i in node.input]
        out = fn(ins, _attrs(node))
        self.consts[node.output[0]] = np.asarray(out)

    # ----------------------------------------------------------------- handlers
    def linear_from(self, node, x: str, weight: np.ndarray, bias: np.ndarray | None) -> None:
        out_features = weight.shape[0]
        b = np.zeros(out_features, np.float32) if bias is None else np.broadcast_to(
            np.asarray(bias, np.float32).reshape(-1) if np.asarray(bias).size in (1, out_features)
            else np.asarray(bias), (out_features,))
        self.emit(node.output[0], Linear(_tensor(weight), _tensor(b)), (self.dyn(x),), node.op_type)

    def gemm(self, node) -> None:
        a = _attrs(node)
        x, w = node.input[0], node.input[1]
        if self.is_const(x) or not self.is_const(w):
            raise self.fail(node, "only input x constant-weight products are supported")
        if a.get("transA", 0):
            raise self.fail(node, "transA=1")
        weight = self.consts[w]
        weight = weight if a.get("transB", 0) else weight.T
        weight = weight * a.get("alpha", 1.0)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self.consts[node.input[2]] * a.get("beta", 1.0)
            if bias.size not in (1, weight.shape[0]):
                raise self.fail(node, f"bias of shape {bias.shape}")
        self.linear_from(node, x, weight, bias)

    def matmul(self, node) -> None:
        x, w = node.input
        if self.is_const(x) and not self.batch and self.consts[x].ndim == 2 and len(self.shape(w)) == 1:
            self.linear_from(node, w, self.consts[x], None)  # W @ x on an unbatched vector
            return
        if self.is_const(x) or not self.is_const(w) or self.consts[w].ndim != 2:
            raise self.fail(node, "only x @ W with a constant 2-D W is supported")
        self.linear_from(node, x, self.consts[w].T, None)

    def elementwise(self, node) -> None:
        op = node.op_type
        a, b = node.input
        if not self.is_const(a) and not self.is_const(b):
            if op == "Add":
                if self.shape(a) != self.shape(b):
                    raise self.fail(node, f"operand shapes {self.shape(a)} and {self.shape(b)} differ")
                self.emit(node.output[0], Add(), (self.dyn(a), self.dyn(b)), op)
                return
            raise self.fail(node, "both operands are computed; only Add supports that")
        x, c_name, const_first = (b, a, True) if self.is_const(a) else (a, b, False)
        c = self.consts[c_name].astype(np.float64)
        shape = self.shape(x)
        prev = self.nodes[-1] if self.nodes else None
        # MatMul/Gemm + bias Add -> one Linear.
        if (op in ("Add", "Sub") and not const_first and prev is not None and prev.name == self.dyn(x)
                and isinstance(prev.layer, Linear) and self.consumers.get(x, 0) == 1
                and len(shape) == 1 and c.size in (1, shape[0]) and c.ndim <= 2):
            sign = 1.0 if op == "Add" else -1.0
            bias = prev.layer.bias + sign * _tensor(np.broadcast_to(c.reshape(-1), shape))
            self.replace_last(node.output[0], Linear(prev.layer.weight, bias), op)
            return
        ct = self.per_sample_const(c, shape, node).double()
        one, zero = torch.ones(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
        if op == "Add":
            scale, shift = one, ct
        elif op == "Sub":
            scale, shift = (-one, ct) if const_first else (one, -ct)
        elif op == "Mul":
            scale, shift = ct, zero
        else:  # Div
            if const_first:
                raise self.fail(node, "division by a computed tensor")
            if torch.any(ct == 0):
                raise self.fail(node, "division by zero")
            scale, shift = 1.0 / ct, zero
        self.affine(node, x, scale, shift)

    def replace_last(self, out: str, layer: Layer, op: str) -> None:
        """Replace the last node (fusing `op` into it) and alias `out` to it."""
        last = self.nodes.pop()
        del self.examples[last.name]
        self.emit(last.name, layer, last.inputs, f"{last.onnx_op}+{op}")
        self.alias[out] = last.name

    def affine(self, node, x: str, scale: torch.Tensor, shift: torch.Tensor) -> None:
        prev = self.nodes[-1]
        if (prev.name == self.dyn(x) and isinstance(prev.layer, Affine)
                and self.consumers.get(x, 0) == 1):
            s0, t0 = prev.layer.scale.double(), prev.layer.shift.double()
            self.replace_last(node.output[0], Affine((s0 * scale).float(), (t0 * scale + shift).float()),
                              node.op_type)
            return
        self.emit(node.output[0], Affine(scale.float(), shift.float()), (self.dyn(x),), node.op_type)

    def batchnorm(self, node) -> None:
        x = node.input[0]
        if not all(self.is_const(i) for i in node.input[1:5]):
            raise self.fail(node, "non-constant statistics")
        gamma, beta, mean, var = (self.consts[i].astype(np.float64) for i in node.input[1:5])
        eps = _attrs(node).get("epsilon", 1e-5)
        shape = self.shape(x)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        view = (-1,) + (1,) * (len(shape) - 1)
        self.affine(node, x,
                    torch.as_tensor(scale).reshape(view).expand(shape).clone(),
                    torch.as_tensor(shift).reshape(view).expand(shape).clone())

    def conv(self, node) -> None:
        a = _attrs(node)
        x, w = node.input[0], node.input[1]
        if not self.is_const(w):
            raise self.fail(node, "computed weights")
        weight = self.consts[w]
        if weight.ndim != 4:
            raise self.fail(node, f"only 2-D convolutions are supported (kernel rank {weight.ndim - 2})")
        if a.get("group", 1) != 1:
            raise self.fail(node, f"group={a['group']}")
        kh, kw = weight.shape[2:]
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        stride = tuple(a.get("strides", (1, 1)))
        dilation = tuple(a.get("dilations", (1, 1)))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            h, wd = self.shape(x)[1:]
            ph = max((-(-h // stride[0]) - 1) * stride[0] + (kh - 1) * dilation[0] + 1 - h, 0)
            pw = max((-(-wd // stride[1]) - 1) * stride[1] + (kw - 1) * dilation[1] + 1 - wd, 0)
            lo_h, lo_w = (ph // 2, pw // 2) if auto == "SAME_UPPER" else (ph - ph // 2, pw - pw // 2)
            pads = (lo_h, lo_w, ph - lo_h, pw - lo_w)
        elif auto not in ("NOTSET", "VALID"):
            raise self.fail(node, f"auto_pad={auto}")
        bias = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[0])
        layer = Conv(_tensor(weight), _tensor(bias), stride, pads, dilation)
        self.emit(node.output[0], layer, (self.dyn(x),), node.op_type)

    def activation(self, node) -> None:
        layer = {"Relu": Relu, "Sigmoid": Sigmoid, "Tanh": Tanh}[node.op_type]()
        self.emit(node.output[0], layer, (self.dyn(node.input[0]),), node.op_type)

    def passthrough(self, node) -> None:
        self.alias[node.output[0]] = self.dyn(node.input[0])

    def reshape_to(self, node, x: str, shape: tuple[int, ...]) -> None:
        if shape == self.shape(x):
            self.passthrough(node)
            return
        self.emit(node.output[0], Reshape(tuple(int(s) for s in shape)), (self.dyn(x),), node.op_type)

    def flatten(self, node) -> None:
        x = node.input[0]
        shape = self.shape(x)
        full = ((1,) if self.batch else ()) + shape
        axis = _attrs(node).get("axis", 1)
        axis = axis + len(full) if axis < 0 else axis
        if self.batch:
            if axis < 1 or any(d != 1 for d in shape[: axis - 1]):
                raise self.batch_fail(node, f"axis={axis} mixes the batch axis")
            self.reshape_to(node, x, (int(np.prod(shape[axis - 1:])),))
        else:
            self.reshape_to(node, x, (int(np.prod(full[:axis])), int(np.prod(full[axis:]))))

    def reshape(self, node) -> None:
        x, s = node.input[0], node.input[1]
        if not self.is_const(s):
            raise self.fail(node, "computed target shape")
        target = [int(v) for v in self.consts[s].reshape(-1)]
        shape = self.shape(x)
        numel = int(np.prod(shape))
        if self.batch:
            if not target or target[0] not in (1, -1, 0):
                raise self.batch_fail(node, f"target shape {target} changes the batch axis")
            if target[0] == -1 and -1 in target[1:]:
                raise self.fail(node, f"target shape {target}")
            target = target[1:]
            full = (1,) + shape
            target = [full[i + 1] if v == 0 else v for i, v in enumerate(target)]
        else:
            target = [shape[i] if v == 0 else v for i, v in enumerate(target)]
        if -1 in target:
            known = int(np.prod([v for v in target if v != -1]))
            target = [numel // known if v == -1 else v for v in target]
        if int(np.prod(target)) != numel:
            raise self.fail(node, f"cannot reshape {shape} to {target}")
        self.reshape_to(node, x, tuple(target))

    def squeeze_unsqueeze(self, node) -> None:
        x = node.input[0]
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.consts[node.input[1]].tolist()
        shape = list(self.shape(x))
        full = ([1] if self.batch else []) + shape
        if node.op_type == "Unsqueeze":
            rank = len(full) + len(axes)
            for ax in sorted(v + rank if v < 0 else v for v in axes):
                if self.batch and ax == 0:
                    raise self.batch_fail(node, "inserts an axis before the batch axis")
                full.insert(ax, 1)
        else:
            rank = len(full)
            drop = {v + rank if v < 0 else v for v in axes} if axes is not None else {
                i for i, d in enumerate(full) if d == 1 and not (self.batch and i == 0)}
            if self.batch and 0 in drop:
                raise self.batch_fail(node, "squeezes the batch axis")
            full = [d for i, d in enumerate(full) if i not in drop]
        self.reshape_to(node, x, tuple(full[1:] if self.batch else full))

    def transpose(self, node) -> None:
        x = node.input[0]
        shape = self.shape(x)
        rank = len(shape) + (1 if self.batch else 0)
        perm = list(_attrs(node).get("perm", list(reversed(range(rank)))))
        if self.batch:
            if perm[0] != 0:
                raise self.batch_fail(node, f"perm {perm} moves the batch axis")
            perm = [p - 1 for p in perm[1:]]
        if perm == sorted(perm):
            self.passthrough(node)
            return
        self.emit(node.output[0], Transpose(tuple(perm)), (self.dyn(x),), node.op_type)

    def pool_params(self, node, ceil: bool = False) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
        """kernel, strides and pads (top, left, bottom, right); ceil: ceil_mode=1 is allowed (MaxPool)."""
        a = _attrs(node)
        kernel = tuple(a["kernel_shape"])
        if len(kernel) != 2:
            raise self.fail(node, f"only 2-D pooling is supported (kernel {kernel})")
        if a.get("ceil_mode", 0) and not ceil:
            raise self.fail(node, "ceil_mode=1")
        if any(d != 1 for d in a.get("dilations", (1, 1))):
            raise self.fail(node, "dilations")
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto not in ("NOTSET", "VALID"):
            raise self.fail(node, f"auto_pad={auto}")
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "the Indices output")
        return kernel, tuple(a.get("strides", (1, 1))), tuple(a.get("pads", (0, 0, 0, 0)))

    def avgpool(self, node) -> None:
        kernel, stride, pads = self.pool_params(node)
        include = bool(_attrs(node).get("count_include_pad", 0))
        self.emit(node.output[0], AvgPool(kernel, stride, pads, include), (self.dyn(node.input[0]),),
                  node.op_type)

    def global_avgpool(self, node) -> None:
        shape = self.shape(node.input[0])
        kernel = tuple(shape[1:])
        self.emit(node.output[0], AvgPool(kernel, kernel), (self.dyn(node.input[0]),), node.op_type)

    def maxpool(self, node) -> None:
        kernel, stride, pads = self.pool_params(node, ceil=True)
        if _attrs(node).get("ceil_mode", 0):
            pads = self.ceil_pads(kernel, stride, pads, self.shape(node.input[0])[-2:])
        self.emit(node.output[0], MaxPool(kernel, stride, pads), (self.dyn(node.input[0]),), node.op_type)

    @staticmethod
    def ceil_pads(kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
                  size: tuple[int, ...]) -> tuple[int, int, int, int]:
        """ceil_mode=1 as extra bottom/right padding (padded cells never win a MaxPool): ONNX's
        output size ceil((in + pads - k) / s) + 1, less one if the last window would start in
        the end padding."""
        extra = []
        for d in range(2):
            span = size[d] + pads[d] + pads[d + 2]
            out = -(-(span - kernel[d]) // stride[d]) + 1
            if (out - 1) * stride[d] >= size[d] + pads[d]:
                out -= 1
            extra.append(max(0, (out - 1) * stride[d] + kernel[d] - span))
        return pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1]

    def pad(self, node) -> None:
        a = _attrs(node)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise self.fail(node, f"mode={mode}")
        if len(node.input) > 1 and node.input[1]:
            if not self.is_const(node.input[1]):
                raise self.fail(node, "computed pads")
            pads = [int(v) for v in self.consts[node.input[1]]]
        else:
            pads = list(a.get("pads", []))
        if len(node.input) > 3 and node.input[3]:
            raise self.fail(node, "the axes input")
        value = float(self.consts[node.input[2]]) if len(node.input) > 2 and node.input[2] else \
            float(a.get("value", 0.0))
        n = len(pads) // 2
        if self.batch:
            if pads[0] or pads[n]:
                raise self.batch_fail(node, "pads the batch axis")
            pads = pads[1:n] + pads[n + 1:]
        if any(p < 0 for p in pads):
            raise self.fail(node, "negative pads")
        self.emit(node.output[0], Pad(tuple(pads), value), (self.dyn(node.input[0]),), node.op_type)

    def concat(self, node) -> None:
        if any(self.is_const(i) for i in node.input):
            raise self.fail(node, "mixes constant and computed operands")
        rank = len(self.shape(node.input[0]))
        axis = self.per_sample_axis(_attrs(node)["axis"], rank, node)
        self.emit(node.output[0], Concat(axis), tuple(self.dyn(i) for i in node.input), node.op_type)

    def shape_of(self, node) -> None:
        shape = self.shape(node.input[0])
        self.consts[node.output[0]] = np.array(((1,) if self.batch else ()) + shape, dtype=np.int64)


_HANDLERS: dict[str, Callable[[_Converter, onnx.NodeProto], None]] = {
    "Gemm": _Converter.gemm,
    "MatMul": _Converter.matmul,
    "Add": _Converter.elementwise,
    "Sub": _Converter.elementwise,
    "Mul": _Converter.elementwise,
    "Div": _Converter.elementwise,
    "Conv": _Converter.conv,
    "Relu": _Converter.activation,
    "Sigmoid": _Converter.activation,
    "Tanh": _Converter.activation,
    "Flatten": _Converter.flatten,
    "Reshape": _Converter.reshape,
    "Squeeze": _Converter.squeeze_unsqueeze,
    "Unsqueeze": _Converter.squeeze_unsqueeze,
    "Transpose": _Converter.transpose,
    "BatchNormalization": _Converter.batchnorm,
    "AveragePool": _Converter.avgpool,
    "GlobalAveragePool": _Converter.global_avgpool,
    "MaxPool": _Converter.maxpool,
    "Pad": _Converter.pad,
    "Concat": _Converter.concat,
    "Identity": _Converter.passthrough,
    "Dropout": _Converter.passthrough,
    "Shape": _Converter.shape_of,
}


def _axes(ins: list, attrs: dict) -> list[int]:
    if "axes" in attrs:
        return list(attrs["axes"])
    return [int(v) for v in ins[1]] if len(ins) > 1 and ins[1] is not None else []


def _unsqueeze(ins: list, attrs: dict) -> np.ndarray:
    x = ins[0]
    axes = _axes(ins, attrs)
    rank = x.ndim + len(axes)
    for ax in sorted(a + rank if a < 0 else a for a in axes):
        x = np.expand_dims(x, ax)
    return x


def _squeeze(ins: list, attrs: dict) -> np.ndarray:
    axes = _axes(ins, attrs)
    return np.squeeze(ins[0], axis=tuple(axes)) if axes else np.squeeze(ins[0])


def _slice(ins: list, attrs: dict) -> np.ndarray:
    x = ins[0]
    starts, ends = ins[1], ins[2]
    axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
    steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _cast(ins: list, attrs: dict) -> np.ndarray:
    return ins[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))


def _constant(ins: list, attrs: dict) -> np.ndarray:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            v = attrs[key]
            return numpy_helper.to_array(v) if key == "value" else np.array(v)
    raise NetworkError("Constant node without a supported value attribute")


def _constant_of_shape(ins: list, attrs: dict) -> np.ndarray:
    value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    return np.full([int(v) for v in ins[0]], value.reshape(-1)[0], dtype=value.dtype)


def _reshape(ins: list, attrs: dict) -> np.ndarray:
    shape = [int(v) for v in ins[1]]
    shape = [ins[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return ins[0].reshape(shape)


def _div(ins: list, attrs: dict) -> np.ndarray:
    a, b = ins
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return a // b
    return a / b


_FOLDERS: dict[str, Callable[[list, dict], np.ndarray]] = {
    "Constant": _constant,
    "Identity": lambda ins, a: ins[0],
    "Cast": _cast,
    "Shape": lambda ins, a: np.array(ins[0].shape, dtype=np.int64),
    "Gather": lambda ins, a: np.take(ins[0], ins[1], axis=a.get("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda ins, a: np.concatenate([np.atleast_1d(i) for i in ins], axis=a["axis"]),
    "Reshape": _reshape,
    "Flatten": lambda ins, a: ins[0].reshape(int(np.prod(ins[0].shape[: a.get("axis", 1)])), -1),
    "Transpose": lambda ins, a: np.transpose(ins[0], a.get("perm")),
    "Slice": _slice,
    "ConstantOfShape": _constant_of_shape,
    "Add": lambda ins, a: ins[0] + ins[1],
    "Sub": lambda ins, a: ins[0] - ins[1],
    "Mul": lambda ins, a: ins[0] * ins[1],
    "Div": _div,
    "MatMul": lambda ins, a: ins[0] @ ins[1],
}
