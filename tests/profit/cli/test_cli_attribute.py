"""`profit attribute`: every method prints its map summary, --certify its certificates, --save-dir
PNGs; bad input is one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from networks import load_onnx, shipped
from networks.datasets import load_samples
from profit.attribution import IntegratedGradients, gradient_bounds
from profit.cli import main


@pytest.mark.parametrize("method", ["saliency", "ixg", "ig", "smoothgrad", "guided", "lrp", "proof"])
def test_every_method_prints_its_map(method: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["attribute", "mnist_conv", "-d", "2", "--method", method, "--steps", "8", "--samples", "4"]) == 0
    out = capsys.readouterr().out
    assert f"method {method}" in out and "map: sum" in out and "top-10 pixels" in out


def test_printed_sum_is_the_api_map(capsys: pytest.CaptureFixture) -> None:
    assert main(["attribute", "-d", "4", "--method", "ig", "--steps", "16"]) == 0
    net, x = load_onnx(shipped("mnist_mlp")), torch.from_numpy(load_samples()[0][4:5])
    expected = IntegratedGradients(net).attribute(x, n_steps=16).sum()
    assert f"map: sum {float(expected):.6g}," in capsys.readouterr().out


def test_certify_and_save_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["attribute", "-d", "0", "--method", "saliency", "--certify", "0.001", "--topk", "5",
            "--save-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    net, x = load_onnx(shipped("mnist_mlp")), torch.from_numpy(load_samples()[0][:1])
    bounds = gradient_bounds(net, x, 0.001)
    assert f"{int(bounds.unstable)} unstable ReLUs" in out
    assert f"certified top-5 pixels: {int(bounds.certified_topk(5).sum())}" in out
    pngs = sorted(p.name for p in tmp_path.iterdir())
    assert pngs == ["img0_certified_eps0.001.png", "img0_saliency.png"]
    assert Image.open(tmp_path / pngs[0]).size[0] > Image.open(tmp_path / pngs[1]).size[0] > 100


def test_beta_sweep_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["attribute", "-d", "0", "--beta-sweep", "1,10", "--save-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img0_saliency.png", "img0_saliency_beta_sweep.png"]
    assert "img0_saliency_beta_sweep.png" in capsys.readouterr().out


def test_certify_a_beta_smoothed_net(capsys: pytest.CaptureFixture) -> None:
    assert main(["attribute", "-d", "0", "--beta", "10", "--certify", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "beta-smoothed (beta 10.0)" in out and "(box)" in out and "unstable softplus derivatives" in out


@pytest.mark.parametrize("argv, message", [
    (["-d", "100"], "instance 100 is out of range"),
    (["--target", "10"], "--target must lie in 0..9"),
    (["--method", "lrp", "--beta", "2"], "--beta smooths ReLUs"),
    (["--certify", "-1"], "--certify must be >= 0"),
    (["--method", "gradcam"], "invalid choice"),
    (["--method", "ig", "--steps", "1"], "n_steps must be >= 2"),
    (["--beta-sweep", "1,2"], "--beta-sweep draws a figure"),
    (["--beta-sweep", "1,x", "--save-dir", "out"], "comma-separated numbers"),
])
def test_bad_input_is_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["attribute", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and captured.out == ""


def test_manipulate_prints_the_metrics_and_saves_the_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["manipulate", "mnist_conv", "-d", "0", "--target-d", "5", "--steps", "40", "--lr", "3e-3", "--gamma",
            "1e-3", "--save-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    before, after = (float(v) for v in out.split("PCC(map, target): ")[1].split(" after")[0].split(" before, "))
    assert after > before and "class kept" in out
    assert [p.name for p in tmp_path.iterdir()] == ["manipulate_0_to_5_saliency.png"]


@pytest.mark.parametrize("argv, message", [
    (["--target-d", "100"], "--target-d 100 is out of range"),
    (["--method", "lrp"], "invalid choice"),
    (["--steps", "0"], "steps >= 1"),
])
def test_manipulate_bad_input_is_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["manipulate", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and captured.out == ""
