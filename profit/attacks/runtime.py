"""Re-execution of candidate counterexamples with onnxruntime: what makes them reportable.

- `onnx_outputs`: onnxruntime's outputs of the ONNX file a network came from.
- `confirm`: accepts a point only if it lies inside its box (exactly, no tolerance)
  and onnxruntime's outputs violate the spec (margin <= -tol).

onnxruntime is imported on first use (it costs a second of start-up).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from networks.ir import Network
from profit.errors import ProfitError
from specs.properties import Spec
from specs.regions import Box

if TYPE_CHECKING:
    import onnxruntime as ort


@functools.lru_cache(maxsize=8)
def _cached_session(path: str) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise ProfitError(f"{path}: onnxruntime cannot load the network ({str(exc).splitlines()[0]})") from None


def session(onnx_path_or_session: str | Path | ort.InferenceSession) -> ort.InferenceSession:
    """An onnxruntime session (single-threaded, cached per path) for a path, or the session itself."""
    if not isinstance(onnx_path_or_session, (str, Path)):
        return onnx_path_or_session
    return _cached_session(str(Path(onnx_path_or_session).resolve()))


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def onnx_outputs(onnx_path_or_session: str | Path | ort.InferenceSession, net: Network, x: Tensor) -> Tensor:
    """onnxruntime's outputs for x (B, *net.input_shape), flattened to (B, n_outputs) float64.

    A symbolic batch dimension runs the batch at once; a fixed batch of 1, or no batch
    dimension, runs one sample at a time in the file's declared input shape.
    """
    sess = session(onnx_path_or_session)
    inp = sess.get_inputs()[0]
    dtype = _ORT_DTYPES.get(inp.type)
    if dtype is None:
        raise ProfitError(f"onnxruntime input '{inp.name}' has unsupported type {inp.type}")
    array = x.detach().cpu().numpy().astype(dtype)
    B = array.shape[0]
    if B == 0:
        return torch.zeros(0, net.n_outputs, dtype=torch.float64)
    dims = net.onnx_input_shape
    if net.has_batch_dim and dims and isinstance(dims[0], str):
        feeds = [array.reshape(B, *dims[1:])]
    else:
        feeds = [array[b].reshape(dims) for b in range(B)]
    outs = [np.asarray(sess.run(None, {inp.name: f})[0], dtype=np.float64) for f in feeds]
    return torch.from_numpy(np.concatenate([o.reshape(-1, net.n_outputs) for o in outs]))


def confirm(
    onnx_path_or_session: str | Path | ort.InferenceSession,
    net: Network,
    x: Tensor,
    region: Box,
    spec: Spec,
    tol: float = 0.0,
) -> Tensor:
    """Which points x (B, *shape) are real counterexamples, bool (B,).

    True iff x[b] is finite, inside box b exactly, and onnxruntime's outputs for it
    violate the spec with margin <= -tol. Only confirmed points may be reported.
    """
    B = region.batch_size
    if B == 0:
        return torch.zeros(0, dtype=torch.bool)
    x = x.detach().reshape(region.lower.shape).to(region.lower.dtype)
    inside = region.contains(x) & torch.isfinite(x).reshape(B, -1).all(dim=1)
    y = onnx_outputs(onnx_path_or_session, net, x)
    margin = spec.expand(B).margin(y)
    return inside & torch.isfinite(margin) & (margin <= -tol)
