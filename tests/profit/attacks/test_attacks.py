"""Attacks and their confirmation: profit.attacks.

A tiny hand-built net with a known counterexample, points always inside the box,
the mask, determinism, and `confirm` rejecting anything not inside the region or
not violating the property according to onnxruntime.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from networks import MODELS_DIR, load_onnx
from networks.datasets import load_samples
from networks.export import to_onnx
from profit.attacks import AttackOptions, confirm, onnx_outputs, pgd, quick_attack
from profit.errors import ProfitError
from specs import Box, inner_box, linf_ball, robustness, strictly_inside
from specs.properties import Spec

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
VNNCOMP = SHARED / "benchmarks" / "vnncomp2021"


def _tiny_model() -> torch.nn.Sequential:
    """y0 = relu(x0) + relu(x1), y1 = 0.9: class 0 wins iff x0 + x1 > 0.9 on [0, 1]^2."""
    first = torch.nn.Linear(2, 2)
    second = torch.nn.Linear(2, 2)
    with torch.no_grad():
        first.weight.copy_(torch.eye(2))
        first.bias.zero_()
        second.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        second.bias.copy_(torch.tensor([0.0, 0.9]))
    return torch.nn.Sequential(first, torch.nn.ReLU(), second)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The tiny net as IR and as its ONNX file."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    to_onnx(_tiny_model(), (2,), path)
    return load_onnx(path), path


def _unit_square(batch: int = 1) -> Box:
    return Box(torch.zeros(batch, 2), torch.ones(batch, 2))


def test_pgd_finds_the_known_counterexample(tiny) -> None:
    net, path = tiny
    region, spec = _unit_square(), robustness(torch.tensor([0]), 2)
    assert spec.margin(net(region.center)) > 0  # the centre is safe: PGD has to move
    x, found = pgd(net, region, spec, AttackOptions(steps=20, restarts=1))
    assert found.tolist() == [True]
    assert float(x.sum()) <= 0.9
    assert confirm(path, net, x, region, spec).tolist() == [True]


def test_quick_attack_finds_the_fgsm_vertex(tiny) -> None:
    net, path = tiny
    region, spec = _unit_square(), robustness(torch.tensor([0]), 2)
    x, found = quick_attack(net, region, spec, n_samples=4)
    assert found.tolist() == [True]
    assert confirm(path, net, x, region, spec).tolist() == [True]


def test_safe_region_reports_nothing(tiny) -> None:
    net, _ = tiny
    region = Box(torch.full((1, 2), 0.5), torch.ones(1, 2))  # x0 + x1 >= 1 > 0.9: safe
    spec = robustness(torch.tensor([0]), 2)
    assert pgd(net, region, spec)[1].tolist() == [False]
    assert quick_attack(net, region, spec)[1].tolist() == [False]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-2, 2), st.floats(0, 1.5)), min_size=2, max_size=2),
       st.integers(0, 3), st.integers(0, 1))
def test_points_never_leave_the_region(bounds, seed, label) -> None:
    model = _tiny_model()
    net = load_onnx_free(model)
    lower = torch.tensor([[lo for lo, _ in bounds]])
    upper = lower + torch.tensor([[w for _, w in bounds]])
    region = Box(lower, upper)
    spec = robustness(torch.tensor([label]), 2)
    for x, _ in (pgd(net, region, spec, AttackOptions(steps=7, restarts=2, seed=seed)),
                 quick_attack(net, region, spec, n_samples=5, seed=seed)):
        assert bool(region.contains(x).all())


def load_onnx_free(model: torch.nn.Sequential):
    """The IR of a 2-input torch model, through a temporary ONNX file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        to_onnx(model, (2,), path)
        return load_onnx(path)


def test_mask_freezes_the_other_inputs(tiny) -> None:
    net, _ = tiny
    region, spec = _unit_square(2), robustness(torch.tensor([0, 0]), 2)
    mask = torch.tensor([True, False])
    for x, _ in (pgd(net, region, spec, AttackOptions(steps=10, restarts=3), mask=mask),
                 quick_attack(net, region, spec, mask=mask)):
        assert torch.equal(x[:, 1], region.center[:, 1])
    x, found = pgd(net, region, spec, AttackOptions(steps=10), mask=mask)
    assert found.all()  # x1 = 0.5 fixed, x0 -> 0 gives 0.5 < 0.9
    per_sample = torch.tensor([[True, False], [False, True]])
    x, _ = pgd(net, region, spec, AttackOptions(steps=10), mask=per_sample)
    assert x[0, 1] == 0.5 and x[1, 0] == 0.5


def test_pgd_is_deterministic_and_batched() -> None:
    net = load_onnx(MODELS_DIR / "mnist_mlp.onnx")
    images, labels = load_samples()
    x0, y = torch.from_numpy(images[:6]), torch.from_numpy(labels[:6])
    region, spec = linf_ball(x0, 0.06), robustness(y, 10)
    options = AttackOptions(steps=8, restarts=2, seed=3)
    a, fa = pgd(net, region, spec, options)
    b, fb = pgd(net, region, spec, options)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    single = [pgd(net, region[i], spec[i], AttackOptions(steps=8, restarts=1))[1] for i in range(2)]
    batched = pgd(net, region[:2], spec[:2], AttackOptions(steps=8, restarts=1))[1]
    assert torch.cat(single).tolist() == batched.tolist()


def test_confirm_rejects_points_outside_or_safe(tiny) -> None:
    net, path = tiny
    region, spec = _unit_square(3), robustness(torch.tensor([0, 0, 0]), 2)
    below = torch.nextafter(torch.tensor(0.0), torch.tensor(-1.0))
    x = torch.tensor([[0.0, 0.0], [float(below), 0.0], [1.0, 1.0]])  # cex; 1 ulp outside; safe
    assert confirm(path, net, x, region, spec).tolist() == [True, False, False]
    assert confirm(path, net, x[:1], region[:1], spec[:1], tol=0.95).tolist() == [False]


def test_confirm_uses_onnxruntime_not_the_ir(tiny, tmp_path: Path) -> None:
    """A point the IR calls a counterexample is rejected if the ONNX file disagrees."""
    net, _ = tiny
    other = _tiny_model()
    with torch.no_grad():
        other[2].bias.copy_(torch.tensor([0.0, -5.0]))  # class 0 always wins in this file
    path = tmp_path / "other.onnx"
    to_onnx(other, (2,), path)
    region, spec = _unit_square(), robustness(torch.tensor([0]), 2)
    x = torch.zeros(1, 2)
    assert spec.margin(net(x)) < 0
    assert confirm(path, net, x, region, spec).tolist() == [False]


@pytest.mark.parametrize("onnx_name", ["mnistfc/mnist-net_256x2.onnx", "test/test_nano.onnx",
                                       "acasxu/ACASXU_run2a_1_1_batch_2000.onnx"])
def test_onnx_outputs_for_fixed_and_missing_batch_dims(onnx_name: str) -> None:
    path = VNNCOMP / onnx_name
    if not path.exists():
        pytest.skip(f"{path} not found (shared data absent)")
    net = load_onnx(path)
    x = torch.rand(3, *net.input_shape)
    y = onnx_outputs(path, net, x)
    assert y.shape == (3, net.n_outputs)
    assert torch.allclose(y.float(), net.logits(x), atol=1e-4)


def test_inner_boxes_lie_inside_the_exact_bounds() -> None:
    lower = torch.tensor([[0.1, -0.3, 0.5]], dtype=torch.float64)
    upper = torch.tensor([[0.2, 0.7, 0.5]], dtype=torch.float64)
    box, ok = inner_box(lower, upper)
    assert ok.tolist() == [True]
    assert bool((box.lower.double() >= lower).all() and (box.upper.double() <= upper).all())
    outer = Box(lower, upper)  # rounded outward
    inside, ok = strictly_inside(outer)
    assert ok.tolist() == [True]
    assert bool((inside.lower.double() >= lower).all() and (inside.upper.double() <= upper).all())
    tiny_gap = torch.tensor([[0.1]], dtype=torch.float64)
    _, ok = inner_box(tiny_gap, tiny_gap)  # 0.1 is no float32: no float32 point inside
    assert ok.tolist() == [False]


def test_bad_options_and_masks() -> None:
    with pytest.raises(ProfitError):
        AttackOptions(restarts=0)
    with pytest.raises(ProfitError):
        AttackOptions(step_size=0.0)
    net = load_onnx_free(_tiny_model())
    spec = Spec(torch.tensor([[[1.0, -1.0]]]), torch.zeros(1, 1), torch.tensor([0]))
    with pytest.raises(ProfitError, match="mask"):
        pgd(net, _unit_square(), spec, mask=torch.ones(3, dtype=torch.bool))


def test_no_counterexample_outside_region_on_a_real_net() -> None:
    net = load_onnx(MODELS_DIR / "mnist_mlp.onnx")
    images, labels = load_samples()
    x0, y = torch.from_numpy(images[:8]), torch.from_numpy(labels[:8])
    region, spec = linf_ball(x0, 0.1), robustness(y, 10)
    x, found = pgd(net, region, spec, AttackOptions(steps=10, restarts=2))
    assert bool(region.contains(x).all())
    assert found.any()
    ok = confirm(MODELS_DIR / "mnist_mlp.onnx", net, x, region, spec)
    assert ok.tolist() == found.tolist()
    assert np.all((x - x0).abs().numpy() <= 0.1 + 1e-7)
