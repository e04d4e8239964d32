"""What users name on the command line, loaded: networks, single inputs and image sets.

`load_network` (a shipped name or an ONNX path), `load_input` (PNG/JPEG/.npy for one
network input), `load_sample` (a shipped MNIST sample), `load_images` (labelled image
sets: MNIST IDX, ERAN CSV, PNG folders, .npy/.npz) and `fit_to_network` (an image batch
reshaped to a network's input). Every problem raises `ProfitError` naming the file.
"""

from profit.data.images import ImageSet, fit_to_network, load_images, network_channels
from profit.data.inputs import load_input, load_network, load_sample

__all__ = ["ImageSet", "fit_to_network", "load_images", "load_input", "load_network", "load_sample",
           "network_channels"]
