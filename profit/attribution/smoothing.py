"""beta-smoothed explanations (Dombrowski et al., NeurIPS 2019): the same method on a copy of the
network whose every ReLU is softplus_beta. Softplus has second derivatives (the manipulation
attack needs them), and its gradient maps are smoother the smaller beta; as beta -> inf they
approach the ReLU network's."""

from __future__ import annotations

import copy
import dataclasses

from torch import Tensor

from networks.ir import Network, Relu, Softplus
from profit.attribution.methods import Attribution, Target, resolve_target
from profit.errors import ProfitError


def beta_smoothed_network(net: Network, beta: float) -> Network:
    """A copy of `net` with every Relu replaced by Softplus(beta) (an IR transform; weights shared)."""
    if not beta > 0:
        raise ProfitError(f"beta must be > 0, got {beta}")
    nodes = tuple(dataclasses.replace(n, layer=Softplus(float(beta))) if isinstance(n.layer, Relu) else n
                  for n in net.nodes)
    return dataclasses.replace(net, nodes=nodes)


class BetaSmoothed(Attribution):
    """`method` (an Attribution instance, options kept) on the beta-smoothed copy of its network;
    target None: the class the original (ReLU) network predicts."""

    def __init__(self, method: Attribution, beta: float) -> None:
        super().__init__(beta_smoothed_network(method.net, beta))
        self.original = method.net
        self.beta = beta
        self.method = copy.copy(method)
        self.method.net = self.net

    def attribute(self, inputs: Tensor, target: Target = None, **kwargs) -> Tensor:
        if target is None:
            target = resolve_target(self.original, self._prepare(inputs), None)
        return self.method.attribute(inputs, target, **kwargs)
