"""Image verification: profit.verify.verify_images.

Verdicts are checked only for what our implementation guarantees: verified images
have a positive sound margin and no counterexample; every falsified image carries a
point inside the exact eps-ball that onnxruntime misclassifies; normalisation given
with --mean/--std gives the same answers as the same normalisation inside the ONNX.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import profit.bab
from networks import MODELS_DIR, load_onnx
from networks.export import Normalize, to_onnx
from profit.attacks import AttackOptions
from profit.errors import ProfitError
from profit.data import load_images
from profit.outcomes import Verdict
from profit.verify import ImageResult, VerifyOptions, summarize, summary_line, verify_images

MLP = MODELS_DIR / "mnist_mlp.onnx"
FAST = AttackOptions(steps=10, restarts=2)


@pytest.fixture(scope="module")
def net():
    return load_onnx(MLP)


@pytest.fixture(scope="module")
def samples():
    return load_images(count=12)


def _ort_predict(path: Path, x: np.ndarray) -> int:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return int(session.run(None, {name: x.astype(np.float32)[None]})[0].argmax())


def _check_counterexamples(results: list[ImageResult], images: torch.Tensor, eps: float, path: Path) -> None:
    for r, image in zip(results, images):
        if r.verdict is Verdict.FALSIFIED:
            cex = r.counterexample
            assert cex is not None and cex.shape == image.shape
            assert float((cex.double() - image.double()).abs().max()) <= eps
            assert float(cex.min()) >= 0 and float(cex.max()) <= 1
            assert _ort_predict(path, cex.numpy()) != r.label
        else:
            assert r.counterexample is None


def test_auto_on_shipped_samples(net, samples) -> None:
    eps = 0.03
    results = verify_images(net, samples.images, samples.labels, VerifyOptions(eps=eps, attack=FAST),
                            progress=False, indices=samples.indices)
    assert [r.idx for r in results] == list(samples.indices)
    assert {r.verdict for r in results} <= set(Verdict)
    assert any(r.verdict is Verdict.VERIFIED for r in results)
    misclassified = [r for r in results if r.verdict is Verdict.MISCLASSIFIED]
    assert all(r.predicted != r.label for r in misclassified)
    assert [r.idx for r in misclassified] == [8]  # the MLP gets sample 8 (a 5) wrong
    for r in results:
        assert r.seconds > 0
        if r.verdict is Verdict.VERIFIED:
            assert r.margin is not None and r.margin > 0 and r.decided_by in ("box", "crown", "alpha-crown")
        if r.verdict is Verdict.FALSIFIED:
            assert r.margin <= 0 and r.decided_by in ("quick-attack", "pgd")
    _check_counterexamples(results, samples.images, eps, MLP)
    summary = summarize(results)
    assert summary.total == 12 and sum(summary.as_dict()[v.value] for v in Verdict) == 12
    assert summary_line(summary).startswith(f"verified {summary.verified}/12")


def test_large_eps_is_falsified_and_never_verified(net, samples) -> None:
    results = verify_images(net, samples.images[:6], samples.labels[:6],
                            VerifyOptions(eps=0.3, domain="box", attack=FAST), progress=False)
    assert all(r.verdict in (Verdict.FALSIFIED, Verdict.MISCLASSIFIED) for r in results)
    _check_counterexamples(results, samples.images[:6], 0.3, MLP)


def test_eps_zero_is_verified(net, samples) -> None:
    results = verify_images(net, samples.images[:4], samples.labels[:4], VerifyOptions(eps=0.0, domain="box"),
                            progress=False)
    assert [r.verdict for r in results] == [Verdict.VERIFIED] * 4


def test_single_domain_never_beats_auto(net, samples) -> None:
    """auto runs box's stages and more, so it verifies at least what box verifies."""
    images, labels = samples.images[:6], samples.labels[:6]
    box = verify_images(net, images, labels, VerifyOptions(eps=0.01, domain="box", attack=FAST), progress=False)
    auto = verify_images(net, images, labels, VerifyOptions(eps=0.01, attack=FAST), progress=False)
    for b, a in zip(box, auto):
        if b.verdict is Verdict.VERIFIED:
            assert a.verdict is Verdict.VERIFIED


def test_timeout_stops_further_stages(net, samples) -> None:
    results = verify_images(net, samples.images[:5], samples.labels[:5],
                            VerifyOptions(eps=0.02, timeout=1e-9, attack=FAST), progress=False)
    assert {r.verdict for r in results} <= {Verdict.TIMEOUT, Verdict.FALSIFIED, Verdict.MISCLASSIFIED}
    assert any(r.verdict is Verdict.TIMEOUT for r in results)
    assert all(r.decided_by in ("quick-attack", "forward") for r in results)


def test_labels_default_to_the_prediction(net, samples) -> None:
    results = verify_images(net, samples.images[:9], None, VerifyOptions(eps=0.0, domain="box"), progress=False)
    assert all(r.label == r.predicted and r.verdict is Verdict.VERIFIED for r in results)


def test_normalisation_matches_a_normalising_network(tmp_path: Path) -> None:
    """--mean/--std on a plain network == the same network with Sub/Div inside the ONNX."""
    torch.manual_seed(0)
    body = [torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)]
    mean, std = (0.2, 0.5, 0.4), (0.3, 0.25, 0.5)
    plain, inside = tmp_path / "plain.onnx", tmp_path / "inside.onnx"
    to_onnx(torch.nn.Sequential(*body), (3, 4, 4), plain)
    to_onnx(torch.nn.Sequential(Normalize(mean, std), *body), (3, 4, 4), inside)
    images = torch.rand(8, 3, 4, 4)
    options = VerifyOptions(eps=0.02, attack=FAST)
    a = verify_images(load_onnx(plain), images, None, VerifyOptions(eps=0.02, attack=FAST, mean=mean, std=std),
                      progress=False)
    b = verify_images(load_onnx(inside), images, None, options, progress=False)
    assert [r.predicted for r in a] == [r.predicted for r in b]
    for ra, rb in zip(a, b):
        assert {ra.verdict, rb.verdict} != {Verdict.VERIFIED, Verdict.FALSIFIED}
        if ra.verdict is Verdict.FALSIFIED:
            cex = (ra.counterexample.double() - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
            assert _ort_predict(plain, cex.float().numpy()) != ra.label
            assert float((ra.counterexample - images[ra.idx]).abs().max()) <= 0.02 + 1e-6


@pytest.mark.parametrize("options, message", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=float("nan")), "eps"),
    (dict(timeout=0), "timeout"),
    (dict(domain="zonk"), "unknown domain"),
    (dict(mean=(0.1,)), "both mean and std"),
    (dict(mean=(0.1,), std=(0.0,)), "std"),
])
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ProfitError, match=message):
        VerifyOptions(**options)


def test_mismatched_inputs(net, samples) -> None:
    with pytest.raises(ProfitError, match="do not fit"):
        verify_images(net, torch.zeros(2, 3, 32, 32), [0, 1], progress=False)
    with pytest.raises(ProfitError, match="labels must be classes"):
        verify_images(net, samples.images[:2], [0, 12], progress=False)
    with pytest.raises(ProfitError, match="channel"):
        verify_images(net, samples.images[:2], None, VerifyOptions(mean=(0.1, 0.2), std=(1.0, 1.0)),
                      progress=False)


def test_complete_hook_decides_what_is_left(net, samples, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bab stage runs once per undecided image; its counterexamples are confirmed, never trusted."""
    calls = []

    def check(net_, region, spec, timeout=None, onnx_path=None, attack_region=None):
        calls.append((region.batch_size, timeout))
        if len(calls) % 2:
            return types.SimpleNamespace(verdict=Verdict.VERIFIED)
        return types.SimpleNamespace(verdict=Verdict.FALSIFIED, x=region.upper + 1.0)  # outside: rejected

    monkeypatch.setattr(profit.bab, "check", check)
    options = VerifyOptions(eps=0.05, domain="box", complete=True, timeout=60, attack=FAST)
    results = verify_images(net, samples.images[:6], samples.labels[:6], options, progress=False)
    assert len(calls) >= 2 and all(b == 1 and 0 < t <= 60 for b, t in calls)
    verdicts = [r.verdict for r in results if r.decided_by == "bab"]
    assert Verdict.VERIFIED in verdicts and Verdict.UNKNOWN in verdicts and Verdict.FALSIFIED not in verdicts
    assert all(r.margin is None for r in results if r.decided_by == "bab" and r.verdict is Verdict.VERIFIED)
