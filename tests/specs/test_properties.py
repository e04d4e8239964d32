"""Tests of specs.properties: Spec, robustness, from_unsafe."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specs import Spec, SpecError, from_unsafe, robustness


def _two_clause_spec() -> Spec:
    """(y0 > 0 or y1 > 0) and (y0 - y1 - 1 > 0)."""
    C = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]])
    return Spec(C, torch.tensor([[0.0, 0.0, -1.0]]), torch.tensor([0, 0, 1]))


def test_values_margin_holds_hand_computed() -> None:
    spec = _two_clause_spec()
    assert spec.n_clauses == 2
    y = torch.tensor([[1.0, -2.0]])
    assert spec.values(y).tolist() == [[1.0, -2.0, 2.0]]
    assert spec.margin(y).tolist() == [1.0]  # min(max(1, -2), 2)
    assert spec.holds(y).tolist() == [True]
    y = torch.tensor([[-1.0, -1.0]])
    assert spec.margin(y).tolist() == [-1.0]
    assert spec.holds(y).tolist() == [False]
    y = torch.tensor([[1.0, 0.0]])  # second clause exactly 0: a counterexample
    assert spec.margin(y).tolist() == [0.0]
    assert spec.holds(y).tolist() == [False]


def test_values_accepts_sample_dimensions() -> None:
    spec = _two_clause_spec().expand(2)
    y = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(0))
    margin = spec.margin(y)
    assert margin.shape == (2, 5)
    for k in range(5):
        torch.testing.assert_close(margin[:, k], spec.margin(y[:, k]))


def test_proven_and_spec_margin_hand_computed() -> None:
    spec = _two_clause_spec().expand(4)
    lower = torch.tensor([[-1.0, 0.5, 0.1], [-1.0, -0.5, 3.0], [2.0, 1.0, 0.0], [float("nan"), 1.0, 1.0]])
    torch.testing.assert_close(spec.spec_margin(lower)[:3], torch.tensor([0.1, -0.5, 0.0]))
    assert spec.proven(lower).tolist() == [True, False, False, False]


@pytest.mark.parametrize(
    ("C", "d", "clause", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(2), torch.tensor([0, 1]), r"C must be \(B, m, n_out\)"),
        (torch.zeros(1, 2, 3), torch.zeros(1, 3), torch.tensor([0, 1]), r"d must be \(B, m\)"),
        (torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.tensor([0]), r"clause must be \(m,\)"),
        (torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.tensor([0.0, 1.0]), "must be long"),
        (torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.tensor([0, 2]), "every id used"),
        (torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.tensor([-1, 0]), "every id used"),
    ],
)
def test_spec_rejects_malformed(C: torch.Tensor, d: torch.Tensor, clause: torch.Tensor, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Spec(C, d, clause)


def test_getitem_and_expand() -> None:
    spec = robustness(torch.tensor([0, 1, 2]), 3)
    assert spec[1].batch_size == 1
    assert torch.equal(spec[1].C, spec.C[1:2])
    assert spec[0:2].batch_size == 2
    assert spec[0].expand(3).batch_size == 3
    with pytest.raises(SpecError, match="cannot expand"):
        spec.expand(5)


def test_robustness_hand_computed() -> None:
    spec = robustness(torch.tensor([1, 0]), 3)
    assert spec.C[0].tolist() == [[-1.0, 1.0, 0.0], [0.0, 1.0, -1.0]]  # y1 - y0, y1 - y2
    assert spec.C[1].tolist() == [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]  # y0 - y1, y0 - y2
    assert spec.d.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert spec.clause.tolist() == [0, 1]
    y = torch.tensor([[1.0, 3.0, 2.5], [1.0, 3.0, 2.5]])
    assert spec.margin(y).tolist() == [0.5, -2.0]
    assert spec.proven(torch.tensor([[0.1, 0.2], [0.1, -0.2]])).tolist() == [True, False]
    with pytest.raises(SpecError, match="labels must lie in 0..2"):
        robustness(torch.tensor([3]), 3)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_classes=st.integers(2, 10), batch=st.integers(1, 4))
def test_robustness_holds_iff_label_is_strict_argmax(seed: int, n_classes: int, batch: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(n_classes, (batch,), generator=g)
    y = torch.randint(-3, 4, (batch, n_classes), generator=g).float()  # ties happen
    spec = robustness(labels, n_classes)
    for b in range(batch):
        others = [y[b, j] for j in range(n_classes) if j != labels[b]]
        assert bool(spec.holds(y)[b]) == bool(y[b, labels[b]] > max(others))


def test_from_unsafe_hand_computed() -> None:
    # unsafe: (y0 <= 1 and y1 <= 2) or (y0 + y1 <= 0)
    spec = from_unsafe(
        [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0]])],
        [torch.tensor([1.0, 2.0]), torch.tensor([0.0])],
    )
    assert spec.C.tolist() == [[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]
    assert spec.d.tolist() == [[-1.0, -2.0, 0.0]]
    assert spec.clause.tolist() == [0, 0, 1]
    y = torch.tensor([[0.0, 0.0], [5.0, 0.0], [1.0, 2.0], [1.5, -1.0], [0.5, 3.0]])
    assert spec.expand(5).holds(y).tolist() == [False, True, False, True, True]
    assert spec.expand(5).margin(y)[2] == 0.0  # on the boundary A y == b: unsafe


def test_from_unsafe_empty_disjunct_is_always_unsafe() -> None:
    spec = from_unsafe([torch.zeros(0, 2)], [torch.zeros(0)])
    assert spec.n_clauses == 1
    assert not spec.holds(torch.tensor([[1e9, -1e9]])).any()


def test_from_unsafe_rounds_thresholds_soundly() -> None:
    # unsafe y0 <= 0.1 (float64): a y0 slightly above float32(0.1) may not be proven safe.
    spec = from_unsafe([torch.tensor([[1.0]], dtype=torch.float64)], [torch.tensor([0.1], dtype=torch.float64)])
    assert spec.d.dtype == torch.float32
    assert spec.d.double() <= -0.1


def _brute_margin(C: torch.Tensor, d: torch.Tensor, clause: list[int], y: torch.Tensor) -> list[float]:
    out = []
    for b in range(C.shape[0]):
        values = [float(C[b, i] @ y[b] + d[b, i]) for i in range(C.shape[1])]
        per_clause = [max(v for v, k in zip(values, clause) if k == c) for c in range(max(clause) + 1)]
        out.append(min(per_clause))
    return out


@st.composite
def _random_spec(draw: st.DrawFn) -> tuple[Spec, torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    batch, n_out, n_clauses = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    clause = list(range(n_clauses)) + draw(st.lists(st.integers(0, n_clauses - 1), max_size=5))
    clause = [clause[i] for i in torch.randperm(len(clause), generator=g)]
    C = torch.randn(batch, len(clause), n_out, generator=g)
    d = torch.randn(batch, len(clause), generator=g)
    return Spec(C, d, torch.tensor(clause)), torch.randn(batch, n_out, generator=g), clause


@settings(max_examples=100, deadline=None)
@given(case=_random_spec())
def test_margin_matches_brute_force(case: tuple[Spec, torch.Tensor, list[int]]) -> None:
    spec, y, clause = case
    expected = _brute_margin(spec.C, spec.d, clause, y)
    torch.testing.assert_close(spec.margin(y), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    values = spec.C @ y[:, :, None]
    holds = [
        all(any(float(values[b, i, 0] + spec.d[b, i]) > 0 for i, k in enumerate(clause) if k == c) for c in set(clause))
        for b in range(y.shape[0])
    ]
    margin = spec.margin(y)
    for b in range(y.shape[0]):
        if abs(float(margin[b])) > 1e-5:  # exact ties are decided by float rounding
            assert bool(spec.holds(y)[b]) == holds[b]


@settings(max_examples=100, deadline=None)
@given(case=_random_spec(), slack_seed=st.integers(0, 2**31 - 1), scale=st.floats(0.0, 2.0))
def test_proven_is_sound(case: tuple[Spec, torch.Tensor, list[int]], slack_seed: int, scale: float) -> None:
    """If lower <= C y + d and proven(lower), then y satisfies the property."""
    spec, y, _ = case
    slack = torch.rand(spec.d.shape, generator=torch.Generator().manual_seed(slack_seed)) * scale
    lower = spec.values(y) - slack
    assert (spec.spec_margin(lower) <= spec.margin(y)).all()
    assert (~spec.proven(lower) | spec.holds(y)).all()
    if scale == 0.0:
        assert torch.equal(spec.proven(lower), spec.holds(y))
