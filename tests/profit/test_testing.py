"""profit.testing from a user's own test file: pytest runs it in a subprocess; a spec that is
not proven fails the run (naming the image and margin, saving the counterexample), a proven
one passes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from networks import MODELS_DIR
from networks.datasets import shared_dir
from profit.testing import NotProvenError, assert_property, assert_robust

REPO = Path(__file__).resolve().parents[2]
MLP = MODELS_DIR / "mnist_mlp.onnx"
USER_TESTS = f'''
import numpy as np
import unittest
from networks.datasets import load_samples
from profit.testing import ProfitTestCase, assert_robust

images, labels = load_samples()
MODEL = {str(MLP)!r}


def test_small_ball_is_robust():
    assert_robust(MODEL, images[0], eps=0.005, label=int(labels[0]), name="sample0")


def test_large_ball_is_not():
    assert_robust(MODEL, images[0], eps=0.3, name="sample0")


class Spec(ProfitTestCase):
    def test_batch(self):
        self.assertRobust(MODEL, images[:3], eps=0.005, name="first3")
'''


def _pytest(tmp_path: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user_specs.py").write_text(USER_TESTS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROFIT_TESTING_DIR": str(tmp_path / "cex"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           *[f"test_user_specs.py::{s}" for s in selection]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_passing_specs_pass_the_run(tmp_path: Path) -> None:
    run = _pytest(tmp_path, "test_small_ball_is_robust", "Spec::test_batch")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout


def test_failing_spec_fails_the_run(tmp_path: Path) -> None:
    run = _pytest(tmp_path, "test_small_ball_is_robust", "test_large_ball_is_not")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert "NotProvenError: not robust at eps 0.3: sample0: falsified" in run.stdout and "margin -" in run.stdout
    saved = list((tmp_path / "cex").glob("sample0-eps0.3-counterexample.npy"))
    assert len(saved) == 1
    x = np.load(saved[0])
    assert x.shape == (1, 28, 28) and x.min() >= 0 and x.max() <= 1


def test_unknown_is_not_a_pass(tmp_path: Path) -> None:
    """A domain that cannot decide (box at a radius where crown would) fails, it never passes."""
    from networks.datasets import load_samples
    images, labels = load_samples()
    with pytest.raises(NotProvenError, match=r"img: unknown \(label 7, predicted 7, margin -"):
        assert_robust(MLP, images[0], eps=0.02, label=int(labels[0]), domain="box", name="img", save_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_assert_property(tmp_path: Path) -> None:
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared is absent")
    test = shared / "benchmarks" / "vnncomp2021" / "test"
    assert_property(test / "test_unsat.onnx", test / "test_prop.vnnlib", timeout=30)
    with pytest.raises(NotProvenError, match="not proven: sat .*counterexample saved to"):
        assert_property(test / "test_sat.onnx", test / "test_prop.vnnlib", timeout=30, save_dir=tmp_path)
    assert (tmp_path / "test_prop.vnnlib.counterexample.txt").read_text().startswith("sat")


def test_assert_explanation_stable() -> None:
    """Tiny eps: the MLP's saliency map is certified constant on sample 0 and its top-5 pixels
    certified; a large eps leaves ReLUs unstable and fails with a message naming the image."""
    from networks.datasets import load_samples
    from profit.testing import NotProvenError, assert_explanation_stable

    images, _ = load_samples()
    assert_explanation_stable("mnist_mlp", images[:1], eps=1e-5)
    assert_explanation_stable("mnist_mlp", images[:1], eps=1e-5, k=5)
    with pytest.raises(NotProvenError, match=r"image\[0\]: \d+ ReLUs unstable"):
        assert_explanation_stable("mnist_mlp", images[:2], eps=0.05)
