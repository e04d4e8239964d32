"""Every picture of the project. Pure: data in, `(fig, ax)` (or RGB arrays) out, nothing shown;
the `save*` functions write PNGs.

`common`: signed maps with colour bars, images, `save`; `verify`: the verdict grid of a
verification run; `features`: proof-feature gradient maps; `explain`: explanation maps;
`cem`: contrastive explanations; `attribution`: gradient attributions and certified gradient
bounds. Only this package imports matplotlib.
"""

from profit.viz.attribution import plot_attributions, plot_gradient_bounds, plot_manipulation
from profit.viz.cem import plot_cem, plot_savepoints
from profit.viz.common import CMAP, plot_gradient_map, plot_image, rgb_map, save
from profit.viz.explain import SavedPngs, save_explanation_pngs
from profit.viz.features import plot_comparison, plot_feature_maps, save_feature_maps
from profit.viz.verify import run_grid, save_run

__all__ = [
    "CMAP", "SavedPngs", "plot_attributions", "plot_cem", "plot_comparison", "plot_feature_maps",
    "plot_gradient_bounds", "plot_gradient_map", "plot_image", "plot_manipulation", "plot_savepoints", "rgb_map",
    "run_grid", "save", "save_explanation_pngs", "save_feature_maps", "save_run",
]
