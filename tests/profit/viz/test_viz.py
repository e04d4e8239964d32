"""profit.viz under the Agg backend: plots return (fig, ax), draw into a given ax, never
show, and the PNGs decode to the expected size and colours."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from profit.features import FeatureMaps  # noqa: E402
from profit.viz import (  # noqa: E402
    CMAP, plot_comparison, plot_feature_maps, plot_gradient_map, plot_image, rgb_map, save, save_feature_maps,
)


def _split_map(channels: int = 1) -> torch.Tensor:
    """Left half +1, right half -1."""
    g = torch.ones(channels, 28, 28)
    g[..., 14:] = -1
    return g


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_gradient_map_returns_fig_ax_and_uses_given_ax() -> None:
    before = plt.get_fignums()
    fig, ax = plot_gradient_map(_split_map())
    assert isinstance(fig, Figure) and ax.figure is fig
    other = Figure()
    target = other.add_subplot(1, 1, 1)
    fig2, ax2 = plot_gradient_map(_split_map(), ax=target)
    assert fig2 is other and ax2 is target
    assert plt.get_fignums() == before  # nothing registered with pyplot, nothing to show


def test_mnist_map_diverging_centred_at_zero(tmp_path: Path) -> None:
    fig, ax = plot_gradient_map(_split_map() * 3, colorbar=True)
    image = ax.images[0]
    assert image.get_cmap().name == CMAP
    assert image.norm.vcenter == 0 and image.norm.vmin == -3 and image.norm.vmax == 3
    pixels = _png(save(fig, tmp_path / "map.png", dpi=50)).astype(int)
    assert pixels.shape == (110, 110, 3)  # figsize 2.2 in * 50 dpi
    red = pixels[..., 0] > pixels[..., 2] + 50  # RdBu_r: dark red (103, 0, 31) at +max
    blue = pixels[..., 2] > pixels[..., 0] + 50  # dark blue (5, 48, 97) at -max
    assert red.sum() > 500 and blue.sum() > 500
    cols_red, cols_blue = np.nonzero(red)[1], np.nonzero(blue)[1]
    assert np.median(cols_red) < np.median(cols_blue)  # positive on the left, negative on the right


def test_zero_map_is_white_in_the_middle(tmp_path: Path) -> None:
    fig, _ = plot_gradient_map(torch.zeros(1, 28, 28))
    pixels = _png(save(fig, tmp_path / "zero.png", dpi=50))
    assert (pixels[55, 55] > 240).all()


def test_cifar_map_is_rgb_with_grey_zero(tmp_path: Path) -> None:
    g = torch.zeros(3, 32, 32)
    g[0, :, :16] = 1.0  # more red on the left
    g[2, :, 16:] = -1.0  # less blue on the right
    rgb = rgb_map(g)
    assert rgb.shape == (32, 32, 3)
    assert np.allclose(rgb[0, 0], [1.0, 0.5, 0.5]) and np.allclose(rgb[0, 31], [0.5, 0.5, 0.0])
    assert np.allclose(rgb_map(torch.zeros(3, 4, 4)), 0.5)
    fig, ax = plot_gradient_map(g)
    assert ax.images[0].get_array().shape == (32, 32, 3)
    pixels = _png(save(fig, tmp_path / "rgb.png", dpi=50)).astype(int)
    left, right = pixels[55, 30], pixels[55, 80]
    assert left[0] > 240 and abs(left[1] - 128) < 5 and abs(left[2] - 128) < 5
    assert abs(right[0] - 128) < 5 and right[2] < 10


def test_plot_image_grey_and_rgb() -> None:
    _, ax = plot_image(torch.rand(1, 28, 28))
    assert ax.images[0].get_array().shape == (28, 28)
    _, ax = plot_image(torch.rand(3, 32, 32))
    assert ax.images[0].get_array().shape == (32, 32, 3)


def _maps(k: int = 3) -> FeatureMaps:
    maps = torch.randn(k, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    pri = torch.arange(k, 0, -1).float()
    return FeatureMaps(0, torch.rand(1, 28, 28), torch.arange(k), pri, maps, (pri.view(-1, 1, 1, 1) * maps).sum(0))


def test_feature_maps_figure_and_files(tmp_path: Path) -> None:
    fig, axes = plot_feature_maps(_maps(3))
    assert len(axes) == 5 and all(ax.figure is fig for ax in axes)
    paths = save_feature_maps(_maps(3), tmp_path, "img0")
    assert {p.name for p in paths} == {"img0_aggregate.png", "img0_feature0.png", "img0_feature1.png",
                                       "img0_feature2.png", "img0_overview.png"}
    assert all(_png(p).shape[2] == 3 for p in paths)


def test_comparison_figure_layout(tmp_path: Path) -> None:
    before = plt.get_fignums()
    images = torch.rand(2, 1, 28, 28)
    columns = {"Standard": [_split_map(), None], "IBP": [_split_map(), -_split_map()]}
    fig, axes = plot_comparison(images, columns, titles=["a", "b"])
    assert axes.shape == (2, 3)
    assert axes[0, 1].get_title() == "Standard" and axes[0, 0].get_title() == "Image"
    assert any(t.get_text() == "not proven" for t in axes[1, 1].texts)
    pixels = _png(save(fig, tmp_path / "cmp.png", dpi=40))
    assert pixels.shape[0] < pixels.shape[1]
    assert plt.get_fignums() == before


def test_attribution_plots_are_pure_with_colour_bars() -> None:
    from networks import load_onnx, shipped
    from profit.attribution import Saliency, gradient_bounds
    from profit.viz import plot_attributions, plot_gradient_bounds

    net = load_onnx(shipped("mnist_mlp"))
    x = torch.rand(1, 1, 28, 28)
    before = plt.get_fignums()
    fig, axes = plot_attributions(x[0], {"signed": _split_map(), "abs": Saliency(net).attribute(x)[0]})
    assert isinstance(fig, Figure) and len(axes) == 3 and len(fig.axes) == 5  # 2 colour bars
    image = axes[1].get_images()[0]
    assert image.get_cmap().name == CMAP and image.norm.vmin == -image.norm.vmax
    bounds = gradient_bounds(net, x, 1e-6)
    fig, axes = plot_gradient_bounds(x[0], bounds, k=4)
    assert len(axes) == 4 and axes[3].get_title() == "certified top-4: 4"
    assert len(axes[3].collections[0].get_offsets()) == 4
    assert plt.get_fignums() == before


def test_manipulation_figure_has_five_panels_and_three_colour_bars() -> None:
    from profit.viz import plot_manipulation

    x = torch.rand(1, 28, 28)
    fig, axes = plot_manipulation(x, _split_map(), -_split_map(), x, _split_map(), title="t")
    assert len(axes) == 5 and len(fig.axes) == 8
    assert [ax.get_title() for ax in axes] == ["original", "its explanation", "target", "manipulated",
                                               "its explanation"]
