"""Pictures of formal explanations (pure: arrays in, uint8 RGB arrays out; only
`save_explanation_pngs` writes files).

Each image pixel becomes a SCALE x SCALE block; patch pixels are coloured by their value
(blue 0 .. red 1) on the dimmed gray image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from networks.ir import Network
from profit.errors import ProfitError
from profit.explain import Adversarial, Enumeration, Explainer, Explanation

SCALE = 10  # each image pixel becomes a SCALE x SCALE block
VALUE_LOW = np.array([0, 90, 255], dtype=np.float64)  # colour of value 0 (blue)
VALUE_HIGH = np.array([255, 40, 40], dtype=np.float64)  # colour of value 1 (red)
DIM = 0.35  # background brightness factor behind coloured pixels


def _image_shape(net: Network) -> tuple[int, int]:
    """(H, W) of a one-channel image input (or a flat input of a square number of pixels)."""
    shape = net.input_shape
    if len(shape) == 3 and shape[0] == 1:
        return shape[1], shape[2]
    if len(shape) == 2:
        return shape[0], shape[1]
    n = int(np.prod(shape))
    side = math.isqrt(n)
    if len(shape) == 1 and side * side == n:
        return side, side
    raise ProfitError(f"cannot draw PNGs for input shape {shape}: a one-channel image is needed")


def _gray(image: np.ndarray, dim: float = 1.0) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 gray, scaled by `dim`."""
    g = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255 * dim), 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def value_colour(value: float) -> np.ndarray:
    """The colour of a pixel value: VALUE_LOW at 0, VALUE_HIGH at 1, linear in between (uint8 RGB)."""
    return np.rint(VALUE_LOW + (VALUE_HIGH - VALUE_LOW) * float(np.clip(value, 0, 1))).astype(np.uint8)


def render_literals(image: np.ndarray, literals: dict[int, float], dim: float = DIM) -> np.ndarray:
    """The image in gray (dimmed by `dim`), each literal's pixel in the colour of its value."""
    rgb = _gray(image, dim)
    flat = rgb.reshape(-1, 3)
    for pixel, value in literals.items():
        flat[pixel] = value_colour(value)
    return rgb


def expl_frequencies(expls: Sequence[Explanation], n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel (n_in,): in how many explanations it occurs, and its mean value there (0 if none)."""
    counts, sums = np.zeros(n_in), np.zeros(n_in)
    for e in expls:
        for pixel, value in e.literals:
            counts[pixel] += 1
            sums[pixel] += value
    return counts, np.divide(sums, counts, out=np.zeros(n_in), where=counts > 0)


def render_frequencies(image: np.ndarray, counts: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Dimmed gray image; a pixel in some explanation is blended towards the colour of its mean
    value with opacity count / max count."""
    rgb = _gray(image, DIM).astype(np.float64).reshape(-1, 3)
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    for pixel in np.flatnonzero(counts):
        alpha = counts[pixel] / top
        rgb[pixel] = (1 - alpha) * rgb[pixel] + alpha * value_colour(means[pixel])
    return np.rint(rgb).astype(np.uint8).reshape(*image.shape, 3)


def render_heatmap(frequency: np.ndarray, image: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Per-pixel frequency over all explanations (the fraction containing the pixel, (H, W)
    in [0, 1]) as viridis colours on the patch pixels, on an absolute scale so maps of
    different runs compare; elsewhere the dimmed gray image, for context (uint8 RGB)."""
    from matplotlib import colormaps
    rgb = _gray(image, DIM).reshape(-1, 3)
    index = np.asarray(patch, dtype=np.int64)
    colours = colormaps["viridis"](np.clip(frequency.reshape(-1)[index], 0, 1))[:, :3]
    rgb[index] = np.rint(colours * 255).astype(np.uint8)
    return rgb.reshape(*image.shape, 3)


def _upscale(rgb: np.ndarray, scale: int = SCALE) -> np.ndarray:
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


@dataclass(frozen=True)
class SavedPngs:
    """The files `save_explanation_pngs` wrote (by name) and the verified adversarial example (if any)."""

    paths: dict[str, Path]
    adversarial: Adversarial | None


def save_explanation_pngs(explainer: Explainer, outdir: str | Path, e: Enumeration | Sequence[Explanation],
                          one: int = 0, sample: int = 0) -> SavedPngs:
    """Write the PNGs of an enumeration into `outdir` (created if needed):

    sample{d}-orig.png, sample{d}-patch.png (patch pixels coloured by value),
    sample{d}-{c}-all-expls.png (each patch pixel coloured by its mean value over the
    explanations containing it, opacity its frequency relative to the most frequent),
    sample{d}-{c}-freq.png (a heat map of each patch pixel's frequency over all
    explanations, viridis from 0 to 1, on the dimmed image), sample{d}-{c}-one-expl.png (explanation number `one`) and
    sample{d}-true-ae.png (an adversarial example: a counterexample's own literal values
    written into the instance (local mode: its witness), verified by running the network
    in float64 and onnxruntime). d = `sample`, c = the target ('not5' for opposite).
    """
    items = list(e)
    expls = [x for x in items if x.kind == "axp"]
    cxps = [x for x in items if x.kind == "cxp"]
    shape = _image_shape(explainer.net)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    image = explainer.problem.instance.reshape(shape)
    c = explainer.target_name.replace(" ", "")
    paths: dict[str, Path] = {}

    def save(name: str, rgb: np.ndarray) -> None:
        path = out / name
        Image.fromarray(_upscale(rgb)).save(path)
        paths[name] = path

    save(f"sample{sample}-orig.png", _gray(image))
    patch_values = {p: float(explainer.problem.instance[p]) for p in explainer.problem.patch}
    save(f"sample{sample}-patch.png", render_literals(image, patch_values, dim=1.0))
    counts, means = expl_frequencies(expls, explainer.problem.instance.size)
    save(f"sample{sample}-{c}-all-expls.png", render_frequencies(image, counts, means))
    save(f"sample{sample}-{c}-freq.png", render_heatmap(counts.reshape(shape) / max(len(expls), 1), image,
                                                             explainer.problem.patch))
    if expls:
        if not 0 <= one < len(expls):
            raise ProfitError(f"explanation {one} does not exist: there are {len(expls)} (0..{len(expls) - 1})")
        save(f"sample{sample}-{c}-one-expl.png", render_literals(image, dict(expls[one].literals)))
    adversarial = None
    if cxps:
        adversarial = explainer.adversarial(cxps[0])
        x = adversarial.input.reshape(shape)
        save(f"sample{sample}-true-ae.png", _gray(x))
    return SavedPngs(paths, adversarial)
