"""The explanation generator (one run of loss x optimizer x gradient) and CEM (a binary
search over c around it, keeping the best successful iterate)."""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from profit.cem.components import (
    FISTA, AdaExpGrad, CEMLoss, Gradient, Loss, Model, Optimizer, SuperpixelCEMLoss, TorchGradient, check_compatible,
    forward, reconstruction_error, requires_white_box,
)
from profit.errors import ProfitError


def check_kwargs(cls: type, kwargs: dict[str, Any], given: tuple[str, ...] = ()) -> None:
    """A clear error when `kwargs` do not fit `cls`'s constructor: an argument it does not take,
    or a required one missing (`given` are supplied later, e.g. the image)."""
    params = inspect.signature(cls.__init__).parameters
    names = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise ProfitError(f"{cls.__name__} takes no argument {', '.join(map(repr, unknown))} "
                          f"(it takes: {', '.join(names)})")
    missing = [n for n in names if params[n].default is inspect.Parameter.empty and n not in kwargs and n not in given]
    if missing:
        raise ProfitError(f"{cls.__name__} needs {', '.join(map(repr, missing))}")


class ExplanationGenerator:
    """MAXi-style composition: `ExplanationGenerator(loss=CEMLoss, optimizer=AdaExpGrad,
    gradient=TorchGradient, loss_kwargs=..., ...).run(image, inference)` runs `num_iter`
    steps and returns (savepoints, meta): savepoints map iteration -> the explanation's
    input (numpy, the image's shape) at iteration 1, every `save_freq`-th and the last;
    meta holds the best successful iterate (or None), its distance, the final success, the
    target, the class and score (f_t0 - max other logit) of every savepoint, and, with an
    autoencoder in the loss, the AE error of the best iterate. The components and their
    keyword arguments are checked at construction (a class of the right kind, every argument
    taken, every required one given); a gradient that needs autograd refuses a black-box
    inference at `run`."""

    def __init__(self, loss: type[Loss] = CEMLoss, optimizer: type[Optimizer] = AdaExpGrad,
                 gradient: type[Gradient] = TorchGradient, loss_kwargs: dict[str, Any] | None = None,
                 optimizer_kwargs: dict[str, Any] | None = None, gradient_kwargs: dict[str, Any] | None = None,
                 num_iter: int = 500, save_freq: int = 50, verbose: bool = False) -> None:
        check_compatible(loss, optimizer, gradient)
        check_kwargs(loss, dict(loss_kwargs or {}), given=("x0", "target"))
        check_kwargs(optimizer, dict(optimizer_kwargs or {}))
        check_kwargs(gradient, dict(gradient_kwargs or {}))
        if num_iter < 1 or save_freq < 1:
            raise ProfitError("num_iter and save_freq must be >= 1")
        self.loss_cls, self.loss_kwargs = loss, dict(loss_kwargs or {})
        self.optimizer = optimizer(**(optimizer_kwargs or {}))
        self.gradient = gradient(**(gradient_kwargs or {}))
        self.num_iter, self.save_freq, self.verbose = num_iter, save_freq, verbose

    def run(self, image: np.ndarray | Tensor, inference: Model) -> tuple[OrderedDict[int, np.ndarray], dict[str, Any]]:
        """Explain one image (its shape is the model's input shape without the batch)."""
        x0 = torch.as_tensor(np.asarray(image), dtype=torch.float64)[None]
        kwargs = dict(self.loss_kwargs)
        if "target" not in kwargs:
            kwargs["target"] = forward(inference, x0).argmax(1)
        loss = self.loss_cls(x0, **kwargs)
        best, best_dist, success, trace = optimise(loss, self.optimizer, self.gradient, inference, self.num_iter,
                                                   self.save_freq)
        savepoints = OrderedDict((k, loss.inputs(d)[0].numpy()) for k, d in trace.items())
        found = bool(torch.isfinite(best_dist[0]))
        t0 = int(kwargs["target"][0])
        saved = torch.stack([loss.inputs(d)[0] for d in trace.values()])
        classes, scores = class_and_score(inference, saved, torch.full((len(saved),), t0))
        meta = {"best": loss.inputs(best)[0].numpy() if found else None, "distance": float(best_dist[0]),
                "success": bool(success[0]), "target": t0,
                "classes": dict(zip(trace, classes.tolist())), "scores": dict(zip(trace, scores.tolist()))}
        autoencoder = kwargs.get("autoencoder")
        if autoencoder is not None and found:
            with torch.no_grad():
                meta["ae_error"] = float(reconstruction_error(autoencoder, loss.inputs(best))[0])
        return savepoints, meta


def class_and_score(model: Model, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The model's class (B,) at inputs x and the score f_t0 - max_{i != t0} f_i (B,) of `target`."""
    with torch.no_grad():
        logits = forward(model, x).double().reshape(len(x), -1)
    own = logits.gather(1, target.long()[:, None]).squeeze(1)
    others = logits.scatter(1, target.long()[:, None], float("-inf")).amax(1)
    return logits.argmax(1), own - others


def optimise(loss: Loss, optimizer: Optimizer, gradient: Gradient, model: Model, num_iter: int,
             save_freq: int | None = None) -> tuple[Tensor, Tensor, Tensor, dict[int, Tensor]]:
    """Run the optimizer from d = 0 for num_iter steps on a batch. Returns the best successful
    iterate per image (smallest elastic-net distance; zeros where none), its distance (inf
    where none), the last iterate's success, and the saved iterates."""
    requires_white_box(gradient, model)
    lo, _ = loss.box()
    d = torch.zeros_like(lo)
    optimizer.start(d)
    best, best_dist = torch.zeros_like(d), torch.full((len(d),), float("inf"), dtype=torch.float64)
    trace: dict[int, Tensor] = {}
    success = torch.zeros(len(d), dtype=torch.bool)

    def grad(point: Tensor) -> Tensor:
        return gradient(loss, model, point)

    for k in range(num_iter):
        d = optimizer.step(k, num_iter, loss, grad)
        with torch.no_grad():
            success = loss.success(forward(model, loss.inputs(d)).double())
        dist = loss.distance(d) if hasattr(loss, "distance") else d.reshape(len(d), -1).abs().sum(1)
        better = success & (dist < best_dist)
        best = torch.where(better.reshape(-1, *[1] * (d.dim() - 1)), d, best)
        best_dist = torch.where(better, dist, best_dist)
        if save_freq is not None and (k == 0 or (k + 1) % save_freq == 0 or k == num_iter - 1):
            trace[k + 1] = d.clone()
    return best, best_dist, success, trace


@dataclass(frozen=True)
class CEMOptions:
    """CEM's parameters (defaults as the original MNIST experiments, on logits)."""

    mode: str = "PN"
    kappa: float = 0.0
    beta: float = 0.1
    gamma: float = 0.0
    c_init: float = 10.0
    c_steps: int = 5
    max_iter: int = 300
    lr: float = 1e-2
    no_info: float = 0.0
    low: float = 0.0
    high: float = 1.0
    original_threshold: bool = False


@dataclass(frozen=True, eq=False)
class CEMResult:
    """Per image: the explanation's input (PN: x0 + d; PP: v + d, the pertinent positive),
    whether one was found, the distance, the class the model gives it, and the c used."""

    x0: Tensor
    target: Tensor
    explanation: Tensor
    found: Tensor
    distance: Tensor
    predicted: Tensor
    c: Tensor
    mode: str
    savepoints: dict[int, Tensor] | None = None  # iteration -> inputs (B, *shape) of each image's best c round
    c_trace: Tensor | None = None  # (c_steps, B): the c of every round of the binary search
    success_trace: Tensor | None = None  # (c_steps, B) bool: whether the round found an explanation
    no_info: float = 0.0

    @property
    def delta(self) -> Tensor:
        """The explanation's change to x0 (PN) or the PP itself minus the no-info value (PP): the
        optimised d, whose l0 / l1 are the explanation's sparsity in both modes."""
        return self.explanation - (self.x0 if self.mode == "PN" else self.no_info)


def next_c(c: Tensor, lower: Tensor, upper: Tensor, ok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of CEM's binary search over c, per image (all (B,)): success at c shrinks the
    upper bound to c, failure raises the lower bound to c; the next c is the midpoint once an
    upper bound is known (< 1e9), else ten times c. Returns (c, lower, upper)."""
    upper = torch.where(ok, torch.minimum(upper, c), upper)
    lower = torch.where(ok, lower, torch.maximum(lower, c))
    return torch.where(upper < 1e9, (lower + upper) / 2, c * 10), lower, upper


def cem(model: Model, x0: Tensor, options: CEMOptions = CEMOptions(), target: Tensor | None = None,
        gradient: Gradient | None = None, optimizer: Optimizer | None = None,
        autoencoder: Model | None = None, save_freq: int | None = None, segments: Tensor | None = None) -> CEMResult:
    """Contrastive explanations of a batch x0 (B, *shape): a binary search over c (c_steps
    rounds from c_init; on success the upper bound shrinks, otherwise c rises), each round a
    full optimisation; the best is the successful iterate with the smallest elastic-net
    distance over all rounds. Deterministic (the gradient estimators are seeded). With
    `save_freq`, the result keeps the savepoints (iteration 1, every save_freq-th, the last)
    of the round each image's best came from (the last round where none was found). With
    `segments` (a label map), the superpixel variant (`SuperpixelCEMLoss`)."""
    x0 = x0.double()
    with torch.no_grad():
        target = forward(model, x0).argmax(1) if target is None else target.long()
    gradient = gradient or TorchGradient()
    if optimizer is None:
        optimizer = FISTA(lr=options.lr, original_threshold=options.original_threshold)
    B = len(x0)
    c = torch.full((B,), float(options.c_init), dtype=torch.float64)
    lower, upper = torch.zeros(B, dtype=torch.float64), torch.full((B,), 1e10, dtype=torch.float64)
    best = torch.zeros_like(x0)
    best_dist = torch.full((B,), float("inf"), dtype=torch.float64)
    best_c = torch.zeros(B, dtype=torch.float64)
    loss = None
    kept: dict[int, Tensor] = {}
    tried: list[Tensor] = []
    succeeded: list[Tensor] = []
    for _ in range(options.c_steps):
        args = (options.mode, c, options.kappa, options.beta, options.gamma, autoencoder, options.no_info,
                options.low, options.high)
        loss = CEMLoss(x0, target, *args) if segments is None else SuperpixelCEMLoss(x0, target, segments, *args)
        d, dist, _, trace = optimise(loss, optimizer, gradient, model, options.max_iter, save_freq)
        ok = torch.isfinite(dist)
        tried.append(c.clone())
        succeeded.append(ok)
        better = ok & (dist < best_dist)
        take = (better | ~torch.isfinite(best_dist)).reshape(-1, *[1] * (x0.dim() - 1))
        kept = {k: torch.where(take, loss.inputs(v), kept[k]) if k in kept else loss.inputs(v)
                for k, v in trace.items()}
        best = torch.where(better.reshape(-1, *[1] * (x0.dim() - 1)), loss.inputs(d), best)
        best_dist, best_c = torch.where(better, dist, best_dist), torch.where(better, c, best_c)
        c, lower, upper = next_c(c, lower, upper, ok)
    found = torch.isfinite(best_dist)
    assert loss is not None
    nothing = loss.inputs(torch.zeros_like(loss.box()[0]))
    explanation = torch.where(found.reshape(-1, *[1] * (x0.dim() - 1)), best, nothing)
    with torch.no_grad():
        predicted = forward(model, explanation).argmax(1)
    return CEMResult(x0, target, explanation, found, best_dist, predicted, best_c, options.mode,
                     kept if save_freq is not None else None, torch.stack(tried), torch.stack(succeeded),
                     options.no_info)
