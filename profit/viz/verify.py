"""Pictures of verification runs. Pure: data in, (fig, ax) out; nothing is shown.

    fig, ax = run_grid(results, images)      # one tile per image
    fig.savefig("grid.png")
    save_run("out/", results, images)         # grid.png + cex_<idx>.png/.npy

Figures are built with `matplotlib.figure.Figure`, not pyplot, so they are
never shown and do not depend on the backend. Tiles are framed in the colour of their verdict (VERDICT_COLORS) and captioned
with the image index, the verdict and the margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from torch import Tensor

from profit.errors import ProfitError
from profit.outcomes import Verdict
from profit.verify import ImageResult

VERDICT_COLORS: dict[Verdict, tuple[float, float, float]] = {
    Verdict.VERIFIED: (0.18, 0.63, 0.17),
    Verdict.FALSIFIED: (0.84, 0.15, 0.16),
    Verdict.UNKNOWN: (0.6, 0.6, 0.6),
    Verdict.TIMEOUT: (1.0, 0.5, 0.05),
    Verdict.MISCLASSIFIED: (0.58, 0.4, 0.74),
}
_FRAME = 2  # pixels of coloured frame around each tile


def _tile(image: np.ndarray) -> np.ndarray:
    """One image (C, H, W), (H, W) or flat as an (H, W, 3) RGB array in [0, 1]."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = image.transpose(1, 2, 0)
    elif image.ndim != 2:
        flat = image.reshape(-1)
        side = math.isqrt(flat.size)
        image = flat.reshape(side, side) if side * side == flat.size else flat.reshape(1, -1)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def run_grid(
    results: Sequence[ImageResult],
    images: Tensor | np.ndarray,
    ncols: int = 10,
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """A grid of the images of a run (in the order of `results`), framed by verdict.

    images: (N, *image_shape) in [0, 1], one per result. Captions: index, verdict, margin.
    """
    images = np.asarray(images.detach().cpu() if isinstance(images, Tensor) else images)
    if len(images) != len(results):
        raise ValueError(f"run_grid got {len(results)} results and {len(images)} images")
    n = len(results)
    ncols = max(1, min(ncols, n or 1))
    nrows = max(1, math.ceil(n / ncols))
    tiles = [_tile(im) for im in images]
    h, w = tiles[0].shape[:2] if tiles else (28, 28)
    cell_h, cell_w = h + 2 * _FRAME, w + 2 * _FRAME
    caption = max(6, cell_h // 2)
    canvas = np.ones((nrows * (cell_h + caption), ncols * cell_w + (ncols - 1) * 2, 3))
    if ax is None:
        fig = Figure(figsize=(1.2 * ncols, 1.6 * nrows))  # not pyplot: never shown, any backend
        ax = fig.subplots()
    else:
        fig = ax.figure
    for k, (result, tile) in enumerate(zip(results, tiles)):
        r, c = divmod(k, ncols)
        top, left = r * (cell_h + caption), c * (cell_w + 2)
        canvas[top:top + cell_h, left:left + cell_w] = VERDICT_COLORS[result.verdict]
        canvas[top + _FRAME:top + _FRAME + h, left + _FRAME:left + _FRAME + w] = tile
        margin = "" if result.margin is None else f"\n{result.margin:+.2f}"
        ax.text(left + cell_w / 2, top + cell_h + 1, f"#{result.idx} {result.verdict.value}{margin}",
                ha="center", va="top", fontsize=5, color=VERDICT_COLORS[result.verdict])
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    ax.legend(handles=[Patch(color=col, label=v.value) for v, col in VERDICT_COLORS.items()],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(VERDICT_COLORS), fontsize=6, frameon=False)
    return fig, ax


def save_run(directory: str | Path, results: Sequence[ImageResult], images: Tensor | np.ndarray) -> list[Path]:
    """Write `grid.png` (run_grid) and, per falsified image, `cex_<idx>.png` and `cex_<idx>.npy`.

    The .npy holds the exact counterexample (image layout, [0, 1] pixels); the PNG is its
    8-bit rendering. Returns the written paths.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProfitError(f"{directory}: cannot create the directory ({exc.strerror or exc})") from None
    written = []
    try:
        for r in results:
            if r.counterexample is None:
                continue
            array = r.counterexample.detach().cpu().numpy()
            np.save(directory / f"cex_{r.idx}.npy", array)
            rgb = np.round(_tile(array) * 255).astype(np.uint8)
            gray = array.ndim != 3 or array.shape[0] == 1
            Image.fromarray(rgb[:, :, 0] if gray else rgb, mode="L" if gray else "RGB").save(
                directory / f"cex_{r.idx}.png")
            written += [directory / f"cex_{r.idx}.npy", directory / f"cex_{r.idx}.png"]
        fig, _ = run_grid(results, images)
        fig.savefig(directory / "grid.png", dpi=150, bbox_inches="tight")
        written.append(directory / "grid.png")
    except OSError as exc:
        raise ProfitError(f"{directory}: cannot write ({exc.strerror or exc})") from None
    return written
