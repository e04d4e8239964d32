"""CEM beyond the core: the shipped autoencoder and the gamma term, AdaExpGrad, the superpixel
loss, the c schedule, projection invariants (hypothesis), gradient estimators on a smooth
float64 net, certified PPs against sampling and PGD, the savepoints strip, and the CLI flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from networks import MODELS_DIR, load_onnx
from networks.datasets import load_mnist_test, load_samples
from networks.ir import Linear, Tanh
from profit.attacks import AttackOptions, onnx_outputs, pgd
from profit.cem import (
    FISTA, AdaExpGrad, CEMLoss, CEMOptions, ExplanationGenerator, FiniteDifferenceGradient, ProjectedAdam,
    RandomDirectionGradient, SuperpixelCEMLoss, TorchGradient, cem, certify_pp, grid_segments,
)
from profit.cem.components import lambert_w_exp, reconstruction_error
from profit.cem.generator import next_c
from profit.errors import ProfitError
from specs.properties import robustness
from specs.regions import Box
from tests.domains.netgen import build

MLP = MODELS_DIR / "mnist_mlp.onnx"
AE = MODELS_DIR / "mnist_ae.onnx"


@pytest.fixture(scope="module")
def net():
    return load_onnx(MLP)


@pytest.fixture(scope="module")
def ae():
    return load_onnx(AE)


@pytest.fixture(scope="module")
def x(net):
    images, _ = load_samples()
    return torch.as_tensor(images[:4]).reshape(4, *net.input_shape).double()


# ------------------------------------------------------------------------- autoencoder
def test_autoencoder_reconstructs_held_out_images(ae) -> None:
    """Held-out MNIST test images 0-1,999 (never trained on; the shipped samples 0-99 without
    ../shared) are reconstructed well, noise is not: the AE error separates digits from non-digits."""
    try:
        images, _ = load_mnist_test()
        held_out = torch.from_numpy(images[:2000].astype(np.float32)[:, None] / 255.0)
    except FileNotFoundError:
        held_out = torch.from_numpy(load_samples()[0])
    assert ae.input_shape == (1, 28, 28) and ae.n_outputs == 784
    with torch.no_grad():
        error = reconstruction_error(ae, held_out.double()) / 784  # MSE per pixel
        noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        noise_error = reconstruction_error(ae, noise) / 784
    assert float(error.mean()) < 0.005, float(error.mean())  # card: 0.00376
    assert float(noise_error.min()) > 5 * float(error.mean())


def test_gamma_lowers_the_ae_error_of_pns(net, ae, x) -> None:
    options = dict(mode="PN", max_iter=100, c_steps=2)
    plain = cem(net, x[:3], CEMOptions(**options))
    with_ae = cem(net, x[:3], CEMOptions(gamma=1.0, **options), autoencoder=ae)
    assert bool(plain.found.all()) and bool(with_ae.found.all())
    with torch.no_grad():
        e0, e1 = reconstruction_error(ae, plain.explanation), reconstruction_error(ae, with_ae.explanation)
    assert float(e1.mean()) < float(e0.mean()), (e0, e1)
    classes = onnx_outputs(MLP, net, with_ae.explanation.float()).argmax(1)
    assert bool((classes != with_ae.target).all())


# -------------------------------------------------------------------------- AdaExpGrad
def test_lambert_w_solves_its_equation() -> None:
    L = torch.linspace(-60, 60, 241, dtype=torch.float64)
    w = lambert_w_exp(L)
    assert bool((w > 0).all()) and torch.allclose(w + torch.log(w), L, atol=1e-10)


@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_adaexpgrad_finds_feasible_pns(net, x, l2) -> None:
    """The generator's default optimizer finds PNs on the shipped MLP; every savepoint only adds."""
    generator = ExplanationGenerator(loss_kwargs={"mode": "PN", "c": 10.0}, optimizer_kwargs={"l2": l2},
                                     num_iter=150, save_freq=50)
    assert isinstance(generator.optimizer, AdaExpGrad)
    for b in range(3):
        savepoints, meta = generator.run(x[b].numpy(), net)
        assert meta["best"] is not None, b
        for point in [*savepoints.values(), meta["best"]]:
            assert (point >= x[b].numpy() - 1e-12).all() and (point <= 1).all()
        runtime = onnx_outputs(MLP, net, torch.from_numpy(meta["best"])[None].float()).argmax(1)
        assert int(runtime[0]) != meta["target"]


def test_adaexpgrad_thresholds_to_zero(net, x) -> None:
    """With an l1 weight above every gradient, the dual point never clears the threshold: d stays 0."""
    loss = CEMLoss(x[:1], net(x[:1].float()).argmax(1), "PN", c=1.0, beta=1e6)
    optimizer = AdaExpGrad()
    optimizer.start(torch.zeros_like(x[:1]))
    for k in range(5):
        d = optimizer.step(k, 5, loss, lambda p: TorchGradient()(loss, net, p))
    assert bool((d == 0).all())


def test_generator_checks_keyword_arguments() -> None:
    with pytest.raises(ProfitError, match="AdaExpGrad takes no argument 'lr'"):
        ExplanationGenerator(optimizer_kwargs={"lr": 0.1})
    with pytest.raises(ProfitError, match="SuperpixelCEMLoss needs 'segments'"):
        ExplanationGenerator(loss=SuperpixelCEMLoss)
    with pytest.raises(ProfitError, match="CEMLoss takes no argument 'kapa'"):
        ExplanationGenerator(loss_kwargs={"kapa": 1.0})


# -------------------------------------------------------------------------- superpixels
def _segment_weights(loss: SuperpixelCEMLoss, delta: torch.Tensor) -> list[torch.Tensor]:
    """Per image and segment, the fractions d / room of its pixels that can move."""
    ratio = (delta / torch.where(loss.room != 0, loss.room, torch.ones_like(loss.room))).reshape(len(delta), -1)
    moving = (loss.room != 0).reshape(len(delta), -1)
    return [[ratio[b, (loss.labels == s) & moving[b]] for s in range(loss.n_segments)] for b in range(len(delta))]


@pytest.mark.parametrize("mode", ["PN", "PP"])
def test_superpixel_explanations_are_feasible_and_constant_per_segment(net, x, mode) -> None:
    g = torch.Generator().manual_seed(1)
    user = torch.randint(0, 12, (28, 28), generator=g) * 7  # a user label map, arbitrary labels
    for segments in (grid_segments((28, 28), 4), user):
        result = cem(net, x[:2], CEMOptions(mode=mode, max_iter=80, c_steps=2), segments=segments)
        assert bool(result.found.all())
        e = result.explanation
        if mode == "PN":
            assert bool((e >= result.x0 - 1e-12).all() and (e <= 1).all())
        else:
            assert bool((e >= 0).all() and (e <= result.x0 + 1e-12).all())
        loss = SuperpixelCEMLoss(result.x0, result.target, segments, mode)
        for per_image in _segment_weights(loss, result.delta):
            for values in per_image:
                if len(values):  # one weight in [0, 1] per segment
                    assert float(values.max() - values.min()) < 1e-9
                    assert -1e-12 <= float(values.min()) and float(values.max()) <= 1 + 1e-12
        classes = onnx_outputs(MLP, net, e.float()).argmax(1)
        assert bool(((classes != result.target) if mode == "PN" else (classes == result.target)).all())
    assert grid_segments((28, 28), 4).unique().numel() == 49 and grid_segments((5, 7), 3).max() == 5


def test_superpixel_labels_are_checked(x) -> None:
    with pytest.raises(ProfitError, match="label map"):
        SuperpixelCEMLoss(x[:1], torch.zeros(1, dtype=torch.long), torch.zeros(5, 5, dtype=torch.long))


# ----------------------------------------------------------------------- the c schedule
def _schedule(c_init: float, steps: int, threshold: float) -> list[float]:
    """The c values of a binary search whose loss succeeds exactly when c >= threshold."""
    c, lower, upper = torch.tensor([c_init], dtype=torch.float64), torch.zeros(1), torch.full((1,), 1e10)
    seen = []
    for _ in range(steps):
        seen.append(float(c[0]))
        c, lower, upper = next_c(c, lower.double(), upper.double(), c >= threshold)
    return seen


def test_c_schedule_on_a_scripted_loss() -> None:
    assert _schedule(10.0, 5, 3.0) == [10.0, 5.0, 2.5, 3.75, 3.125]
    assert _schedule(10.0, 5, 200.0) == [10.0, 100.0, 1000.0, 550.0, 325.0]
    assert _schedule(10.0, 4, 1e12) == [10.0, 100.0, 1000.0, 10000.0]


def test_cem_follows_the_schedule(net, x) -> None:
    result = cem(net, x[:3], CEMOptions(mode="PN", max_iter=30, c_steps=4, c_init=0.5))
    c, lower, upper = result.c_trace[0], torch.zeros(3, dtype=torch.float64), torch.full((3,), 1e10).double()
    assert bool((c == 0.5).all())
    for k in range(1, 4):
        c, lower, upper = next_c(c, lower, upper, result.success_trace[k - 1])
        assert torch.equal(c, result.c_trace[k])
    assert bool(result.success_trace.any(0).eq(result.found).all())


# ------------------------------------------------------------------ projection invariants
@st.composite
def _boxes(draw):
    n = draw(st.integers(1, 12))
    values = st.floats(0.0, 1.0, allow_nan=False)
    x0 = torch.tensor(draw(st.lists(values, min_size=n, max_size=n)), dtype=torch.float64)[None]
    z = torch.tensor(draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)), dtype=torch.float64)[None]
    return x0, z, draw(st.sampled_from(["PN", "PP"])), draw(st.sampled_from([0.0, 0.3]))


@settings(max_examples=60, deadline=None)
@given(_boxes())
def test_projection_invariants(case) -> None:
    x0, z, mode, v = case
    loss = CEMLoss(x0, torch.zeros(1, dtype=torch.long), mode, no_info=v)
    lo, hi = loss.box()
    assert bool((lo <= 0).all() and (hi >= 0).all())
    p = torch.clamp(z, lo, hi)
    assert bool((p >= lo).all() and (p <= hi).all()) and torch.equal(torch.clamp(p, lo, hi), p)
    shrunk = FISTA(lr=0.5).prox(z, loss, 0.5)
    for d in (p, shrunk):
        e = loss.inputs(d)
        assert bool((e >= 0).all() and (e <= 1).all())
        if mode == "PN":  # only adds: moves away from the no-info value
            assert bool(((e - v).abs() >= (x0 - v).abs() - 1e-12).all() and ((e - v) * (x0 - v) >= 0).all())
        else:  # only removes: between the no-info value and x0
            assert bool((e >= torch.minimum(x0, torch.full_like(x0, v)) - 1e-12).all())
            assert bool((e <= torch.maximum(x0, torch.full_like(x0, v)) + 1e-12).all())
    g = torch.Generator().manual_seed(int(z.abs().sum() * 1000) % 1000)
    for optimizer in (FISTA(lr=0.5), ProjectedAdam(lr=0.5), AdaExpGrad(), AdaExpGrad(l2=1.0, average=True)):
        optimizer.start(torch.zeros_like(x0))
        for k in range(3):
            d = optimizer.step(k, 3, loss, lambda _: torch.randn(x0.shape, generator=g, dtype=torch.float64) * 5)
            assert bool((d >= lo - 1e-12).all() and (d <= hi + 1e-12).all()), type(optimizer).__name__


# --------------------------------------------------------------------------- gradients
def test_gradient_estimators_on_a_smooth_net() -> None:
    """A tanh net in float64 with 5 inputs: central differences match autograd to 1e-4, both
    random-direction estimators point the same way (cosine > 0.9) for every seed."""
    g = torch.Generator().manual_seed(0)
    smooth = build((5,), [("h", Linear(torch.randn(8, 5, generator=g), torch.randn(8, generator=g)), ("x",)),
                          ("t", Tanh(), ("h",)),
                          ("y", Linear(torch.randn(3, 8, generator=g), torch.randn(3, generator=g)), ("t",))])
    smooth = smooth.to(torch.float64)
    x0 = torch.rand(2, 5, generator=g, dtype=torch.float64) * 0.5
    loss = CEMLoss(x0, smooth(x0).argmax(1), "PN", c=1.0, kappa=1e3)  # kappa never clamps: smooth
    d = torch.rand(2, 5, generator=g, dtype=torch.float64) * 0.1
    exact = TorchGradient()(loss, smooth, d)
    fd = FiniteDifferenceGradient(h=1e-5)(loss, smooth, d)
    assert float((fd - exact).abs().max()) < 1e-4
    for directions in ("sphere", "gaussian"):
        for seed in range(3):
            estimate = RandomDirectionGradient(q=300, mu=1e-6, seed=seed, directions=directions)(loss, smooth, d)
            cos = (estimate * exact).sum(1) / (estimate.norm(dim=1) * exact.norm(dim=1))
            assert bool((cos > 0.9).all()), (directions, seed, cos)


# ------------------------------------------------------------------------ certified PPs
def test_certified_pps_survive_sampling_and_pgd() -> None:
    """CEM's own PPs on the shipped 5-vs-6 net (binarised digits, kappa 10): the certified
    ones keep their class on 10^4 samples of their box and against PGD on it (onnxruntime
    re-check); the same checks do find a flip on the empty PP's box [0, x0] of some image,
    so they would catch an unsound certificate."""
    path = MODELS_DIR / "mnist_5v6.onnx"
    net5 = load_onnx(path)
    images, _ = load_samples()
    x = (torch.as_tensor(images[[23, 52, 81, 88, 91]]).double() > 0.5).double()
    result = cem(net5, x, CEMOptions(mode="PP", kappa=10.0, c_init=100.0, max_iter=100, c_steps=3))
    certified = [(b, c) for b, c in enumerate(certify_pp(net5, result)) if c.status == "certified"]
    assert len(certified) >= 3, [c.status for c in certify_pp(net5, result)]
    net64, g = net5.to(torch.float64), torch.Generator().manual_seed(0)

    def flips(b: int, lo: torch.Tensor, hi: torch.Tensor) -> bool:
        t = result.target[b:b + 1]
        u = torch.rand(10_000, *lo.shape, generator=g, dtype=torch.float64)
        sampled = bool((net64(lo + u * (hi - lo)).reshape(10_000, -1).argmax(1) != t).any())
        point, found = pgd(net5, Box(lo[None].float(), hi[None].float()), robustness(t, 2),
                           AttackOptions(steps=100, restarts=5))
        attacked = bool(found[0]) or int(onnx_outputs(path, net5, point).argmax(1)[0]) != int(t[0])
        return sampled or attacked

    for b, c in certified:
        assert not flips(b, torch.minimum(c.pp, x[b]), torch.maximum(c.pp, x[b])), b
    assert any(flips(b, torch.zeros_like(x[b]), x[b]) for b in range(len(x)))


# ---------------------------------------------------------------------------- pictures
def test_savepoints_strip() -> None:
    from profit.viz import plot_savepoints

    frames = {1: np.zeros((1, 4, 4)), 10: np.full((1, 4, 4), 0.5), 20: np.ones((1, 4, 4))}
    classes, scores = {1: 7, 10: 7, 20: 2}, {1: 3.0, 10: 0.5, 20: -1.25}
    fig, axes = plot_savepoints(frames, classes, scores, np.zeros((1, 4, 4)), "PN")
    assert [ax.get_title() for ax in axes] == ["it 1: class 7\nscore 3.00", "it 10: class 7\nscore 0.50",
                                               "it 20: class 2\nscore -1.25"]
    assert len(fig.axes) == 4  # three frames and the colour bar of the signed change
    fig, axes = plot_savepoints(frames, classes, scores, mode="PP")
    assert len(fig.axes) == 3


# ------------------------------------------------------------------------------- CLI
def test_cli_gamma_autoencoder_optimizer_segments(tmp_path, capsys) -> None:
    from profit.cli import main

    out = tmp_path / "cem.json"
    assert main(["cem", "-d", "0", "--mode", "pn", "--iterations", "40", "--c-steps", "2", "--gamma", "1",
                 "--ae", "mnist_ae", "--optimizer", "adaexpgrad", "--save-dir", str(tmp_path), "--json",
                 str(out)]) == 0
    row = json.loads(out.read_text())["images"][0]
    assert row["found"] and row["ae_error"] > 0
    assert "AE error" in capsys.readouterr().out
    assert (tmp_path / "cem-pn-0.png").is_file() and (tmp_path / "cem-pn-0-savepoints.png").is_file()
    assert main(["cem", "-d", "0", "--mode", "pp", "--iterations", "30", "--c-steps", "1", "--segments", "grid:7",
                 "--ae", str(AE), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images"][0]["ae_error"] is not None
    capsys.readouterr()
    for argv, message in ((["--gamma", "1"], "needs an autoencoder"), (["--gamma", "1", "--ae", "mnist_5v6"],
                          "the autoencoder maps"), (["--segments", "grid:x"], "grid:K")):
        assert main(["cem", "-d", "0", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
