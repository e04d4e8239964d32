"""Proof features: what a robustness proof uses at one layer, pruned to a small sufficient set.

After ProFIt (Banerjee, Singh et al., "Interpreting Robustness Proofs of Deep Neural
Networks", ICLR 2024), with its quirks fixed and more domains and layers.

    pf = ProofFeatures.compute(net, x, labels, eps=0.02, domain="crown")   # or .extract(result, ...)
    pruned = pf.prune()                  # one `Pruned` per image: kept_suffix, kept_greedy, calls, ...
    curves = pf.topk()                   # top-k sufficiency for profit / weight / random priorities
    maps = pf.visualize(pruned)          # input gradients of each kept feature (profit.viz.features plots them)

Definitions (issue 6):

- Property: the L_inf ball clip(x +- eps, 0, 1) (the network's own normalisation follows inside
  the network), local robustness C y + d > 0 with one row y_label - y_j per other class; proven
  iff the domain's `proven` (every row's lower bound > 0).
- Proof features at a layer: the proof's shape at that layer projected to one interval
  [l_i, u_i] per neuron, i.e. the domain's bounds `result.bounds[node]`. The default layer is the
  input of the final Linear layer (the post-ReLU penultimate activations, ProFIt's choice); any
  ReLU layer can be chosen (`layer` = index among the ReLU nodes, -1 = last, or a node name).
- Sufficiency of a subset S: every feature outside S is replaced by the constant 0 (its column
  of the next Linear layer's weight is zeroed, the bias stays; before a Conv an elementwise 0/1
  mask is inserted), and the property is re-proven with the same domain. At the last layer the
  domain re-bounds the K candidate sets at once without re-running the unchanged part of the
  network (`Domain.last_layer_lower`, the rows (C W)_{j,i} * keep_i over the stored proof):
  Box: interval arithmetic on the stored [l, u]; DeepZ: the stored zonotope along the rows
  (correlations kept); DeepPoly/CROWN/alpha-CROWN: back-substitution through all layers from
  the stored intermediate bounds (they do not depend on the last layer). At other layers (and
  for a domain without the hook) the pruned network is re-run by the domain. A kept set is reported only if it was proven this way; with
  `PruneOptions(confirm=True)` it is proven once more by a fresh run of the domain on the literal
  pruned network (the specs in specs/suites re-verify every kept set that way). A margin within
  float32 rounding of 0 (`domains.base.NEAR_ZERO`), of the proof or of a kept set, stands only
  if the domain's float64 run on the literal (pruned) network agrees.
- Priority of feature i: max(|l_i|, |u_i|) * max_j |(C W)_{j,i}| (an upper bound on its
  contribution to any margin) at the last layer; at a hidden layer, where no C applies,
  max(|l_i|, |u_i|) * max_o |W_{o,i}| with W the (dense) next Linear/Conv map. Zero-priority
  features (dead over the region, or zero weight) are always removed.
- Pruning: sort the non-zero features by priority; search for the largest removable prefix of
  low-priority ones such that the kept high-priority suffix is still sufficient (a boundary
  search: `fanout` candidates per bound call, `fanout=1` is ProFIt's binary search, about
  log2(n) calls); removing 1 feature, all of them, and n_nz in {0, 1, 2} are all handled. Then a
  greedy pass tries to drop each kept feature (lowest priority first) while the proof holds.
- Top-k: for k = 1..20, the fraction of proven properties still proven with only the top-k
  non-zero features under the ProFIt priority, a weight-only priority (max_j |(C W)_{j,i}|) and
  a random order (mean of 5 seeds), and the mean relative change |m - m_k| / (|m| + 1e-9) of the
  margin lower bound m (k >= n_nz keeps every non-zero feature).
- Visualisation: the gradient of each kept feature's midpoint (l_i + u_i) / 2 with respect to the
  input image, through the domain's bound computation (autograd); the aggregate map is the
  priority-weighted sum sum_i p_i * grad_i (features that carry more of the proof count more; the
  plots scale every map to its own largest |value|, so the sum's overall scale is irrelevant).

Sound as the domains are: every reported kept set was proven sufficient by the chosen domain.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from domains import Domain, get_domain
from domains.base import NEAR_ZERO, BoundResult, recheck_near_zero
from networks.ir import Affine, Conv, Linear, Network, Node, Relu, Reshape
from profit.errors import ProfitError
from specs.properties import Spec, robustness
from specs.regions import Box, linf_ball

PRIORITIES = ("profit", "weight", "random")
TOPK = tuple(range(1, 21))
RANDOM_SEEDS = 5  # random priority: mean over this many seeds
_CHUNK = 128  # candidate sets per bound call (memory: K * m spec rows)
_EPS_REL = 1e-9  # denominator guard of the relative margin change (as ProFIt)


class FeatureError(ProfitError):
    """Proof features cannot be taken at the requested layer (bad index, unsupported next layer)."""


@dataclass(frozen=True)
class PruneOptions:
    """How `ProofFeatures.prune` searches for a small sufficient set.

    fanout: candidate prefix removals per bound call in the suffix search (1 = binary search;
      >= the number of non-zero features = one exhaustive scan, which finds the largest prefix).
    greedy: after the suffix search, try to drop every kept feature, lowest priority first.
    greedy_fanout: greedy decisions evaluated speculatively per bound call (same result as one by one).
    max_greedy: try at most this many features greedily (None: all of them).
    confirm: also re-prove the final kept set with a fresh run of the domain on the literal pruned
      network (an independent re-check; the search's own checks already are the domain's bounds
      of the pruned network, so this costs one more full run per image and is off by default).
    priority: the order of removal, "profit" (default), "weight" or "random" (seeded by `seed`).
    """

    fanout: int = 8
    greedy: bool = True
    greedy_fanout: int = 16
    max_greedy: int | None = None
    confirm: bool = False
    priority: str = "profit"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fanout < 1 or self.greedy_fanout < 1:
            raise FeatureError("fanout and greedy_fanout must be >= 1")
        if self.priority not in PRIORITIES:
            raise FeatureError(f"unknown priority '{self.priority}' (choose from {', '.join(PRIORITIES)})")


@dataclass(frozen=True)
class Pruned:
    """The pruning outcome for one property (one image of the batch)."""

    index: int  # position in the batch
    proven: bool  # did the domain prove the property with every feature
    width: int  # features at the layer
    nonzero: int  # features with non-zero priority
    kept_suffix: Tensor  # (k_s,) long, after the suffix search, highest priority first
    kept_greedy: Tensor  # (k_g,) long, after the greedy step (the final set), highest priority first
    margin: float  # spec margin lower bound of the full proof
    kept_margin: float  # spec margin lower bound with only kept_greedy (> 0: sufficient)
    calls: int  # bound calls (batched checks count once; the confirming run included)
    checks: int  # candidate sets checked
    seconds: float  # this image's share of the extraction plus its pruning

    @property
    def kept(self) -> Tensor:
        """The final kept set (kept_greedy)."""
        return self.kept_greedy


@dataclass(frozen=True)
class TopK:
    """Top-k sufficiency over a batch: arrays (P, K, B), NaN where the full proof failed."""

    ks: tuple[int, ...]
    priorities: tuple[str, ...]
    proven: Tensor  # (P, K, B) 1 if still proven with the top-k features (random: mean over seeds)
    rel_change: Tensor  # (P, K, B) |m - m_k| / (|m| + 1e-9) of the margin lower bound m

    def success(self) -> Tensor:
        """(P, K) % of the proven properties still proven with the top-k features."""
        return 100 * _nanmean(self.proven, -1)

    def mean_rel_change(self) -> Tensor:
        """(P, K) mean relative change of the margin lower bound."""
        return _nanmean(self.rel_change, -1)


@dataclass(frozen=True)
class FeatureMaps:
    """Input-gradient maps of the kept features of one image."""

    index: int  # position in the batch
    image: Tensor  # (*input_shape) the image
    features: Tensor  # (k,) long, feature indices, highest priority first
    priorities: Tensor  # (k,)
    maps: Tensor  # (k, *input_shape) d((l_i + u_i) / 2) / d image
    aggregate: Tensor  # (*input_shape) sum_i priorities[i] * maps[i]


def feature_nodes(net: Network) -> list[str]:
    """Names of the ReLU nodes, in order: the layers proof features can be taken at."""
    return [n.name for n in net.nodes if isinstance(n.layer, Relu)]


def resolve_layer(net: Network, layer: int | str) -> str:
    """The feature node for `layer`: an index among the ReLU nodes (-1 = last) or a node name."""
    names = feature_nodes(net)
    if isinstance(layer, str) and not layer.lstrip("-").isdigit():
        if layer not in names:
            raise FeatureError(f"node '{layer}' is not a ReLU node (ReLU nodes: {', '.join(names) or 'none'})")
        return layer
    index = int(layer)
    if not -len(names) <= index < len(names):
        raise FeatureError(f"layer {index} out of range: the network has {len(names)} ReLU layers")
    return names[index]


def _next_layer(net: Network, name: str) -> tuple[Node, bool]:
    """The Linear or Conv node reading the feature node (through Reshapes) and whether it is
    the network's output (then C folds into it)."""
    consumers = net.consumers()
    current = name
    while True:
        readers = consumers[current]
        if len(readers) != 1:
            raise FeatureError(f"feature node '{name}' must feed exactly one layer, '{current}' feeds {len(readers)}")
        node = net.node(readers[0])
        if isinstance(node.layer, Reshape):
            current = node.name
            continue
        if isinstance(node.layer, (Linear, Conv)):
            return node, node.name == net.output.name and isinstance(node.layer, Linear)
        raise FeatureError(f"feature node '{name}' feeds {node.layer.op} ('{node.name}'); "
                           "proof features need a following Linear or Conv layer")


def _conv_column_max(conv: Conv, in_shape: tuple[int, ...]) -> Tensor:
    """max_o |W_dense[o, i]| of a convolution for every input neuron i (flat, C*H*W): per kernel
    offset, which inputs it reaches (the adjoint of a one-hot kernel), times max |W| over outputs."""
    c_in, kh, kw = conv.weight.shape[1:]
    kmax = conv.weight.detach().abs().amax(0)  # (C_in, kh, kw)
    best = torch.zeros(in_shape, dtype=kmax.dtype)
    probe = torch.zeros(1, 1, *in_shape[1:], requires_grad=True)
    for a in range(kh):  # kernel offsets, not neurons
        for b in range(kw):
            onehot = torch.zeros(1, 1, kh, kw)
            onehot[0, 0, a, b] = 1
            single = Conv(onehot, torch.zeros(1), conv.stride, conv.pads, conv.dilation)
            (reach,) = torch.autograd.grad(single.forward(probe).sum(), probe)
            best = torch.maximum(best, kmax[:, a, b, None, None] * (reach[0] > 0))
    return best.reshape(-1)


def masked_network(net: Network, name: str, keep: Tensor) -> Network:
    """The network with every feature of node `name` outside `keep` (bool, flat) replaced by 0:
    the next Linear's columns are zeroed (bias kept), or an elementwise 0/1 Affine is inserted."""
    nxt, _ = _next_layer(net, name)
    if isinstance(nxt.layer, Linear):
        layer = dataclasses.replace(nxt.layer, weight=nxt.layer.weight * keep.to(nxt.layer.weight.dtype))
        return dataclasses.replace(net, nodes=tuple(dataclasses.replace(n, layer=layer) if n.name == nxt.name
                                                    else n for n in net.nodes))
    node = net.node(name)
    mask_name = f"{name}__mask"
    scale = keep.to(net.dtype).reshape(node.shape)
    mask = Node(mask_name, Affine(scale, torch.zeros_like(scale)), (name,), node.shape, "mask")
    nodes: list[Node] = []
    for n in net.nodes:
        if name in n.inputs:
            n = dataclasses.replace(n, inputs=tuple(mask_name if i == name else i for i in n.inputs))
        nodes.append(n)
        if n.name == name:
            nodes.append(mask)
    return dataclasses.replace(net, nodes=tuple(nodes))


def _nanmean(t: Tensor, dim: int) -> Tensor:
    ok = ~torch.isnan(t)
    return torch.where(ok, t, 0).sum(dim) / ok.sum(dim).clamp(min=1)


class _Checker:
    """Spec margins of one image's property with only the kept features, for K candidate sets.

    `margins(keep)` takes keep (K, n) bool and returns (K,) spec margins (> 0: sufficient)."""

    def __init__(self, pf: ProofFeatures, i: int) -> None:
        self.pf, self.i = pf, i
        self.spec = pf.spec[i]
        self.region = Box(pf.region.lower[i:i + 1], pf.region.upper[i:i + 1])
        self.result = pf.result.take(i) if pf.is_last else None
        self.calls = self.checks = 0

    def margins(self, keep: Tensor) -> Tensor:
        if keep.shape[0] == 0:
            return torch.zeros(0)
        parts = [self._margins(keep[s:s + _CHUNK]) for s in range(0, keep.shape[0], _CHUNK)]
        self.checks += keep.shape[0]
        return torch.cat(parts)

    def _margins(self, keep: Tensor) -> Tensor:
        pf = self.pf
        if pf.is_last:  # only the output layer changes: the domain may reuse its stored proof
            K = keep.shape[0]
            rows = (pf.coeff[self.i].unsqueeze(0) * keep.unsqueeze(1).to(pf.coeff.dtype)).reshape(K * self.spec.n_rows, -1)
            lower = pf.domain.last_layer_lower(self.result, self.region, rows, pf.const[self.i].repeat(K))
            if lower is not None:
                self.calls += 1
                return self.spec.expand(K).spec_margin(lower.reshape(K, -1).float())
        out = []
        for mask in keep:  # one fresh run of the domain per pruned network
            result = pf.domain.rebind(masked_network(pf.net, pf.node, mask)).bound(self.region, self.spec)
            out.append(result.spec_margin[0])
            self.calls += 1
        return torch.stack(out).float()

    def confirm(self, keep: Tensor) -> float:
        """Spec margin of a fresh domain run on the literal pruned network."""
        pf = self.pf
        self.calls += 1
        self.checks += 1
        domain = pf.domain.rebind(masked_network(pf.net, pf.node, keep))
        result = domain.bound(self.region, self.spec)
        _, margin = recheck_near_zero(domain, self.region, self.spec, result.proven, result.spec_margin)
        return float(margin[0])


class ProofFeatures:
    """The proof features of a batch of B properties at one layer (see the module docstring).

    lower, upper: (B, n) feature bounds; coeff (B, m, n) = C W and const (B, m) = C b + d when
    the layer feeds the output Linear layer (`is_last`), else None.
    """

    def __init__(self, domain: Domain, region: Box, spec: Spec, result: BoundResult, layer: int | str = -1,
                 x: Tensor | None = None, eps: float | None = None, seconds: float = 0.0) -> None:
        self.domain, self.net = domain, domain.net
        self.region, self.spec, self.result = region, spec.expand(region.batch_size), result
        self.node = resolve_layer(self.net, layer)
        if self.node not in result.bounds:
            raise FeatureError(f"the bound result holds no bounds for '{self.node}' (bound with keep=True)")
        self.x, self.eps, self.seconds = x, eps, seconds
        self.offset = 0  # position of image 0 in its source (seeds the random priority)
        B = region.batch_size
        lo, hi = result.bounds[self.node]
        self.lower, self.upper = lo.reshape(B, -1).float(), hi.reshape(B, -1).float()
        self.width = self.lower.shape[1]
        nxt, self.is_last = _next_layer(self.net, self.node)
        self.coeff = self.const = None
        if self.is_last:
            W, b = nxt.layer.weight.float(), nxt.layer.bias.float()
            C = self.spec.C.float()
            self.coeff = C.matmul(W)  # (B, m, n)
            self.const = C.matmul(b) + self.spec.d.float()  # (B, m)
            self.weight_priority = self.coeff.abs().amax(1)  # (B, n)
        elif isinstance(nxt.layer, Linear):
            self.weight_priority = nxt.layer.weight.detach().float().abs().amax(0).expand(B, -1)
        else:
            in_shape = self.net.node(nxt.inputs[0]).shape
            self.weight_priority = _conv_column_max(nxt.layer, in_shape).float().expand(B, -1)
        proven = result.proven if result.proven is not None else torch.zeros(B, dtype=torch.bool)
        margin = result.spec_margin.float() if result.spec_margin is not None else torch.full((B,), -torch.inf)
        self.proven, self.margin = recheck_near_zero(domain, region, self.spec, proven, margin)

    @classmethod
    def extract(cls, result: BoundResult, domain: Domain, region: Box, spec: Spec, layer: int | str = -1,
                x: Tensor | None = None, eps: float | None = None) -> ProofFeatures:
        """Proof features from a finished proof: `result = domain.bound(region, spec, keep=True)`.
        x and eps (the images and radius of the region) are needed only by `visualize`."""
        return cls(domain, region, spec, result, layer, x, eps)

    @classmethod
    def compute(cls, net: Network, x: Tensor, labels: Tensor, eps: float, domain: str | Domain = "crown",
                layer: int | str = -1) -> ProofFeatures:
        """Prove local robustness of the images x (B, *input_shape) in [0, 1] with labels (B,)
        on the ball clip(x +- eps, 0, 1), keeping the proof, and extract its features."""
        dom = get_domain(domain)(net) if isinstance(domain, str) else domain
        x = net.prepare(torch.as_tensor(x, dtype=torch.float32))
        labels = torch.as_tensor(labels, dtype=torch.long)
        region, spec = linf_ball(x, eps), robustness(labels, net.n_outputs)
        start = time.perf_counter()
        result = dom.bound(region, spec, keep=True)
        return cls(dom, region, spec, result, layer, x, eps, time.perf_counter() - start)

    @property
    def batch_size(self) -> int:
        return self.lower.shape[0]

    def priority(self, kind: str = "profit", seed: int = 0) -> Tensor:
        """(B, n) priorities: "profit" max(|l|, |u|) * w_i, "weight" w_i (w_i = max_j |(C W)_{j,i}|,
        or max_o |W_{o,i}| at hidden layers), "random" uniform values in (0, 1] (seeded by
        (seed, image index)) on the features of non-zero ProFIt priority, 0 elsewhere."""
        return torch.stack([self._priority_row(i, kind, seed) for i in range(self.batch_size)])

    def _priority_row(self, i: int, kind: str, seed: int = 0) -> Tensor:
        profit = torch.maximum(self.lower[i].abs(), self.upper[i].abs()) * self.weight_priority[i]
        if kind == "profit":
            return profit
        if kind == "weight":
            return self.weight_priority[i].clone()
        if kind == "random":
            values = torch.from_numpy(1 - np.random.default_rng([seed, self.offset + i]).random(self.width)).float()
            return torch.where(profit > 0, values, torch.zeros_like(values))
        raise FeatureError(f"unknown priority '{kind}' (choose from {', '.join(PRIORITIES)})")

    def _order(self, i: int, kind: str, seed: int = 0) -> Tensor:
        """The non-zero features of image i (non-zero ProFIt priority), lowest `kind` priority first
        (ties: lower index first)."""
        profit = self._priority_row(i, "profit")
        nz = (profit > 0).nonzero().flatten()
        values = profit[nz] if kind == "profit" else self._priority_row(i, kind, seed)[nz]
        return nz[torch.sort(values, stable=True).indices]

    def checker(self, i: int) -> _Checker:
        """The sufficiency check of image i's property (`margins(keep (K, n) bool) -> (K,)`)."""
        return _Checker(self, i)

    def prune(self, options: PruneOptions = PruneOptions(), indices: Sequence[int] | None = None) -> list[Pruned]:
        """Prune the proof of every image (or of `indices`) to a small sufficient set."""
        return [self._prune_one(i, options) for i in (range(self.batch_size) if indices is None else indices)]

    def _prune_one(self, i: int, options: PruneOptions) -> Pruned:
        start = time.perf_counter()
        share = self.seconds / self.batch_size
        empty = torch.zeros(0, dtype=torch.long)
        order = self._order(i, options.priority, options.seed)
        n_nz = len(order)
        margin = float(self.margin[i])
        if not bool(self.proven[i]):
            return Pruned(i, False, self.width, n_nz, empty, empty, margin, margin, 0, 0,
                          share + time.perf_counter() - start)
        check = self.checker(i)
        rank = torch.full((self.width,), -1, dtype=torch.long)
        rank[order] = torch.arange(n_nz)

        def prefix_masks(rs: Tensor) -> Tensor:  # keep = non-zero features of rank >= r
            return (rank.unsqueeze(0) >= rs.unsqueeze(1)) & (rank >= 0).unsqueeze(0)

        lo, hi = 0, n_nz + 1  # removing lo is sufficient; removing hi is not (n_nz + 1: virtual)
        first = True
        while first or hi - lo > 1:
            f = min(options.fanout, hi - lo - 1)
            rs = lo + (torch.arange(1, f + 1) * (hi - lo)) // (f + 1) if f > 0 else torch.zeros(0, dtype=torch.long)
            rs = torch.unique(rs)
            if first:
                rs = torch.cat([torch.zeros(1, dtype=torch.long), rs])
            ok = check.margins(prefix_masks(rs)) > 0
            if first:
                first = False
                if not bool(ok[0]):  # cannot happen in exact arithmetic: zero-priority features contribute 0
                    return self._unpruned(i, n_nz, margin, check, share + time.perf_counter() - start)
                rs, ok = rs[1:], ok[1:]
            if bool(ok.any()):
                lo = int(rs[ok].max())
            above = rs[(rs > lo) & ~ok]
            if len(above):
                hi = int(above.min())
        keep = prefix_masks(torch.tensor([lo]))[0]
        kept_suffix = order[lo:].flip(0)
        if options.greedy and lo < n_nz:
            candidates = order[lo + 1 if hi == lo + 1 else lo:]  # order[lo] alone is known insufficient
            if options.max_greedy is not None:
                candidates = candidates[:options.max_greedy]
            pos = 0
            while pos < len(candidates):
                batch = candidates[pos:pos + options.greedy_fanout]
                trial = keep.unsqueeze(0).repeat(len(batch), 1)
                trial[torch.arange(len(batch)), batch] = False
                ok = check.margins(trial) > 0
                if not bool(ok.any()):
                    pos += len(batch)
                    continue
                j = int(ok.nonzero()[0])
                keep[batch[j]] = False
                pos += j + 1
        kept_greedy = order[keep[order]].flip(0)
        kept_margin = check.confirm(keep) if options.confirm else float(check.margins(keep.unsqueeze(0))[0])
        if not options.confirm and kept_margin <= NEAR_ZERO:  # within float32 rounding of 0: prove it afresh
            kept_margin = check.confirm(keep)
        if kept_margin <= 0 and len(kept_greedy) != len(kept_suffix):
            kept_greedy = kept_suffix
            kept_margin = check.confirm(prefix_masks(torch.tensor([lo]))[0])
        if kept_margin <= 0:
            return self._unpruned(i, n_nz, margin, check, share + time.perf_counter() - start)
        return Pruned(i, True, self.width, n_nz, kept_suffix, kept_greedy, margin, kept_margin,
                      check.calls, check.checks, share + time.perf_counter() - start)

    def _unpruned(self, i: int, n_nz: int, margin: float, check: _Checker, seconds: float) -> Pruned:
        """Nothing could be removed (float rounding defeated the zero-priority removal): report
        every feature, i.e. the original proof."""
        every = torch.arange(self.width)
        return Pruned(i, True, self.width, n_nz, every, every, margin, margin, check.calls, check.checks, seconds)

    def topk(self, ks: Sequence[int] = TOPK, priorities: Sequence[str] = PRIORITIES, seeds: int = RANDOM_SEEDS,
             seed: int = 0) -> TopK:
        """Sufficiency of the top-k features for every k and priority (one batched check per image)."""
        P, K, B = len(priorities), len(ks), self.batch_size
        proven = torch.full((P, K, B), torch.nan)
        change = torch.full((P, K, B), torch.nan)
        ks_t = torch.as_tensor(list(ks))
        for i in range(B):
            if not bool(self.proven[i]):
                continue
            masks, owners = [], []
            for p, kind in enumerate(priorities):
                for s in range(seeds if kind == "random" else 1):
                    order = self._order(i, kind, seed + s).flip(0)  # highest priority first
                    top = torch.arange(len(order)).unsqueeze(0) < ks_t.unsqueeze(1)  # (K, n_nz)
                    keep = torch.zeros(K, self.width, dtype=torch.bool)
                    keep[:, order] = top
                    masks.append(keep)
                    owners.append(p)
            m = self.checker(i).margins(torch.cat(masks)).reshape(len(owners), K)
            m0 = float(self.margin[i])
            rel = (m0 - m).abs() / (abs(m0) + _EPS_REL)
            owner = torch.as_tensor(owners)
            for p in range(P):
                proven[p, :, i] = (m[owner == p] > 0).float().mean(0)
                change[p, :, i] = rel[owner == p].mean(0)
        return TopK(tuple(ks), tuple(priorities), proven, change)

    def gradients(self, i: int, features: Tensor) -> Tensor:
        """(k, *input_shape): d((l_f + u_f) / 2) / d x_i for each feature f, through the domain's
        bound computation over clip(x_i +- eps, 0, 1)."""
        if self.x is None or self.eps is None:
            raise FeatureError("gradient maps need the images and eps (build with ProofFeatures.compute "
                               "or pass x= and eps= to extract)")
        features = torch.as_tensor(features, dtype=torch.long)
        x = self.x[i:i + 1].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            result = self.domain.bound(linf_ball(x, self.eps), keep=True)
            lo, hi = result.bounds[self.node]
            mid = ((lo + hi) / 2).reshape(-1)[features]
            grads = [torch.autograd.grad(mid[j], x, retain_graph=j + 1 < len(features))[0][0]
                     for j in range(len(features))]  # k backward passes over one forward graph
        return torch.stack(grads) if grads else torch.zeros(0, *x.shape[1:])

    def visualize(self, pruned: Sequence[Pruned]) -> list[FeatureMaps]:
        """Gradient maps of the kept features of each pruned (proven) image."""
        profit = self.priority("profit")
        out = []
        for p in pruned:
            if not p.proven:
                continue
            maps = self.gradients(p.index, p.kept)
            pri = profit[p.index][p.kept]
            aggregate = (pri.reshape(-1, *[1] * (maps.dim() - 1)) * maps).sum(0) if len(pri) else \
                torch.zeros(self.x.shape[1:])
            out.append(FeatureMaps(p.index, self.x[p.index].detach(), p.kept, pri, maps.detach(), aggregate.detach()))
        return out
