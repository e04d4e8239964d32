"""Networks and inputs shared by the attribution tests: the shipped MNIST nets and small random ones."""

from __future__ import annotations

import dataclasses
import functools

import torch

from networks import load_onnx, shipped
from networks.datasets import load_samples
from networks.ir import AvgPool, Conv, Linear, Network, Relu, Reshape
from tests.domains.netgen import build


@functools.lru_cache(maxsize=None)
def shipped_net(name: str) -> Network:
    return load_onnx(shipped(name))


def samples(n: int) -> torch.Tensor:
    """The first n shipped MNIST samples (n, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(load_samples()[0][:n])


def zero_bias(net: Network) -> Network:
    """A copy of `net` whose Linear/Conv biases are 0 (then LRP-eps and IxG conserve f(x))."""
    nodes = tuple(dataclasses.replace(n, layer=dataclasses.replace(n.layer, bias=torch.zeros_like(n.layer.bias)))
                  if isinstance(n.layer, (Linear, Conv)) else n for n in net.nodes)
    return dataclasses.replace(net, nodes=nodes)


def random_mlp(seed: int, widths: tuple[int, ...] = (6, 12, 10, 3)) -> Network:
    """A ReLU MLP with the given widths (input first) and seeded weights."""
    g = torch.Generator().manual_seed(seed)
    layers, prev = [], "x"
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        layers.append((f"fc{i}", Linear(torch.randn(n_out, n_in, generator=g) / n_in ** 0.5,
                                        torch.randn(n_out, generator=g) * 0.3), (prev,)))
        prev = f"fc{i}"
        if i < len(widths) - 2:
            layers.append((f"relu{i}", Relu(), (prev,)))
            prev = f"relu{i}"
    return build((widths[0],), layers)


def random_conv(seed: int) -> Network:
    """Conv (stride 2, asymmetric pads) -> ReLU -> AvgPool -> Conv -> ReLU -> flatten -> Linear on (2, 8, 8)."""
    g = torch.Generator().manual_seed(seed)
    return build((2, 8, 8), [
        ("c1", Conv(torch.randn(4, 2, 3, 3, generator=g) / 4, torch.randn(4, generator=g) * 0.2, (2, 2),
                    (1, 1, 0, 0)), ("x",)),
        ("r1", Relu(), ("c1",)),
        ("p1", AvgPool((2, 2), (1, 1)), ("r1",)),
        ("c2", Conv(torch.randn(3, 4, 2, 2, generator=g) / 3, torch.randn(3, generator=g) * 0.2), ("p1",)),
        ("r2", Relu(), ("c2",)),
        ("flat", Reshape((12,)), ("r2",)),
        ("fc", Linear(torch.randn(4, 12, generator=g) / 3, torch.randn(4, generator=g) * 0.2), ("flat",)),
    ])
