"""Verification front-ends: eps-ball robustness of images, and VNN-LIB properties.

    results = verify_images(net, images, labels, VerifyOptions(eps=0.02))   # one ImageResult per image
    outcome = run_vnnlib("net.onnx", "prop.vnnlib", timeout=60)             # sat / unsat / unknown / timeout

`robustness`: attacks, then the domains cheapest first, then (with `complete`) branch
and bound, per image; `vnnlib`: a VNN-LIB file decided by `profit.bab.check_problems`,
written as a VNN-COMP result file.
"""

from profit.verify.robustness import (
    ImageResult, Summary, VerifyOptions, check_out_path, summarize, summary_line, verify_images, write_results,
)
from profit.verify.vnnlib import (
    Decision, VnnlibInstance, VnnlibOutcome, counterexample_holds, decide, read_instances, run_vnnlib, run_vnnlib2,
)

__all__ = ["Decision", "ImageResult", "Summary", "VerifyOptions", "VnnlibInstance", "VnnlibOutcome", "check_out_path",
           "counterexample_holds", "decide", "read_instances", "run_vnnlib", "run_vnnlib2", "summarize", "summary_line",
           "verify_images", "write_results"]
