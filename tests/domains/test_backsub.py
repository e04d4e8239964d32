"""The back-substitution engine: rows of a convolution's neurons carried as windows
(`Patches`) give the same bounds as the same rows carried densely, in float64 up to
rounding, on random networks over every op (windows over the border, asymmetric pads,
dilation, strides; Affine, Sigmoid/Tanh, MaxPool, Pad, Concat and Add fall back to
dense rows), for rows shared by the batch and rows chosen per region, and for both
ways of mapping windows through a conv (cached matrix, conv_transpose)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings

from domains import backsub
from domains.backsub import backward, default_relaxation, identity_rows, propagate, start_patches
from networks.ir import Conv, Node
from tests.domains.netgen import Case, cases, one_thread

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

RANDOM = settings(max_examples=40, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.mark.parametrize("matrix_max", [backsub._PATCH_MATRIX_MAX, 0.0], ids=["matrix", "conv_transpose"])
@RANDOM
@given(case=cases())
def test_patches_match_dense_rows(matrix_max: float, case: Case) -> None:
    convs = [n for n in case.net.nodes if isinstance(n.layer, Conv)]
    assume(convs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backsub, "_PATCH_MATRIX_MAX", matrix_max)
        _check_conv_rows(case, convs)


def _check_conv_rows(case: Case, convs: list[Node]) -> None:
    """Every neuron of each conv node as rows shared by the batch, then half of them
    chosen per region: windows and dense rows give the same bounds."""
    dtype = torch.float64
    lower, upper = case.region.lower.to(dtype), case.region.upper.to(dtype)
    B = lower.shape[0]
    ctx = propagate(case.net, lower, upper, default_relaxation, everything=True, unstable_only=False, budget=1e8)
    g = torch.Generator().manual_seed(0)
    for node in convs:
        shape = node.shape
        n = int(torch.Size(shape).numel())
        rows = torch.arange(n)
        dense = identity_rows(shape, rows, dtype)
        want = backward(ctx, node.name, dense, dense, lower, upper)
        windows = start_patches(shape, rows, dtype)
        got = backward(ctx, node.name, windows, windows, lower, upper)
        for w, x in zip(want, got):
            torch.testing.assert_close(x, w.expand_as(x), rtol=1e-9, atol=1e-9)
        per_region = torch.stack([torch.randperm(n, generator=g)[:max(1, n // 2)] for _ in range(B)])
        dense = torch.zeros(B, per_region.shape[1], n, dtype=dtype).scatter_(2, per_region.unsqueeze(-1), 1.0)
        dense = dense.reshape(B, -1, *shape)
        want = backward(ctx, node.name, dense, dense, lower, upper)
        windows = start_patches(shape, per_region, dtype)
        got = backward(ctx, node.name, windows, windows, lower, upper)
        for w, x in zip(want, got):
            torch.testing.assert_close(x, w, rtol=1e-9, atol=1e-9)
