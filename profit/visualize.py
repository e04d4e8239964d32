"""Pictures of proof features: input-gradient maps and the training-method comparison figure.

Plotting is pure: every function takes data (tensors, `profit.features.FeatureMaps`) and returns
`(fig, ax)` (or `(fig, axes)`), draws into `ax=` when given, and never calls `plt.show()`.
Figures are built as `matplotlib.figure.Figure` objects without pyplot, so nothing is shown or
kept in a global figure list, whatever the backend; `save` writes a PNG.

Colours: a 1-channel (MNIST) map is drawn with a diverging colormap centred at 0 (`CMAP`,
red = increases the feature's midpoint, blue = decreases it), symmetric to the map's largest
|value|; a 3-channel (CIFAR) map is drawn as an RGB image with 0 at mid-grey:
rgb = 0.5 + 0.5 * g / max|g| per pixel and channel, so each channel's sign shows as more or less
of that colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from profit.features import FeatureMaps

CMAP = "RdBu_r"  # diverging, white at 0


def _array(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def _new_axes(ax: Axes | None, size: tuple[float, float] = (2.2, 2.2)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size)
    return fig, fig.add_subplot(1, 1, 1)


def rgb_map(grad: Tensor | np.ndarray) -> np.ndarray:
    """A (3, H, W) gradient as an (H, W, 3) RGB image in [0, 1], 0 at mid-grey (0.5)."""
    g = _array(grad).astype(np.float64)
    scale = np.abs(g).max()
    g = g / scale if scale > 0 else g
    return np.clip(0.5 + 0.5 * g, 0, 1).transpose(1, 2, 0)


def plot_image(image: Tensor | np.ndarray, ax: Axes | None = None, title: str | None = None) -> tuple[Figure, Axes]:
    """An input image (C, H, W) or (H, W) in [0, 1]: grey for one channel, RGB for three."""
    fig, ax = _new_axes(ax)
    img = _array(image)
    if img.ndim == 3 and img.shape[0] == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    else:
        ax.imshow(img.reshape(img.shape[-2:]), cmap="gray", vmin=0, vmax=1)
    _decorate(ax, title)
    return fig, ax


def plot_gradient_map(grad: Tensor | np.ndarray, ax: Axes | None = None, title: str | None = None,
                      colorbar: bool = False) -> tuple[Figure, Axes]:
    """A gradient map (C, H, W) or (H, W): diverging colormap centred at 0 for one channel,
    RGB with 0 at mid-grey for three (see the module docstring)."""
    fig, ax = _new_axes(ax)
    g = _array(grad)
    if g.ndim == 3 and g.shape[0] == 3:
        ax.imshow(rgb_map(g))
    else:
        g = g.reshape(g.shape[-2:])
        scale = float(np.abs(g).max()) or 1.0
        im = ax.imshow(g, cmap=CMAP, norm=TwoSlopeNorm(0.0, -scale, scale))
        if colorbar:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _decorate(ax, title)
    return fig, ax


def _decorate(ax: Axes, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_feature_maps(maps: FeatureMaps, max_features: int = 8, axes: Sequence[Axes] | None = None
                      ) -> tuple[Figure, list[Axes]]:
    """One row: the image, the aggregate map, then the maps of the (up to `max_features`)
    highest-priority kept features, titled with index and priority."""
    k = min(len(maps.features), max_features)
    if axes is None:
        fig = Figure(figsize=(2.0 * (k + 2), 2.3))
        axes = [fig.add_subplot(1, k + 2, j + 1) for j in range(k + 2)]
    else:
        fig = axes[0].figure
    plot_image(maps.image, ax=axes[0], title=f"image {maps.index}")
    plot_gradient_map(maps.aggregate, ax=axes[1], title=f"aggregate ({len(maps.features)} kept)")
    for j in range(k):
        plot_gradient_map(maps.maps[j], ax=axes[j + 2],
                          title=f"feature {int(maps.features[j])}\npriority {float(maps.priorities[j]):.3g}")
    return fig, list(axes)


def plot_comparison(images: Tensor | np.ndarray, aggregates: Mapping[str, Sequence[Tensor | str | None]],
                    titles: Sequence[str] | None = None) -> tuple[Figure, np.ndarray]:
    """ProFIt's comparison figure: rows = images, columns = image | one network per training
    method (the aggregate gradient map of its kept proof features). images: (N, C, H, W);
    aggregates: column title -> N entries, each a map, None (an empty cell marked "not proven")
    or a short text shown in an empty cell (e.g. "no feature kept")."""
    n, names = len(images), list(aggregates)
    fig = Figure(figsize=(1.6 * (len(names) + 1), 1.6 * n + 0.4))
    axes = np.array([[fig.add_subplot(n, len(names) + 1, r * (len(names) + 1) + c + 1)
                      for c in range(len(names) + 1)] for r in range(n)]).reshape(n, len(names) + 1)
    for r in range(n):
        plot_image(images[r], ax=axes[r, 0], title=("Image" if r == 0 else None))
        if titles is not None:
            axes[r, 0].set_ylabel(titles[r], fontsize=7)
        for c, name in enumerate(names):
            ax = axes[r, c + 1]
            grad = aggregates[name][r]
            if grad is None or isinstance(grad, str):
                _decorate(ax, name if r == 0 else None)
                ax.text(0.5, 0.5, "not proven" if grad is None else grad, ha="center", va="center", fontsize=6,
                        transform=ax.transAxes, wrap=True)
                continue
            plot_gradient_map(grad, ax=ax, title=(name if r == 0 else None))
    fig.tight_layout()
    return fig, axes


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def save_feature_maps(maps: FeatureMaps, directory: str | Path, stem: str) -> list[Path]:
    """PNG files for one image: `<stem>_aggregate.png`, `<stem>_feature<i>.png` per kept feature,
    and `<stem>_overview.png` (image, aggregate, top features)."""
    directory = Path(directory)
    paths = [save(plot_gradient_map(maps.aggregate, title="aggregate", colorbar=True)[0],
                  directory / f"{stem}_aggregate.png")]
    for j, feature in enumerate(maps.features.tolist()):
        fig, _ = plot_gradient_map(maps.maps[j], title=f"feature {feature}", colorbar=True)
        paths.append(save(fig, directory / f"{stem}_feature{feature}.png"))
    paths.append(save(plot_feature_maps(maps)[0], directory / f"{stem}_overview.png"))
    return paths


__all__ = ["CMAP", "plot_comparison", "plot_feature_maps", "plot_gradient_map", "plot_image", "rgb_map", "save",
           "save_feature_maps"]
