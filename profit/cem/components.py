"""The three pluggable parts of a contrastive explanation (MAXi's composition): a loss, an
optimizer and a gradient estimator.

A *model* is any callable from inputs (B, *shape) to logits (B, K): a `networks.ir.Network`
(white-box: torch autograd through the IR) or `RuntimeModel` (black-box: an onnxruntime
session, gradients only by estimation). The optimised variable is a perturbation d of the
same shape as the image; the loss says which input it stands for (PN: x0 + d, PP: v + d with
v the "no information" value), which box d must stay in, and how good the input is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from networks.ir import Network
from profit.errors import ProfitError

Model = Callable[[Tensor], Tensor]


def forward(model: Model, x: Tensor) -> Tensor:
    """The model's logits at x, fed in the model's own dtype (an IR network's weights; float32
    for anything else)."""
    if isinstance(model, Network):
        return model(x.to(model.dtype))
    return model(x.float())


class RuntimeModel:
    """A black-box model: an ONNX file run by onnxruntime (no gradients; float64 logits)."""

    def __init__(self, onnx_path: str | Path, net: Network) -> None:
        from profit.attacks import onnx_outputs, session

        self.path, self.net, self._session, self._run = str(onnx_path), net, session(onnx_path), onnx_outputs

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self._run(self._session, self.net, x.detach().float())


def reconstruction_error(autoencoder: Model, x: Tensor) -> Tensor:
    """||x - AE(x)||^2 per image (B,): CEM's gamma term, how far x lies from the data the
    autoencoder learnt (its output may be flat; it is read in x's shape)."""
    return (x - forward(autoencoder, x).to(x.dtype).reshape(x.shape)).reshape(len(x), -1).pow(2).sum(1)


def check_autoencoder(autoencoder: Network, net: Network) -> None:
    """A clear error unless the autoencoder maps the classifier's input shape to as many values."""
    n = int(torch.Size(net.input_shape).numel())
    if tuple(autoencoder.input_shape) != tuple(net.input_shape) or autoencoder.n_outputs != n:
        raise ProfitError(f"the autoencoder maps {tuple(autoencoder.input_shape)} to "
                          f"{tuple(autoencoder.output_shape)}, the classifier needs {tuple(net.input_shape)} "
                          f"to {n} values")


# --------------------------------------------------------------------------------- losses
class Loss(ABC):
    """The smooth part g(d) of the objective (the l1 term is the optimizer's proximal step),
    the feasible box of d, and success."""

    l1: float = 0.0

    @abstractmethod
    def inputs(self, d: Tensor) -> Tensor:
        """The model inputs that perturbations d (B, *shape) stand for."""

    @abstractmethod
    def box(self) -> tuple[Tensor, Tensor]:
        """Per-coordinate bounds (lo, hi) of d, each (B, *shape), containing 0."""

    @abstractmethod
    def value(self, d: Tensor, logits: Tensor) -> Tensor:
        """g per image (B,) from d and the model's logits at inputs(d)."""

    @abstractmethod
    def success(self, logits: Tensor) -> Tensor:
        """Whether the input is an explanation (B,) bool."""

    @abstractmethod
    def repeat(self, k: int) -> Loss:
        """The same loss with every image repeated k times in a row (for batched probes)."""


class CEMLoss(Loss):
    """Dhurandhar et al. (NeurIPS 2018) on logits, for images x0 (B, *shape) of classes t0 (B,):

    PN: c max(f_t0(x0+d) - max_{i != t0} f_i(x0+d), -kappa) + ||d||^2 + gamma ||x0+d - AE(x0+d)||^2,
        d only adds (moves each pixel away from the no-info value, inside [low, high]);
    PP: c max(max_{i != t0} f_i(v+d) - f_t0(v+d), -kappa) + ||d||^2 + gamma ||v+d - AE(v+d)||^2,
        d only removes (v+d lies between v and x0 per pixel).
    The l1 weight beta is applied by the optimizer's shrinkage step. c is (B,) for the binary
    search over it."""

    def __init__(self, x0: Tensor, target: Tensor, mode: str = "PN", c: Tensor | float = 10.0, kappa: float = 0.0,
                 beta: float = 0.1, gamma: float = 0.0, autoencoder: Model | None = None, no_info: float = 0.0,
                 low: float = 0.0, high: float = 1.0) -> None:
        if mode not in ("PN", "PP"):
            raise ProfitError(f"CEM mode must be PN or PP, got '{mode}'")
        if gamma > 0 and autoencoder is None:
            raise ProfitError("gamma > 0 needs an autoencoder")
        if kappa < 0 or beta < 0 or gamma < 0:
            raise ProfitError("kappa, beta and gamma must be >= 0")
        self.x0, self.target, self.mode = x0.double(), target.long(), mode
        self.c = torch.as_tensor(c, dtype=torch.float64).expand(len(x0)).clone()
        self.kappa, self.l1, self.gamma, self.autoencoder = kappa, beta, gamma, autoencoder
        self.no_info, self.low, self.high = no_info, low, high

    def inputs(self, d: Tensor) -> Tensor:
        return self.x0 + d if self.mode == "PN" else torch.full_like(self.x0, self.no_info) + d

    def box(self) -> tuple[Tensor, Tensor]:
        if self.mode == "PN":  # away from v: up where x0 >= v, down where x0 < v
            up = self.x0 >= self.no_info
            lo = torch.where(up, torch.zeros_like(self.x0), self.low - self.x0)
            hi = torch.where(up, self.high - self.x0, torch.zeros_like(self.x0))
            return lo, hi
        span = self.x0 - self.no_info
        return torch.minimum(span, torch.zeros_like(span)), torch.maximum(span, torch.zeros_like(span))

    def _gap(self, logits: Tensor) -> Tensor:
        """f_t0 - max_{i != t0} f_i, (B,)."""
        own = logits.gather(1, self.target[:, None]).squeeze(1)
        others = logits.scatter(1, self.target[:, None], float("-inf")).amax(1)
        return own - others

    def value(self, d: Tensor, logits: Tensor) -> Tensor:
        gap = self._gap(logits.double())
        attack = torch.clamp(gap if self.mode == "PN" else -gap, min=-self.kappa)
        g = self.c.to(d.dtype) * attack + d.reshape(len(d), -1).pow(2).sum(1)
        if self.gamma > 0:
            g = g + self.gamma * reconstruction_error(self.autoencoder, self.inputs(d))
        return g

    def success(self, logits: Tensor) -> Tensor:
        gap = self._gap(logits.double())
        return gap <= -self.kappa if self.mode == "PN" else gap >= self.kappa

    def repeat(self, k: int) -> CEMLoss:
        return CEMLoss(self.x0.repeat_interleave(k, 0), self.target.repeat_interleave(k, 0), self.mode,
                       self.c.repeat_interleave(k, 0), self.kappa, self.l1, self.gamma, self.autoencoder,
                       self.no_info, self.low, self.high)

    def distance(self, d: Tensor) -> Tensor:
        """The elastic-net distance beta ||d||_1 + ||d||_2^2 that ranks successful iterates."""
        flat = d.reshape(len(d), -1)
        return self.l1 * flat.abs().sum(1) + flat.pow(2).sum(1)


def grid_segments(shape: tuple[int, int], k: int) -> Tensor:
    """A deterministic segmentation of an H x W image into k x k patches (the last row and
    column of patches may be smaller): labels (H, W), row-major patch order."""
    h, w = shape
    if k < 1:
        raise ProfitError(f"patch size must be >= 1, got {k}")
    rows, cols = torch.arange(h) // k, torch.arange(w) // k
    return rows[:, None] * (-(-w // k)) + cols[None, :]


class SuperpixelCEMLoss(CEMLoss):
    """CEM over a segmentation (superpixels): the variable is one weight w_s in [0, 1] per
    segment, broadcast to its pixels, and a pixel moves by w_s times its whole feasible move
    (PN: to `high`, or `low` below the no-info value; PP: from the no-info value to x0), so a
    PP is v + w (x0 - v) and a PN x0 + w (room), segment by segment, and both stay feasible.
    The l1 weight beta counts segments (on w); ||d||^2 and the AE term are on pixels.

    `segments` is a label map of the image's shape, or of its last two dims (broadcast over
    channels); any integer labels (renumbered 0..S-1 in sorted order)."""

    def __init__(self, x0: Tensor, target: Tensor, segments: Tensor, mode: str = "PN", c: Tensor | float = 10.0,
                 kappa: float = 0.0, beta: float = 0.1, gamma: float = 0.0, autoencoder: Model | None = None,
                 no_info: float = 0.0, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__(x0, target, mode, c, kappa, beta, gamma, autoencoder, no_info, low, high)
        shape = tuple(x0.shape[1:])
        labels = torch.as_tensor(segments)
        if labels.is_floating_point() or tuple(labels.shape) not in (shape, shape[-2:]):
            raise ProfitError(f"segments must be an integer label map of shape {shape} or {shape[-2:]}, "
                              f"got {tuple(labels.shape)} {labels.dtype}")
        self.segments = labels
        _, self.labels = torch.unique(labels.expand(shape).reshape(-1), return_inverse=True)  # (n,)
        self.n_segments = int(self.labels.max()) + 1
        lo, hi = CEMLoss.box(self)
        self.room = torch.where(hi != 0, hi, lo)  # each pixel's whole feasible move (B, *shape)

    def pixels(self, w: Tensor) -> Tensor:
        """The pixel change d (B, *shape) of segment weights w (B, S)."""
        return w.to(self.room.dtype)[:, self.labels].reshape(self.room.shape) * self.room

    def inputs(self, w: Tensor) -> Tensor:
        return super().inputs(self.pixels(w))

    def box(self) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(len(self.x0), self.n_segments, dtype=torch.float64)
        return zeros, torch.ones_like(zeros)

    def value(self, w: Tensor, logits: Tensor) -> Tensor:
        return super().value(self.pixels(w), logits)

    def repeat(self, k: int) -> SuperpixelCEMLoss:
        return SuperpixelCEMLoss(self.x0.repeat_interleave(k, 0), self.target.repeat_interleave(k, 0), self.segments,
                                 self.mode, self.c.repeat_interleave(k, 0), self.kappa, self.l1, self.gamma,
                                 self.autoencoder, self.no_info, self.low, self.high)

    def distance(self, w: Tensor) -> Tensor:
        """beta ||w||_1 (segments) + ||d||_2^2 (pixels)."""
        return self.l1 * w.reshape(len(w), -1).abs().sum(1) + self.pixels(w).reshape(len(w), -1).pow(2).sum(1)


# ----------------------------------------------------------------------------- gradients
class Gradient(ABC):
    """An estimate of the gradient of g = loss.value at d, per image."""

    needs_autograd: bool = False

    @abstractmethod
    def __call__(self, loss: Loss, model: Model, d: Tensor) -> Tensor:
        """(B, *shape) gradient of g at d."""


def _g(loss: Loss, model: Model, d: Tensor) -> Tensor:
    return loss.value(d, forward(model, loss.inputs(d)).double())


class TorchGradient(Gradient):
    """Exact gradient by torch autograd through a white-box model (the IR)."""

    needs_autograd = True

    def __call__(self, loss: Loss, model: Model, d: Tensor) -> Tensor:
        d = d.detach().requires_grad_(True)
        with torch.enable_grad():
            g = loss.value(d, forward(model, loss.inputs(d)))
            (grad,) = torch.autograd.grad(g.sum(), d)
        return grad


DIRECTIONS = ("sphere", "gaussian")


class RandomDirectionGradient(Gradient):
    """Zeroth-order estimate along q random directions u_j (MAXi's URV / USRV), seeded:
    s/q sum_j (g(d + mu u_j) - g(d)) / mu u_j, with u_j uniform on the unit sphere and s = n
    ("sphere", E[u u^T] = I / n), or standard normal and s = 1 ("gaussian", E[u u^T] = I)."""

    def __init__(self, q: int = 20, mu: float = 1e-3, seed: int = 0, directions: str = "sphere") -> None:
        if directions not in DIRECTIONS:
            raise ProfitError(f"directions must be one of {', '.join(DIRECTIONS)}, got '{directions}'")
        if q < 1 or not mu > 0:
            raise ProfitError(f"a random-direction gradient needs q >= 1 and mu > 0, got q {q}, mu {mu}")
        self.q, self.mu, self.g, self.directions = q, mu, torch.Generator().manual_seed(seed), directions

    def __call__(self, loss: Loss, model: Model, d: Tensor) -> Tensor:
        B, shape, n = len(d), d.shape[1:], d[0].numel()
        u = torch.randn(B, self.q, n, generator=self.g, dtype=torch.float64)
        scale = 1.0
        if self.directions == "sphere":
            u, scale = u / u.norm(dim=2, keepdim=True), float(n)
        base = _g(loss, model, d)
        moved = d.reshape(B, 1, n) + self.mu * u
        values = _g(loss.repeat(self.q), model, moved.reshape(B * self.q, *shape)).reshape(B, self.q)
        weights = (values - base[:, None]) / self.mu
        return (scale / self.q * (weights[:, :, None] * u).sum(1)).reshape(d.shape)


class FiniteDifferenceGradient(Gradient):
    """Central finite differences, every coordinate in one batched forward pass (2n inputs per image)."""

    def __init__(self, h: float = 1e-3) -> None:
        self.h = h

    def __call__(self, loss: Loss, model: Model, d: Tensor) -> Tensor:
        B, shape, n = len(d), d.shape[1:], d[0].numel()
        eye = torch.eye(n, dtype=torch.float64) * self.h
        points = torch.cat([d.reshape(B, 1, n) + eye, d.reshape(B, 1, n) - eye], 1)  # (B, 2n, n)
        values = _g(loss.repeat(2 * n), model, points.reshape(B * 2 * n, *shape)).reshape(B, 2, n)
        return ((values[:, 0] - values[:, 1]) / (2 * self.h)).reshape(d.shape)


# ---------------------------------------------------------------------------- optimizers
def shrink(z: Tensor, threshold: Tensor | float) -> Tensor:
    """Soft thresholding sign(z) max(|z| - t, 0): the prox of t ||.||_1."""
    return torch.sign(z) * torch.clamp(z.abs() - threshold, min=0.0)


class Optimizer(ABC):
    """Minimises g(d) + beta ||d||_1 over the loss's box, one step at a time."""

    def __init__(self, lr: float = 1e-2, decay: float = 0.5, original_threshold: bool = False) -> None:
        if not lr > 0:
            raise ProfitError(f"learning rate must be > 0, got {lr}")
        self.lr0, self.decay, self.original_threshold = lr, decay, original_threshold

    def lr(self, k: int, total: int) -> float:
        """Polynomial decay lr0 (1 - k / total)^decay."""
        return self.lr0 * (1.0 - k / max(total, 1)) ** self.decay

    def prox(self, z: Tensor, loss: Loss, lr: float) -> Tensor:
        """Shrinkage then projection onto the box (exact: the box holds 0); the original code's
        threshold beta instead of lr beta behind `original_threshold`."""
        lo, hi = loss.box()
        return torch.clamp(shrink(z, loss.l1 if self.original_threshold else lr * loss.l1), lo, hi)

    @abstractmethod
    def start(self, d: Tensor) -> None:
        """Reset the state for a run from d."""

    @abstractmethod
    def step(self, k: int, total: int, loss: Loss, grad: Callable[[Tensor], Tensor]) -> Tensor:
        """One iteration; returns the new iterate."""


class FISTA(Optimizer):
    """FISTA with a slack variable y (Beck and Teboulle), as in the CEM code: x_{k+1} =
    prox(y_k - lr grad g(y_k)), y_{k+1} = proj(x_{k+1} + k / (k + 3) (x_{k+1} - x_k))."""

    def start(self, d: Tensor) -> None:
        self.x, self.y = d.clone(), d.clone()

    def step(self, k: int, total: int, loss: Loss, grad: Callable[[Tensor], Tensor]) -> Tensor:
        lr = self.lr(k, total)
        new = self.prox(self.y - lr * grad(self.y), loss, lr)
        lo, hi = loss.box()
        self.y = torch.clamp(new + k / (k + 3.0) * (new - self.x), lo, hi)
        self.x = new
        return new


class ProjectedAdam(Optimizer):
    """Adam on g followed by the proximal l1 step and the projection."""

    def __init__(self, lr: float = 1e-2, decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 original_threshold: bool = False) -> None:
        super().__init__(lr, decay, original_threshold)
        self.betas = betas

    def start(self, d: Tensor) -> None:
        self.x, self.m, self.v = d.clone(), torch.zeros_like(d), torch.zeros_like(d)

    def step(self, k: int, total: int, loss: Loss, grad: Callable[[Tensor], Tensor]) -> Tensor:
        b1, b2 = self.betas
        lr = self.lr(k, total)
        g = grad(self.x)
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        m_hat, v_hat = self.m / (1 - b1 ** (k + 1)), self.v / (1 - b2 ** (k + 1))
        self.x = self.prox(self.x - lr * m_hat / (v_hat.sqrt() + 1e-8), loss, lr)
        return self.x


def lambert_w_exp(L: Tensor) -> Tensor:
    """W(e^L), the principal Lambert W of e^L, for real L (elementwise, float64): w with
    w + log w = L, by Newton on v = log w (e^v + v = L is convex and increasing in v, and the
    start log softplus(L) lies right of the root, so the iterates fall monotonically to it)."""
    L = L.double().clamp(min=-700.0)
    v = torch.log(torch.nn.functional.softplus(L))
    for _ in range(40):
        step = (v.exp() + v - L) / (v.exp() + 1.0)
        v = v - step
        if float(step.abs().max()) < 1e-13:
            break
    return v.exp()


class AdaExpGrad(Optimizer):
    """Adaptive exponentiated gradient with l1/l2 thresholding (the optimizer MAXi pairs with its
    explanation losses): mirror descent with the mirror map of exponentiated gradient with
    positive and negative weights, phi(x) = sum (|x| + b) log(|x| / b + 1) - |x|, b = 1 / n, and
    an AdaGrad-norm step size; the proximal step minimises <g, x> + alpha D_phi(x, x_t) +
    l1 ||x||_1 + l2 / 2 ||x||^2 in closed form. Per step, per image:

        lambda += ||g||_inf^2,  alpha = eta sqrt(lambda),
        z = sign(x) log(|x| / b + 1) - g / alpha                       (the dual point)
        |x'| solves log(|x'| / b + 1) + (l2 / alpha) |x'| = |z| - l1 / alpha, or 0 if |z| <= l1 / alpha
             (l2 = 0: b (exp(|z| - l1 / alpha) - 1);
              l2 > 0: W(a e^(a + |z| - l1 / alpha)) alpha / l2 - b with a = b l2 / alpha, W the Lambert W)
        x' = clamp(sign(z) |x'|, box),  returned as is, or (`average=True`, MAXi's choice, the
        online-to-batch average of the theory) the running average of the x'.

    The last iterate is the default: for a fixed c the average lags behind the flip (on the
    shipped MLP, 5 PNs at c = 10: 2 found within 200 steps averaged, 5 with the last iterate).

    l1 is the loss's beta (the same l1 weight the other optimizers' prox applies); l2 is an
    extra weight on top of the loss's ||d||^2 (default 0). The step scale eta replaces a
    learning rate: alpha adapts to the observed gradients, so no decay schedule is needed."""

    def __init__(self, eta: float = 1.0, l2: float = 0.0, average: bool = False) -> None:
        if not eta > 0 or l2 < 0:
            raise ProfitError(f"AdaExpGrad needs eta > 0 and l2 >= 0, got eta {eta}, l2 {l2}")
        super().__init__(lr=eta, decay=0.0)
        self.eta, self.l2, self.average = eta, l2, average

    def start(self, d: Tensor) -> None:
        self.x, self.y = d.clone(), d.clone()
        self.lam = torch.ones(len(d), dtype=torch.float64)

    def step(self, k: int, total: int, loss: Loss, grad: Callable[[Tensor], Tensor]) -> Tensor:
        g = grad(self.x).double()
        flat = g.reshape(len(g), -1)
        self.lam = self.lam + flat.abs().amax(1) ** 2
        alpha = (self.eta * self.lam.sqrt()).reshape(-1, *[1] * (g.dim() - 1))
        b = 1.0 / flat.shape[1]
        z = torch.sign(self.x) * torch.log1p(self.x.abs() / b) - g / alpha
        excess = z.abs() - loss.l1 / alpha
        if self.l2 == 0:
            magnitude = b * torch.expm1(excess.clamp(min=0.0))
        else:
            a = b * self.l2 / alpha
            magnitude = (lambert_w_exp(torch.log(a) + a + excess) / (self.l2 / alpha) - b).clamp(min=0.0)
            magnitude = torch.where(excess > 0, magnitude, torch.zeros_like(magnitude))
        lo, hi = loss.box()
        self.x = torch.clamp(torch.sign(z) * magnitude, lo, hi)
        if not self.average:
            return self.x
        self.y = self.y + (self.x - self.y) / (k + 1.0)
        return self.y


OPTIMIZERS = ("fista", "adam", "adaexpgrad")  # names of `make_optimizer` (the CLI's --optimizer choices)


def make_optimizer(name: str, lr: float = 1e-2, eta: float = 1.0, original_threshold: bool = False) -> Optimizer:
    """An optimizer by name: FISTA (lr, original_threshold), Adam with projection (lr) or
    AdaExpGrad (eta)."""
    if name == "fista":
        return FISTA(lr=lr, original_threshold=original_threshold)
    if name == "adam":
        return ProjectedAdam(lr=lr, original_threshold=original_threshold)
    if name == "adaexpgrad":
        return AdaExpGrad(eta=eta)
    raise ProfitError(f"unknown optimizer '{name}' (choose from {', '.join(OPTIMIZERS)})")


def check_compatible(loss: type, optimizer: type, gradient: type) -> None:
    """A clear error at construction for components that do not fit together."""
    for what, cls, base in (("loss", loss, Loss), ("optimizer", optimizer, Optimizer), ("gradient", gradient, Gradient)):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ProfitError(f"{what} must be a {base.__name__} class, got {cls!r}")
        if getattr(cls, "__abstractmethods__", None):
            raise ProfitError(f"{what} {cls.__name__} is abstract")


def requires_white_box(gradient: Gradient, model: Model) -> None:
    if gradient.needs_autograd and not isinstance(model, Network):
        raise ProfitError(f"{type(gradient).__name__} needs a white-box model (a profit IR network); "
                          "use RandomDirectionGradient or FiniteDifferenceGradient for a black box")


__all__ = ["AdaExpGrad", "CEMLoss", "FISTA", "FiniteDifferenceGradient", "Gradient", "Loss", "Model", "Optimizer",
           "ProjectedAdam", "RandomDirectionGradient", "RuntimeModel", "SuperpixelCEMLoss", "TorchGradient",
           "OPTIMIZERS", "check_autoencoder", "check_compatible", "forward", "grid_segments", "lambert_w_exp",
           "make_optimizer", "reconstruction_error", "requires_white_box", "shrink"]
