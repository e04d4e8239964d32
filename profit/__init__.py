"""profit: prove things about neural networks and explain the proofs.

The user-facing layer of the project. Data flows one way:

    region (specs) -> abstract domain over a network (domains) -> bounds
        -> verdict | proof features | explanation -> picture

The packages below this one are `networks` (ONNX -> typed IR, concrete forward,
shipped models), `domains` (one module per abstract domain) and `specs` (input
regions, output properties, VNN-LIB). This package holds the public API and the
`profit` command line (`profit.cli`, also `python -m profit`).

    import profit
    net = profit.load_onnx("networks/models/mnist_mlp.onnx")
    x = profit.load_input("digit.png", net)     # (1, *net.input_shape)
    logits = net(x)
"""

from networks import Network, load_onnx
from profit.errors import ProfitError
from profit.inputs import load_input, load_network, load_sample

__version__ = "0.1.0"

__all__ = ["Network", "ProfitError", "__version__", "load_input", "load_network", "load_onnx", "load_sample"]
