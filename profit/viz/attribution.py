"""Pictures of gradient attributions: an image beside its maps, and certified gradient bounds.

Pure: data in (tensors, `profit.attribution.GradientBounds`), `(fig, axes)` out, nothing shown.
Signed maps use the diverging colormap centred at 0 with a colour bar (`profit.viz.common`);
unsigned maps (|gradient|) the same, so their colours read the same way. `plot_attributions`
also draws a beta sweep: pass {"beta=1": map, ...}.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from profit.attribution import GradientBounds
from profit.viz.common import as_array, decorate, plot_gradient_map, plot_image


def plot_attributions(image: Tensor, maps: Mapping[str, Tensor], title: str | None = None
                      ) -> tuple[Figure, list[Axes]]:
    """One row: the image (C, H, W), then each map (its shape) titled by its key, with colour bars."""
    fig = Figure(figsize=(2.6 * (1 + len(maps)), 2.6))
    axes = [fig.add_subplot(1, 1 + len(maps), i + 1) for i in range(1 + len(maps))]
    plot_image(image, ax=axes[0], title="input")
    for ax, (name, m) in zip(axes[1:], maps.items()):
        plot_gradient_map(m, ax=ax, title=name, colorbar=True)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig, axes


def plot_gradient_bounds(image: Tensor, bounds: GradientBounds, k: int = 10, index: int = 0
                         ) -> tuple[Figure, list[Axes]]:
    """The image, the lower and upper bound of d f_t/dx over the ball (one colour scale, with colour
    bars), and the certified top-k pixels (marked on the image) of batch element `index`."""
    lo, hi = bounds.lower[index], bounds.upper[index]
    fig = Figure(figsize=(10.4, 2.8))
    axes = [fig.add_subplot(1, 4, i + 1) for i in range(4)]
    plot_image(image, ax=axes[0], title="input")
    scale = float(max(np.abs(as_array(lo)).max(), np.abs(as_array(hi)).max()))
    for ax, m, name in ((axes[1], lo, "lower bound"), (axes[2], hi, "upper bound")):
        plot_gradient_map(m, ax=ax, title=name, colorbar=True)
        for im in ax.get_images():
            im.set_clim(-scale, scale)
    plot_image(image, ax=axes[3])
    certified = as_array(bounds.certified_topk(k)[index]).reshape(as_array(image).shape[-2:])
    rows, cols = np.nonzero(certified)
    axes[3].scatter(cols, rows, s=14, facecolors="none", edgecolors="red", linewidths=1.0)
    decorate(axes[3], f"certified top-{k}: {len(rows)}")
    constant = "constant map" if bool(bounds.constant[index]) else f"{int(bounds.unstable[index])} unstable ReLUs"
    fig.suptitle(f"d f_{int(bounds.target[index])}/dx over the ball: {constant}", fontsize=9)
    fig.tight_layout()
    return fig, axes


def plot_manipulation(x: Tensor, map_original: Tensor, map_target: Tensor, x_adv: Tensor, map_adv: Tensor,
                      title: str | None = None) -> tuple[Figure, list[Axes]]:
    """The manipulation attack side by side: original input, its explanation, the target map, the
    manipulated input and its explanation (maps with colour bars)."""
    fig = Figure(figsize=(13.0, 2.8))
    axes = [fig.add_subplot(1, 5, i + 1) for i in range(5)]
    plot_image(x, ax=axes[0], title="original")
    plot_gradient_map(map_original, ax=axes[1], title="its explanation", colorbar=True)
    plot_gradient_map(map_target, ax=axes[2], title="target", colorbar=True)
    plot_image(x_adv, ax=axes[3], title="manipulated")
    plot_gradient_map(map_adv, ax=axes[4], title="its explanation", colorbar=True)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig, axes
