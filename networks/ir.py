"""A small typed intermediate representation of feed-forward networks.

A `Network` is a DAG of `Node`s in topological order. Each node holds one
immutable `Layer` (op type plus weights as torch tensors) and the names of the
nodes it reads. All shapes are *per sample*: execution is always batched along
dim 0, whatever batch size the ONNX file declared.

Layers know their weights and `forward` only; abstract domains live in
`domains/` and dispatch on the layer type through their own registries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


class NetworkError(ValueError):
    """A network could not be loaded or executed (bad file, bad shape)."""


class UnsupportedOpError(NetworkError):
    """The ONNX file uses an op or attribute the IR does not support."""


@dataclass(frozen=True, eq=False)
class Layer:
    """Base class: an op with its constant parameters."""

    def forward(self, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def op(self) -> str:
        return type(self).__name__

    def tensors(self) -> dict[str, Tensor]:
        """The tensor-valued fields (weights), by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Tensor)}

    def cast(self, dtype: torch.dtype) -> "Layer":
        """A copy with every weight cast to `dtype`."""
        return dataclasses.replace(self, **{k: v.to(dtype) for k, v in self.tensors().items()})

    def n_params(self) -> int:
        return sum(t.numel() for t in self.tensors().values())


@dataclass(frozen=True, eq=False)
class Input(Layer):
    """The network input (a placeholder node)."""

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0]


@dataclass(frozen=True, eq=False)
class Linear(Layer):
    """y = x W^T + b over the last dimension (ONNX Gemm, MatMul [+ Add])."""

    weight: Tensor  # (out, in)
    bias: Tensor  # (out,)

    def linear(self, x: Tensor) -> Tensor:
        return x.matmul(self.weight.transpose(0, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + self.bias


@dataclass(frozen=True, eq=False)
class Conv(Layer):
    """2-D convolution, group 1 (ONNX Conv). pads = (top, left, bottom, right)."""

    weight: Tensor  # (C_out, C_in, kH, kW)
    bias: Tensor  # (C_out,)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def symmetric_padding(self) -> tuple[int, int] | None:
        t, l, b, r = self.pads
        return (t, l) if (t, l) == (b, r) else None

    def linear(self, x: Tensor) -> Tensor:
        """The convolution without bias."""
        padding = self.symmetric_padding
        if padding is None:
            t, l, b, r = self.pads
            x, padding = F.pad(x, (l, r, t, b)), (0, 0)
        return F.conv2d(x, self.weight, None, self.stride, padding, self.dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + self.bias.view(-1, 1, 1)


@dataclass(frozen=True, eq=False)
class Affine(Layer):
    """Elementwise y = x * scale + shift with constant tensors of the per-sample
    shape (ONNX Add/Sub/Mul/Div by a constant, BatchNormalization)."""

    scale: Tensor  # per-sample shape
    shift: Tensor  # per-sample shape

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


@dataclass(frozen=True, eq=False)
class Add(Layer):
    """Sum of two computed tensors of equal shape (residual connections)."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


@dataclass(frozen=True, eq=False)
class Relu(Layer):
    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


@dataclass(frozen=True, eq=False)
class Softplus(Layer):
    """softplus_beta(x) = log(1 + exp(beta x)) / beta: a smooth ReLU (-> ReLU as beta -> inf).
    Not an ONNX import target: `profit.attribution.beta_smoothed_network` puts it in place of Relu."""

    beta: float = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, beta=self.beta)


@dataclass(frozen=True, eq=False)
class Sigmoid(Layer):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)


@dataclass(frozen=True, eq=False)
class Tanh(Layer):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


@dataclass(frozen=True, eq=False)
class Reshape(Layer):
    """Reshape to a per-sample shape (ONNX Reshape, Flatten, Squeeze, Unsqueeze)."""

    shape: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


@dataclass(frozen=True, eq=False)
class Transpose(Layer):
    """Permute the per-sample dimensions (perm excludes the batch dim)."""

    perm: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, *(p + 1 for p in self.perm))


@dataclass(frozen=True, eq=False)
class AvgPool(Layer):
    """2-D average pooling; pads = (top, left, bottom, right)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False

    def forward(self, x: Tensor) -> Tensor:
        t, l, b, r = self.pads
        if (t, l) == (b, r) and (t, l) != (0, 0) and 2 * max(t, l) <= min(self.kernel):
            return F.avg_pool2d(x, self.kernel, self.stride, (t, l),
                                count_include_pad=self.count_include_pad)
        if self.pads == (0, 0, 0, 0):
            return F.avg_pool2d(x, self.kernel, self.stride)
        padded = F.pad(x, (l, r, t, b))
        sums = F.avg_pool2d(padded, self.kernel, self.stride, divisor_override=1)
        if self.count_include_pad:
            return sums / (self.kernel[0] * self.kernel[1])
        ones = F.pad(torch.ones_like(x[:1, :1]), (l, r, t, b))
        counts = F.avg_pool2d(ones, self.kernel, self.stride, divisor_override=1)
        return sums / counts


@dataclass(frozen=True, eq=False)
class MaxPool(Layer):
    """2-D max pooling; padded cells never win (pads = top, left, bottom, right)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def forward(self, x: Tensor) -> Tensor:
        t, l, b, r = self.pads
        if self.pads != (0, 0, 0, 0):
            x = F.pad(x, (l, r, t, b), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


@dataclass(frozen=True, eq=False)
class Pad(Layer):
    """Constant padding of the per-sample dims: pads = (begin_0.., end_0..)."""

    pads: tuple[int, ...]
    value: float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.pads) // 2
        torch_pads: list[int] = []
        for d in reversed(range(n)):
            torch_pads += [self.pads[d], self.pads[n + d]]
        return F.pad(x, torch_pads, value=self.value)


@dataclass(frozen=True, eq=False)
class Concat(Layer):
    """Concatenate computed tensors along a per-sample axis."""

    axis: int

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=self.axis + 1)


@dataclass(frozen=True)
class Node:
    """One IR node: `layer` applied to the outputs of `inputs`."""

    name: str
    layer: Layer
    inputs: tuple[str, ...]
    shape: tuple[int, ...]  # per-sample output shape
    onnx_op: str = ""  # the ONNX op(s) this node came from, for messages


@dataclass(frozen=True)
class Network:
    """A DAG of nodes in topological order; nodes[0] is the Input."""

    nodes: tuple[Node, ...]
    source: str = ""  # file the network was loaded from
    onnx_input_shape: tuple[int | str, ...] = ()  # as declared in the file
    has_batch_dim: bool = True  # whether the ONNX tensors carry a batch dim

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in seen]
            if missing:
                raise NetworkError(f"node '{node.name}' reads undefined {missing}")
            seen.add(node.name)

    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input.shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output.shape

    @property
    def n_outputs(self) -> int:
        return int(torch.Size(self.output_shape).numel())

    @property
    def dtype(self) -> torch.dtype:
        for node in self.nodes:
            for t in node.layer.tensors().values():
                return t.dtype
        return torch.float32

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def consumers(self) -> dict[str, list[str]]:
        """For each node name, the names of the nodes that read it."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.name)
        return out

    def n_params(self) -> int:
        return sum(n.layer.n_params() for n in self.nodes)

    def to(self, dtype: torch.dtype) -> "Network":
        """A copy with all weights in `dtype` (e.g. float64 for witness checks)."""
        nodes = tuple(dataclasses.replace(n, layer=n.layer.cast(dtype)) for n in self.nodes)
        return dataclasses.replace(self, nodes=nodes)

    def prepare(self, x: Tensor) -> Tensor:
        """Reshape `x` to (B, *input_shape): accepts that shape, one unbatched
        sample, or flat rows of the right size."""
        x = torch.as_tensor(x)
        numel = int(torch.Size(self.input_shape).numel())
        if tuple(x.shape[1:]) == self.input_shape:
            return x
        if tuple(x.shape) == self.input_shape:
            return x.unsqueeze(0)
        if x.dim() >= 1 and x.numel() % numel == 0 and (x.dim() <= 2 and x.shape[-1] == numel):
            return x.reshape(-1, *self.input_shape)
        raise NetworkError(
            f"input of shape {tuple(x.shape)} does not fit the network input "
            f"{self.input_shape} (expected (batch, {', '.join(map(str, self.input_shape))}))")

    def forward_all(self, x: Tensor) -> dict[str, Tensor]:
        """Every node's output for a batch x of shape (B, *input_shape)."""
        x = self.prepare(x).to(self.dtype)
        values: dict[str, Tensor] = {self.input.name: x}
        for node in self.nodes[1:]:
            values[node.name] = node.layer.forward(*(values[i] for i in node.inputs))
        return values

    def forward(self, x: Tensor) -> Tensor:
        """The network output (B, *output_shape) for a batch of inputs."""
        return self.forward_all(x)[self.output.name]

    __call__ = forward

    def logits(self, x: Tensor) -> Tensor:
        """The output flattened to (B, n_outputs) (B may be 0)."""
        y = self.forward(x)
        return y.reshape(y.shape[0], self.n_outputs)

    def flat_output(self) -> Network:
        """This network with its output flattened to (n_outputs,) (a trailing Reshape when its
        output has another shape): specs read output j as the j-th value in row-major order."""
        if self.output_shape == (self.n_outputs,):
            return self
        name = self.output.name + "/flat"
        while any(n.name == name for n in self.nodes):
            name += "_"
        node = Node(name, Reshape((self.n_outputs,)), (self.output.name,), (self.n_outputs,), "Flatten")
        return dataclasses.replace(self, nodes=(*self.nodes, node))
