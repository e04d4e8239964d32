"""Contrastive explanations (CEM, Dhurandhar et al., NeurIPS 2018) with a pluggable generator
(MAXi's loss x optimizer x gradient) and certified variants.

    from profit.cem import CEMOptions, cem, certify_pp
    result = cem(net, x0, CEMOptions(mode="PP", beta=0.1, c_steps=5))   # x0 (B, *shape) in [0, 1]
    result.explanation, result.found                                     # the PP (v + d) per image
    certify_pp(net, result)[0].status                                    # "certified" or "empirical"

- `components`: `CEMLoss` (PN / PP objectives on logits, feasible boxes), optimizers `FISTA`
  (slack variable, polynomial decay, exact l1 prox), `ProjectedAdam` and `AdaExpGrad`
  (adaptive exponentiated gradient with l1/l2 thresholding, MAXi's), gradients
  `SuperpixelCEMLoss` (one weight per segment of a label map, e.g. `grid_segments`),
  `TorchGradient` (white box), `RandomDirectionGradient` and `FiniteDifferenceGradient`
  (black box, e.g. `RuntimeModel` over onnxruntime).
- `generator`: `ExplanationGenerator(...).run(image, inference) -> (savepoints, meta)` and
  `cem` (binary search over c, the best successful iterate by elastic-net distance).
- `certify`: `certify_pp` (the class proven on the box between the PP and x0, then the PP
  shrunk while the proof holds) and `certify_pn` (onnxruntime re-check, proven radius).
"""

from profit.cem.certify import CertifiedPN, CertifiedPP, certify_pn, certify_pp
from profit.cem.components import (
    FISTA, AdaExpGrad, CEMLoss, FiniteDifferenceGradient, Gradient, Loss, Optimizer, ProjectedAdam,
    RandomDirectionGradient, RuntimeModel, SuperpixelCEMLoss, TorchGradient, grid_segments,
)
from profit.cem.generator import CEMOptions, CEMResult, ExplanationGenerator, cem

__all__ = ["AdaExpGrad", "CEMLoss", "CEMOptions", "CEMResult", "CertifiedPN", "CertifiedPP", "ExplanationGenerator",
           "FISTA", "FiniteDifferenceGradient", "Gradient", "Loss", "Optimizer", "ProjectedAdam",
           "RandomDirectionGradient", "RuntimeModel", "SuperpixelCEMLoss", "TorchGradient", "cem", "certify_pn",
           "certify_pp", "grid_segments"]
