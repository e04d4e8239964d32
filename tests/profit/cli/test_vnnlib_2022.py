"""Every VNN-COMP 2022 network in ../shared runs through `profit vnnlib` without an error.

One instance per network (the first the instances CSV pairs with it), a 2 s timeout: the
command exits 0 and writes a VNN-COMP result file whose first word is a result; a `sat`
is re-checked with onnxruntime. The full runs are specs.suites.vnnlib's 2022 suites.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from networks.datasets import shared_dir
from profit.cli import main
from profit.verify import counterexample_holds, read_instances

_SHARED = shared_dir()
_ROOT = None if _SHARED is None else _SHARED / "benchmarks" / "vnncomp2022"


def _first_per_network() -> list:
    if _ROOT is None or not _ROOT.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason="../shared/benchmarks/vnncomp2022 is absent"))]
    params, seen = [], set()
    for csv_path in sorted(_ROOT.glob("*/instances.csv")):
        for instance in read_instances(csv_path):
            if instance.onnx_path not in seen:
                seen.add(instance.onnx_path)
                params.append(pytest.param(instance, id=f"{csv_path.parent.name}/{Path(instance.onnx).name}"))
    return params


@pytest.mark.parametrize("instance", _first_per_network())
def test_runs_without_error(instance, tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    code = main(["vnnlib", instance.onnx_path, instance.vnnlib_path, "--timeout", "2", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert text.split()[0] in ("sat", "unsat", "unknown", "timeout"), text[:80]
    if text.startswith("sat"):
        values = dict(re.findall(r"\(X_(\d+)\s+([-+0-9.eEinfa]+)\)", text))
        x = torch.tensor([float(values[str(i)]) for i in range(len(values))])
        assert counterexample_holds(instance.onnx_path, instance.vnnlib_path, x)


def test_timeout_is_honoured_on_a_slow_instance(tmp_path: Path) -> None:
    """sri_resnet_a: one root bound pass of its ResNet takes seconds, longer than the timeout:
    the pass is abandoned at the deadline (domains.base.DeadlineExceeded) and the answer is
    `timeout` within 10% of it (plus 1 s for a loaded machine)."""
    if _ROOT is None or not (_ROOT / "sri_resnet_a").is_dir():
        pytest.skip("../shared/benchmarks/vnncomp2022 is absent")
    folder = _ROOT / "sri_resnet_a"
    out = tmp_path / "result.txt"
    start = time.perf_counter()
    code = main(["vnnlib", str(folder / "onnx" / "resnet_3b2_bn_mixup_adv_4.0_bs128_lr-1.onnx"),
                 str(folder / "vnnlib" / "cifar10_spec_idx_3197_eps_0.00350.vnnlib"), "--timeout", "3",
                 "--out", str(out)])
    seconds = time.perf_counter() - start
    assert code == 0 and out.read_text().split()[0] in ("timeout", "unknown")
    assert seconds <= 3 * 1.1 + 1.0, f"{seconds:.2f} s for a 3 s timeout"
