"""Networks: ONNX -> typed IR, concrete batched execution, shipped models.

    from networks import load_onnx
    net = load_onnx("networks/models/mnist_mlp.onnx")
    logits = net(x)            # x: (B, *net.input_shape)

The IR (`networks.ir`) is a DAG of immutable layers (Linear, Conv, Affine, Add,
Relu, Softplus, Sigmoid, Tanh, Reshape, Transpose, AvgPool, MaxPool, Pad, Concat); the
abstract domains in `domains/` interpret it. Adding an ONNX op is one handler
in `networks.onnx_import` (plus a layer class here if it is a new kind).
"""

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from networks.ir import (
    Add, Affine, AvgPool, Concat, Conv, Input, Layer, Linear, MaxPool, Network, NetworkError, Node,
    Pad, Relu, Reshape, Sigmoid, Softplus, Tanh, Transpose, UnsupportedOpError,
)

if TYPE_CHECKING:
    from networks.onnx_import import from_model, load_onnx

_LAZY = {"from_model": "networks.onnx_import", "load_onnx": "networks.onnx_import"}  # onnx costs ~1 s to import


def __getattr__(name: str) -> object:
    """Load the ONNX importer on first use (PEP 562): the IR and the domains do not need onnx."""
    if name not in _LAZY:
        raise AttributeError(f"module 'networks' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_NETWORK = MODELS_DIR / "mnist_mlp.onnx"


def shipped(name: str) -> Path:
    """Path of a network shipped in networks/models (name with or without .onnx)."""
    path = MODELS_DIR / (name if name.endswith(".onnx") else f"{name}.onnx")
    if not path.exists():
        available = sorted(p.stem for p in MODELS_DIR.glob("*.onnx"))
        raise NetworkError(f"no shipped network '{name}' (available: {', '.join(available)})")
    return path


__all__ = [
    "Add", "Affine", "AvgPool", "Concat", "Conv", "Input", "Layer", "Linear", "MaxPool", "Network",
    "NetworkError", "Node", "Pad", "Relu", "Reshape", "Sigmoid", "Softplus", "Tanh", "Transpose",
    "UnsupportedOpError", "from_model", "load_onnx", "shipped", "MODELS_DIR", "DEFAULT_NETWORK",
]
