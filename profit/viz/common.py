"""Plot helpers every picture module shares. Pure: data in, (fig, ax) out; nothing is shown.

Figures are `matplotlib.figure.Figure` objects built without pyplot, so nothing is shown
or kept in a global figure list, whatever the backend; `save` writes a PNG. Signed maps
(gradients, deltas) use a diverging colormap centred at 0 (`CMAP`) symmetric to the
map's largest |value|, with an optional colour bar; a 3-channel map is an RGB image with
0 at mid-grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

CMAP = "RdBu_r"  # diverging, white at 0


def as_array(t: Tensor | np.ndarray) -> np.ndarray:
    """A tensor (detached, on the CPU) or array as a numpy array."""
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def new_axes(ax: Axes | None, size: tuple[float, float] = (2.2, 2.2)) -> tuple[Figure, Axes]:
    """`ax` and its figure, or a new pyplot-free Figure with one Axes."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size)
    return fig, fig.add_subplot(1, 1, 1)


def rgb_map(grad: Tensor | np.ndarray) -> np.ndarray:
    """A (3, H, W) gradient as an (H, W, 3) RGB image in [0, 1], 0 at mid-grey (0.5)."""
    g = as_array(grad).astype(np.float64)
    scale = np.abs(g).max()
    g = g / scale if scale > 0 else g
    return np.clip(0.5 + 0.5 * g, 0, 1).transpose(1, 2, 0)


def plot_image(image: Tensor | np.ndarray, ax: Axes | None = None, title: str | None = None) -> tuple[Figure, Axes]:
    """An input image (C, H, W) or (H, W) in [0, 1]: grey for one channel, RGB for three."""
    fig, ax = new_axes(ax)
    img = as_array(image)
    if img.ndim == 3 and img.shape[0] == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    else:
        ax.imshow(img.reshape(img.shape[-2:]), cmap="gray", vmin=0, vmax=1)
    decorate(ax, title)
    return fig, ax


def plot_gradient_map(grad: Tensor | np.ndarray, ax: Axes | None = None, title: str | None = None,
                      colorbar: bool = False) -> tuple[Figure, Axes]:
    """A gradient map (C, H, W) or (H, W): diverging colormap centred at 0 for one channel,
    RGB with 0 at mid-grey for three (see the module docstring)."""
    fig, ax = new_axes(ax)
    g = as_array(grad)
    if g.ndim == 3 and g.shape[0] == 3:
        ax.imshow(rgb_map(g))
    else:
        g = g.reshape(g.shape[-2:])
        scale = float(np.abs(g).max()) or 1.0
        im = ax.imshow(g, cmap=CMAP, norm=TwoSlopeNorm(0.0, -scale, scale))
        if colorbar:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    decorate(ax, title)
    return fig, ax


def decorate(ax: Axes, title: str | None) -> None:
    """No ticks; a small title."""
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


__all__ = ["CMAP", "as_array", "decorate", "new_axes", "plot_gradient_map", "plot_image", "rgb_map", "save"]
