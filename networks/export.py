"""Write a ``torch.nn.Sequential`` as an ONNX file built directly with ``onnx.helper``.

Why not ``torch.onnx.export``: its output changes between torch versions (Reshape
via Shape/Gather/Concat, constant folding, dynamo graphs), and the networks we ship
must be plain graphs that our own ONNX importer reads. Here every module maps to one
or two ONNX nodes whose weights are copied verbatim:

    Normalize(mean, std) -> Sub, Div (constant initializers)
    nn.Linear            -> Gemm(transB=1)
    nn.Conv2d            -> Conv (stride, padding, dilation; groups=1, zero padding)
    nn.ReLU / Sigmoid / Tanh -> Relu / Sigmoid / Tanh
    nn.Flatten(1, -1)    -> Flatten(axis=1)
    nn.Unflatten(1, s)   -> Reshape([-1, *s])
    nn.PixelShuffle(r)   -> Reshape, Transpose, Reshape (depth to space, as torch orders it)

Nested ``nn.Sequential`` containers are flattened. The graph input is ``"input"`` of
shape ``[batch, *input_shape]`` and the output ``"logits"`` (or ``output_name``) of shape ``[batch, n]``;
opset 13, float32.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8  # opset 13 needs IR >= 7; 8 keeps the files readable by older runtimes.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


class Normalize(torch.nn.Module):
    """``(x - mean) / std`` with a scalar or one value per channel (dim 1 of the input).

    Exported as Sub + Div so that a verifier sees the affine map explicitly.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise ValueError(
                f"Normalize: mean has {mean_t.numel()} values, std has {std_t.numel()}"
            )
        if bool((std_t == 0).any()):
            raise ValueError("Normalize: std must be non-zero")
        self.register_buffer("mean", mean_t)  # (C,) or (1,)
        self.register_buffer("std", std_t)  # (C,) or (1,)

    def _shaped(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Reshape a (C,) buffer to (1, C, 1, ...) for an input with ``ndim`` dims."""
        return t.reshape([1, -1] + [1] * (ndim - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, ...) -> (B, C, ...)."""
        return (x - self._shaped(self.mean, x.dim())) / self._shaped(self.std, x.dim())


_ACTIVATIONS: dict[type[torch.nn.Module], str] = {
    torch.nn.ReLU: "Relu",
    torch.nn.Sigmoid: "Sigmoid",
    torch.nn.Tanh: "Tanh",
}


_SUPPORTED = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Flatten, torch.nn.Unflatten, torch.nn.PixelShuffle, Normalize,
              *_ACTIVATIONS)


def _flatten_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The leaf modules of (possibly nested) Sequential containers, in order."""
    if isinstance(model, torch.nn.Sequential):
        out: list[torch.nn.Module] = []
        for child in model:
            out.extend(_flatten_modules(child))
        return out
    return [model]


def _conv_pads(conv: torch.nn.Conv2d) -> list[int]:
    """ONNX ``pads`` [top, left, bottom, right] for a Conv2d's ``padding``."""
    if conv.padding == "valid":
        return [0, 0, 0, 0]
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        begins = [t // 2 for t in totals]
        return begins + [t - b for t, b in zip(totals, begins)]
    ph, pw = conv.padding
    return [ph, pw, ph, pw]


def _unsupported_reason(module: torch.nn.Module, shape: tuple[int, ...]) -> str | None:
    """Why ``module`` (applied to a per-sample ``shape``) cannot be exported, or None."""
    kind = type(module).__name__
    if isinstance(module, torch.nn.Linear):
        if len(shape) != 1:
            return f"{kind} needs a flat input, got per-sample shape {shape} (add nn.Flatten)"
    elif isinstance(module, torch.nn.Conv2d):
        if module.groups != 1:
            return f"{kind} with groups={module.groups} (only groups=1)"
        if module.padding_mode != "zeros":
            return f"{kind} with padding_mode={module.padding_mode!r} (only 'zeros')"
        if len(shape) != 3:
            return f"{kind} needs a (C, H, W) input, got per-sample shape {shape}"
    elif isinstance(module, torch.nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            return f"{kind}(start_dim={module.start_dim}, end_dim={module.end_dim}) (only 1, -1)"
    elif isinstance(module, torch.nn.Unflatten):
        if module.dim != 1 or len(shape) != 1:
            return f"{kind}(dim={module.dim}) of per-sample shape {shape} (only dim 1 of a flat input)"
    elif isinstance(module, torch.nn.PixelShuffle):
        if len(shape) != 3:
            return f"{kind} needs a (C, H, W) input, got per-sample shape {shape}"
    elif isinstance(module, Normalize):
        n = max(module.mean.numel(), module.std.numel())
        if n != 1 and (not shape or shape[0] != n):
            return f"{kind} with {n} values does not match the channel dim of per-sample shape {shape}"
    elif not isinstance(module, tuple(_ACTIVATIONS)):
        return f"{kind} (unsupported module type)"
    return None


def _normalize_const(t: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A (C,) Normalize buffer shaped (C, 1, ...) to broadcast over [batch, *shape]."""
    arr = t.detach().cpu().numpy().astype(np.float32)
    if arr.size == 1:
        return arr.reshape([])
    return arr.reshape([arr.size] + [1] * (len(shape) - 1))


def to_onnx(
    model: torch.nn.Sequential,
    input_shape: tuple[int, ...],
    path: str | Path,
    name: str = "profit_net",
    output_name: str = OUTPUT_NAME,
) -> onnx.ModelProto:
    """Write ``model`` (per-sample input ``input_shape``, e.g. (1, 28, 28)) to ``path``.

    Every unsupported module is listed in one ``ValueError`` before anything is
    written. The graph is checked with ``onnx.checker.check_model``; the model is
    also returned.
    """
    modules = _flatten_modules(model)
    if not modules:
        raise ValueError("cannot export an empty network")
    shapes: list[tuple[int, ...]] = []  # per-sample shape entering each module
    x = torch.zeros((1, *input_shape))
    problems: list[str] = []
    with torch.no_grad():
        for i, module in enumerate(modules):
            shapes.append(tuple(x.shape[1:]))
            if problems:  # shapes past a failure are unknown: check the module type only
                if not isinstance(module, _SUPPORTED):
                    problems.append(f"module {i}: {type(module).__name__} (unsupported module type)")
                continue
            reason = _unsupported_reason(module, shapes[-1])
            if reason is not None:
                problems.append(f"module {i}: {reason}")
                continue
            try:
                x = module(x)
            except RuntimeError as err:
                problems.append(f"module {i}: {type(module).__name__} fails on per-sample shape {shapes[-1]}: {err}")
    if problems:
        raise ValueError("cannot export to ONNX: " + "; ".join(problems))
    out_shape = tuple(x.shape[1:])
    if len(out_shape) != 1:
        raise ValueError(f"the network's output must be flat per sample, got {out_shape}")

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(arr: np.ndarray | torch.Tensor, key: str) -> str:
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), key))
        return key

    def init_shape(values: list[int], key: str) -> str:
        inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), key))
        return key

    current = INPUT_NAME
    for i, (module, shape) in enumerate(zip(modules, shapes)):
        last = i == len(modules) - 1
        out = output_name if last else f"t{i}"
        p = f"m{i}"
        if isinstance(module, torch.nn.Linear):
            bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
            w, b = init(module.weight, f"{p}.weight"), init(bias, f"{p}.bias")
            nodes.append(helper.make_node("Gemm", [current, w, b], [out], name=f"{p}_Gemm", transB=1))
        elif isinstance(module, torch.nn.Conv2d):
            bias = module.bias if module.bias is not None else torch.zeros(module.out_channels)
            w, b = init(module.weight, f"{p}.weight"), init(bias, f"{p}.bias")
            nodes.append(
                helper.make_node(
                    "Conv",
                    [current, w, b],
                    [out],
                    name=f"{p}_Conv",
                    kernel_shape=list(module.kernel_size),
                    strides=list(module.stride),
                    pads=_conv_pads(module),
                    dilations=list(module.dilation),
                    group=1,
                )
            )
        elif isinstance(module, Normalize):
            mean = init(_normalize_const(module.mean, shape), f"{p}.mean")
            std = init(_normalize_const(module.std, shape), f"{p}.std")
            mid = f"{p}_centred"
            nodes.append(helper.make_node("Sub", [current, mean], [mid], name=f"{p}_Sub"))
            nodes.append(helper.make_node("Div", [mid, std], [out], name=f"{p}_Div"))
        elif isinstance(module, torch.nn.Flatten):
            nodes.append(helper.make_node("Flatten", [current], [out], name=f"{p}_Flatten", axis=1))
        elif isinstance(module, torch.nn.Unflatten):
            target = init_shape([-1, *module.unflattened_size], f"{p}.shape")
            nodes.append(helper.make_node("Reshape", [current, target], [out], name=f"{p}_Reshape"))
        elif isinstance(module, torch.nn.PixelShuffle):
            r, (c, h, w) = module.upscale_factor, shape
            split, merged = init_shape([-1, c // (r * r), r, r, h, w], f"{p}.split"), init_shape(
                [-1, c // (r * r), h * r, w * r], f"{p}.merged")
            nodes.append(helper.make_node("Reshape", [current, split], [f"{p}_split"], name=f"{p}_Reshape"))
            nodes.append(helper.make_node("Transpose", [f"{p}_split"], [f"{p}_moved"], name=f"{p}_Transpose",
                                          perm=[0, 1, 4, 2, 5, 3]))
            nodes.append(helper.make_node("Reshape", [f"{p}_moved", merged], [out], name=f"{p}_Merge"))
        else:
            op = _ACTIVATIONS[next(t for t in _ACTIVATIONS if isinstance(module, t))]
            nodes.append(helper.make_node(op, [current], [out], name=f"{p}_{op}"))
        current = out

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *input_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [BATCH_DIM, out_shape[0]])],
        initializer=inits,
    )
    proto = helper.make_model(graph, producer_name="profit", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return proto
