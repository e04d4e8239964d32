"""Tests of specs.regions: Box, linf_ball, patch, patch_linf."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specs import Box, RegionError, linf_ball, patch, patch_linf


def test_box_properties_hand_computed() -> None:
    box = Box(torch.tensor([[0.0, 1.0], [-2.0, 0.0]]), torch.tensor([[2.0, 3.0], [-2.0, 4.0]]))
    assert box.batch_size == 2
    assert box.shape == (2,)
    torch.testing.assert_close(box.center, torch.tensor([[1.0, 2.0], [-2.0, 2.0]]))
    torch.testing.assert_close(box.radius, torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
    assert box.lower.dtype == torch.float32


@pytest.mark.parametrize(
    ("lower", "upper", "message"),
    [
        (torch.zeros(1, 2), torch.ones(1, 3), "differ in shape"),
        (torch.ones(1, 2), torch.zeros(1, 2), "lower > upper at flat index 0"),
        (torch.tensor([[0.0, float("nan")]]), torch.ones(1, 2), "NaN"),
        (torch.tensor(0.0), torch.tensor(1.0), "batch dimension"),
    ],
)
def test_box_rejects_invalid_bounds(lower: torch.Tensor, upper: torch.Tensor, message: str) -> None:
    with pytest.raises(RegionError, match=message):
        Box(lower, upper)


def test_box_rounds_float64_outward() -> None:
    value = torch.tensor([[0.1, -1 / 3, 0.5]], dtype=torch.float64)
    box = Box(value, value)
    assert box.lower.dtype == box.upper.dtype == torch.float32
    assert (box.lower.double() <= value).all() and (box.upper.double() >= value).all()
    assert box.lower[0, 0] < box.upper[0, 0]  # 0.1 is not a float32
    assert box.lower[0, 2] == box.upper[0, 2] == 0.5  # exact values stay exact


def test_box_is_immutable() -> None:
    box = Box(torch.zeros(1, 1), torch.ones(1, 1))
    with pytest.raises(AttributeError):
        box.lower = torch.ones(1, 1)  # type: ignore[misc]


def test_contains_hand_computed() -> None:
    box = Box(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    x = torch.tensor([[1.0, 0.5], [2.05, 1.5]])
    assert box.contains(x).tolist() == [True, False]
    assert box.contains(x, tol=0.1).tolist() == [True, True]
    with pytest.raises(RegionError, match="contains expects x of shape"):
        box.contains(torch.zeros(2, 3))


def test_getitem_keeps_the_batch_dimension() -> None:
    box = Box(torch.arange(3.0)[:, None], torch.arange(3.0)[:, None] + 1)
    assert box[0].lower.tolist() == [[0.0]]
    assert box[-1].upper.tolist() == [[3.0]]
    assert box[1:].lower.tolist() == [[1.0], [2.0]]
    assert box[torch.tensor([2, 0])].lower.tolist() == [[2.0], [0.0]]


def test_concat() -> None:
    a = Box(torch.zeros(1, 2), torch.ones(1, 2))
    b = Box(-torch.ones(2, 2), torch.zeros(2, 2))
    both = Box.concat([a, b])
    assert both.batch_size == 3
    assert both.lower[:, 0].tolist() == [0.0, -1.0, -1.0]
    with pytest.raises(RegionError, match="equal per-sample shapes"):
        Box.concat([a, Box(torch.zeros(1, 3), torch.ones(1, 3))])
    with pytest.raises(RegionError, match="at least one"):
        Box.concat([])


def test_sample_shapes_and_determinism() -> None:
    box = Box(torch.zeros(2, 3, 4), torch.ones(2, 3, 4))
    s1 = box.sample(5, generator=torch.Generator().manual_seed(0))
    s2 = box.sample(5, generator=torch.Generator().manual_seed(0))
    assert s1.shape == (2, 5, 3, 4)
    assert torch.equal(s1, s2)
    v = box.vertices_sample(7, generator=torch.Generator().manual_seed(1))
    assert v.shape == (2, 7, 3, 4)
    assert ((v == 0) | (v == 1)).all()
    assert (v == 0).any() and (v == 1).any()


def test_sampling_an_infinite_box_fails() -> None:
    box = linf_ball(torch.zeros(1, 2), float("inf"), lo=None, hi=None)
    with pytest.raises(RegionError, match="infinite"):
        box.sample(1)


def test_linf_ball_hand_computed() -> None:
    x = torch.tensor([[0.5, 0.01, 0.99]])
    box = linf_ball(x, 0.05)
    torch.testing.assert_close(box.lower, torch.tensor([[0.45, 0.0, 0.94]]))
    torch.testing.assert_close(box.upper, torch.tensor([[0.55, 0.06, 1.0]]))
    unclipped = linf_ball(x, 0.05, lo=None, hi=None)
    torch.testing.assert_close(unclipped.lower, torch.tensor([[0.45, -0.04, 0.94]]))
    torch.testing.assert_close(unclipped.upper, torch.tensor([[0.55, 0.06, 1.04]]))


def test_linf_ball_tensor_eps_and_bounds() -> None:
    x = torch.zeros(2, 2)
    box = linf_ball(x, torch.tensor([[1.0], [2.0]]), lo=torch.tensor([-1.5, -5.0]), hi=None)
    assert box.lower.tolist() == [[-1.0, -1.0], [-1.5, -2.0]]
    assert box.upper.tolist() == [[1.0, 1.0], [2.0, 2.0]]


@pytest.mark.parametrize(("eps", "shown"), [(-0.1, "-0.1"), (float("nan"), "nan")])
def test_linf_ball_rejects_bad_eps(eps: float, shown: str) -> None:
    with pytest.raises(RegionError, match=f"eps must be >= 0, got {shown}"):
        linf_ball(torch.zeros(1, 2), eps)


def test_linf_ball_zero_eps_is_a_point() -> None:
    x = torch.tensor([[0.25, 0.75]])
    box = linf_ball(x, 0.0)
    assert torch.equal(box.lower, x) and torch.equal(box.upper, x)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    n=st.integers(1, 6),
    eps=st.floats(0.0, 1.0),
)
def test_linf_ball_clips_and_samples_inside(seed: int, batch: int, n: int, eps: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, generator=g) * 2 - 0.5  # some coordinates outside [0, 1]
    box = linf_ball(x, eps)
    assert (box.lower >= 0).all() and (box.upper <= 1).all()
    assert (box.upper - box.lower <= 2 * eps + 1e-6).all()
    assert box.contains(x.clamp(0, 1), tol=1e-7).all()
    samples = box.sample(20, generator=g)
    assert (samples >= box.lower[:, None]).all() and (samples <= box.upper[:, None]).all()
    assert ((samples - x.clamp(0, 1)[:, None]).abs() <= eps + 1e-6).all()  # clipping is 1-Lipschitz
    for k in range(20):
        assert box.contains(samples[:, k]).all()
    vertices = box.vertices_sample(4, generator=g)
    assert ((vertices == box.lower[:, None]) | (vertices == box.upper[:, None])).all()


@settings(max_examples=60, deadline=None)
@given(
    lower=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=5),
    width=st.lists(st.floats(0.0, 1e6), min_size=5, max_size=5),
)
def test_box_samples_inside_any_box(lower: list[float], width: list[float]) -> None:
    lo = torch.tensor([lower], dtype=torch.float64)
    box = Box(lo, lo + torch.tensor([width[: len(lower)]], dtype=torch.float64))
    samples = box.sample(10, generator=torch.Generator().manual_seed(0))
    assert (samples >= box.lower[:, None]).all() and (samples <= box.upper[:, None]).all()


def test_patch_hand_computed() -> None:
    x = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]])  # (1, 1, 2, 2)
    box = patch(x, [1, 2])
    torch.testing.assert_close(box.lower, torch.tensor([[[[0.1, 0.0], [0.0, 0.4]]]]))
    torch.testing.assert_close(box.upper, torch.tensor([[[[0.1, 1.0], [1.0, 0.4]]]]))
    wide = patch(x, [3], lo=-1.0, hi=2.0)
    assert wide.lower[0, 0, 1, 1] == -1.0 and wide.upper[0, 0, 1, 1] == 2.0


def test_patch_linf_hand_computed() -> None:
    x = torch.tensor([[0.5, 0.98, 0.5]])
    box = patch_linf(x, [1, 2], 0.05)
    torch.testing.assert_close(box.lower, torch.tensor([[0.5, 0.93, 0.45]]))
    torch.testing.assert_close(box.upper, torch.tensor([[0.5, 1.0, 0.55]]))


@pytest.mark.parametrize("pixel", [4, -1])
def test_patch_rejects_out_of_range_pixels(pixel: int) -> None:
    with pytest.raises(RegionError, match=f"pixel index {pixel} out of range for 4"):
        patch(torch.zeros(1, 2, 2), [0, pixel])
    with pytest.raises(RegionError, match="out of range"):
        patch_linf(torch.zeros(1, 2, 2), [pixel], 0.1)
