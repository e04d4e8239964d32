"""Gradient attributions, Captum style: `Method(net).attribute(inputs, target=None, **args)` returns a
map of the inputs' shape for any IR network; beta-smoothed variants; certified gradient bounds;
the explanation manipulation attack.

    from profit.attribution import IntegratedGradients, gradient_bounds
    maps = IntegratedGradients(net).attribute(x, target=3, n_steps=64)
    bounds = gradient_bounds(net, x, eps=0.01)     # d f_t/dx over the eps-ball: lower, upper, constant
"""

from profit.attribution.certify import GradientBounds, gradient_bounds
from profit.attribution.manipulate import (
    ManipulationOptions, ManipulationResult, manipulate, normalise, pcc, ssim,
)
from profit.attribution.methods import (
    LRP, LRP_RULES, Attribution, GuidedBackprop, InputXGradient, IntegratedGradients, LRPOptions,
    ProofFeatureMap, Saliency, SmoothGrad, gradient, resolve_target,
)
from profit.attribution.smoothing import BetaSmoothed, beta_smoothed_network

METHODS: dict[str, type[Attribution]] = {  # CLI name -> class
    "saliency": Saliency,
    "ixg": InputXGradient,
    "ig": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "guided": GuidedBackprop,
    "lrp": LRP,
    "proof": ProofFeatureMap,
}

__all__ = [
    "Attribution", "BetaSmoothed", "GradientBounds", "GuidedBackprop", "InputXGradient", "IntegratedGradients",
    "LRP", "LRPOptions", "LRP_RULES", "METHODS", "ManipulationOptions", "ManipulationResult", "ProofFeatureMap",
    "Saliency", "SmoothGrad", "beta_smoothed_network",
    "gradient", "gradient_bounds", "manipulate", "normalise", "pcc", "resolve_target", "ssim",
]
