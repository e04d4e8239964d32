"""profit: prove things about neural networks and explain the proofs.

The user-facing layer of the project. Data flows one way:

    region (specs) -> abstract domain over a network (domains) -> bounds
        -> verdict | proof features | explanation -> picture

The packages below this one are `networks` (ONNX -> typed IR, concrete forward,
shipped models), `specs` (input regions, output properties, VNN-LIB) and `domains`
(one module per abstract domain). This package holds one subpackage per use of the
bounds (see the README's layout section): `data`, `attacks`, `bab`, `verify`,
`features`, `explain`, `train`, `cem`, `attribution`, `runs`, `viz`, `testing` and the
`profit` command line (`profit.cli`, also `python -m profit`). The names below are loaded
on first use, so `import profit` costs little.

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
    saliency = profit.Saliency(net).attribute(x, target=y)                             # |d logit_y / dx|
    certified = profit.gradient_bounds(net, x, eps=1e-4, target=y).constant            # same map over the ball?
"""

import importlib
from typing import TYPE_CHECKING

from profit.version import __version__

_MODULES = {  # the module that defines each public name
    "networks": ("Network", "load_onnx"),
    "profit.errors": ("ProfitError",),
    "profit.outcomes": ("Counterexample", "Proven", "Unknown", "Verdict"),
    "profit.data": ("ImageSet", "load_images", "load_input", "load_network", "load_sample"),
    "profit.attacks": ("AttackOptions", "confirm", "pgd", "quick_attack"),
    "profit.bab": ("BabOptions", "check"),
    "profit.verify": ("Decision", "ImageResult", "Summary", "VerifyOptions", "VnnlibOutcome", "decide", "run_vnnlib",
                      "summarize", "summary_line", "verify_images"),
    "profit.features": ("ProofFeatures",),
    "profit.explain": ("Explainer", "Explanation", "PixelDomain"),
    "profit.cem": ("CEMOptions", "CEMResult", "ExplanationGenerator", "cem", "certify_pn", "certify_pp"),
    "profit.attribution": ("IntegratedGradients", "LRP", "Saliency", "SmoothGrad", "gradient_bounds", "manipulate"),
    "profit.viz": ("run_grid", "save_run"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> object:
    """Import a public name's module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'profit' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from networks import Network, load_onnx
    from profit.attacks import AttackOptions, confirm, pgd, quick_attack
    from profit.attribution import IntegratedGradients, LRP, Saliency, SmoothGrad, gradient_bounds, manipulate
    from profit.bab import BabOptions, check
    from profit.cem import CEMOptions, CEMResult, ExplanationGenerator, cem, certify_pn, certify_pp
    from profit.data import ImageSet, load_images, load_input, load_network, load_sample
    from profit.errors import ProfitError
    from profit.explain import Explainer, Explanation, PixelDomain
    from profit.features import ProofFeatures
    from profit.outcomes import Counterexample, Proven, Unknown, Verdict
    from profit.verify import (
        Decision, ImageResult, Summary, VerifyOptions, VnnlibOutcome, decide, run_vnnlib, summarize, summary_line,
        verify_images,
    )
    from profit.viz import run_grid, save_run
