"""Counterexample search and its confirmation.

`pgd` / `quick_attack` search a Box for points violating a spec (heuristics: they may
miss); `confirm` / `onnx_outputs` re-execute candidates with onnxruntime on the ONNX
file, which is what makes a counterexample reportable.
"""

from profit.attacks.pgd import AttackOptions, pgd, quick_attack
from profit.attacks.runtime import confirm, onnx_outputs, session

__all__ = ["AttackOptions", "confirm", "onnx_outputs", "pgd", "quick_attack", "session"]
