"""Pictures of contrastive explanations: original, explanation, and the change, side by side;
the optimisation's savepoints as a strip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from profit.viz.common import CMAP, as_array, decorate, plot_gradient_map, plot_image


def plot_cem(x0: Tensor | np.ndarray, explanation: Tensor | np.ndarray, mode: str, classes: tuple[int, int],
             status: str = "", axes: Sequence[Axes] | None = None) -> tuple[Figure, Sequence[Axes]]:
    """Three panels: the image (class t0), the PP or x0 + PN (its class, `status`), and the
    signed change (PN: what was added; PP: the kept part minus nothing) with a colour bar."""
    if axes is None:
        fig = Figure(figsize=(6.6, 2.4))
        axes = [fig.add_subplot(1, 3, k + 1) for k in range(3)]
    fig = axes[0].figure
    t0, new = classes
    plot_image(x0, axes[0], f"image: class {t0}")
    name = "pertinent positive" if mode == "PP" else "x0 + pertinent negative"
    plot_image(explanation, axes[1], f"{name}: {new}{f' ({status})' if status else ''}")
    change = as_array(explanation) - (as_array(x0) if mode == "PN" else 0.0)
    plot_gradient_map(change, axes[2], "added (PN)" if mode == "PN" else "kept (PP)", colorbar=True)
    return fig, axes


def plot_savepoints(savepoints: Mapping[int, Tensor | np.ndarray], classes: Mapping[int, int],
                    scores: Mapping[int, float], x0: Tensor | np.ndarray | None = None, mode: str = "PP",
                    axes: Sequence[Axes] | None = None) -> tuple[Figure, Sequence[Axes]]:
    """The optimisation path as a strip, one frame per savepoint, each titled with its
    iteration, the model's class and score (f_t0 - max other logit). A PP's frames are its
    inputs (in [0, 1], grey); with x0, a PN's frames are the signed change x - x0, all on one
    diverging scale with one colour bar."""
    keys = list(savepoints)
    if axes is None:
        fig = Figure(figsize=(1.7 * len(keys) + (0.6 if x0 is not None and mode == "PN" else 0), 2.1))
        axes = [fig.add_subplot(1, len(keys), k + 1) for k in range(len(keys))]
    fig = axes[0].figure
    signed = x0 is not None and mode == "PN"
    frames = {k: as_array(v) - (as_array(x0) if signed else 0.0) for k, v in savepoints.items()}
    scale = max((float(np.abs(f).max()) for f in frames.values()), default=0.0) or 1.0
    image = None
    for ax, k in zip(axes, keys):
        title = f"it {k}: class {classes[k]}\nscore {scores[k]:.2f}"
        if signed:
            image = ax.imshow(frames[k].reshape(frames[k].shape[-2:]), cmap=CMAP,
                              norm=TwoSlopeNorm(0.0, -scale, scale))
            decorate(ax, title)
        else:
            plot_image(frames[k], ax, title)
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02)
    return fig, axes
