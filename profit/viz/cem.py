"""Pictures of contrastive explanations: original, explanation, and the change, side by side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from profit.viz.common import as_array, plot_gradient_map, plot_image


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
