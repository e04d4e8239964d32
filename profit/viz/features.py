"""Pictures of proof features: input-gradient maps and the training-method comparison figure.

Plotting is pure: every function takes data (tensors, `profit.features.FeatureMaps`) and returns
`(fig, ax)` (or `(fig, axes)`), draws into `ax=` when given, and never calls `plt.show()`
(see `profit.viz.common`).

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
from matplotlib.figure import Figure
from torch import Tensor

from profit.features import FeatureMaps
from profit.viz.common import decorate, plot_gradient_map, plot_image, save


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
                decorate(ax, name if r == 0 else None)
                ax.text(0.5, 0.5, "not proven" if grad is None else grad, ha="center", va="center", fontsize=6,
                        transform=ax.transAxes, wrap=True)
                continue
            plot_gradient_map(grad, ax=ax, title=(name if r == 0 else None))
    fig.tight_layout()
    return fig, axes


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


__all__ = ["plot_comparison", "plot_feature_maps", "save_feature_maps"]
