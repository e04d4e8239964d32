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

    images = profit.load_images()                       # the shipped samples, [0, 1]
    results = profit.verify_images(net, images.images, images.labels, profit.VerifyOptions(eps=0.02))
    print(profit.summary_line(profit.summarize(results)))
    outcome = profit.run_vnnlib("net.onnx", "prop.vnnlib", timeout=60)   # sat / unsat / ...

    from specs import linf_ball, robustness
    x, y = images.images[:1], images.labels[:1]
    outcome = profit.check(net, linf_ball(x, 0.03), robustness(y, 10), timeout=60)   # Proven | Counterexample | Unknown
    features = profit.ProofFeatures.compute(net, x, y, eps=0.02)                      # ProFIt proof features
    binary = profit.PixelDomain.parse("binary")
    five = binary.quantize(images.images[23].double().numpy())
    patch = [r * 28 + c for r in range(15, 19) for c in range(8, 13)]                 # the paper's 20 pixels
    explainer = profit.Explainer(profit.load_network("mnist_5v6"), five, patch, binary)
    for e in explainer.enumerate("axp", limit=10):           # AXps, and the CXps met on the way
        print(e.kind, e.literals)                             # axp ((512, 0.0),) ...
"""

__version__ = "0.1.0"

from networks import Network, load_onnx
from profit.attack import AttackOptions, confirm, pgd, quick_attack
from profit.bab import BabOptions, Counterexample, Proven, Unknown, check
from profit.errors import ProfitError
from profit.explain import Explainer, Explanation, PixelDomain
from profit.features import ProofFeatures
from profit.images import ImageSet, load_images
from profit.inputs import load_input, load_network, load_sample
from profit.outcomes import Verdict
from profit.plots import run_grid, save_run
from profit.verify import ImageResult, Summary, VerifyOptions, summarize, summary_line, verify_images
from profit.vnnlib_runner import Decision, VnnlibOutcome, decide, run_vnnlib

__all__ = [
    "__version__", "AttackOptions", "BabOptions", "Counterexample", "Decision", "Explainer",
    "Explanation", "ImageResult", "ImageSet", "Network", "PixelDomain", "ProfitError", "ProofFeatures",
    "Proven", "Summary", "Unknown", "Verdict", "VerifyOptions", "VnnlibOutcome", "check", "confirm",
    "decide", "load_images", "load_input", "load_network", "load_onnx", "load_sample", "pgd",
    "quick_attack", "run_grid", "run_vnnlib", "save_run", "summarize", "summary_line", "verify_images"
]
