"""Training the networks the project ships: standard, PGD-adversarial and IBP-certified
training (through the domains' differentiable interval bounds), ONNX export and model cards.

    python -m profit.train --net mnist_conv_ibp --seed 0

Training sits above the domains (IBP and CROWN-certified accuracy use them), not in
`networks/`, which knows nothing of bounds.
"""

from profit.train.classifiers import NETS, NetSpec, TrainOptions, main, train

__all__ = ["NETS", "NetSpec", "TrainOptions", "main", "train"]
