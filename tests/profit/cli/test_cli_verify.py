"""`profit verify` and `profit vnnlib`: image sources, output formats, saved files, exit codes.

In-process via `main([...])` (fast), plus one real process per command. Every user
error must print one line `profit: error: ...` on stderr, nothing on stdout, exit 2.
Runs use few images and few attack steps to stay quick on 2 cores.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from networks.datasets import load_samples
from profit.cli import main

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared"
MNIST_DIR = SHARED / "data" / "mnist"
MNIST_CSV = MNIST_DIR / "mnist_test_first100.csv"
CIFAR_CSV = SHARED / "data" / "cifar10" / "cifar10_test_first100.csv"
CIFAR_NET = SHARED / "networks" / "profit" / "convSmall_pgd_cifar.onnx"
VNN_TEST = SHARED / "benchmarks" / "vnncomp2021" / "test"
FAST = ("--steps", "5", "--restarts", "1", "--no-progress")
COLUMNS = ["idx", "label", "predicted", "verdict", "margin", "decided_by", "seconds"]
VERDICTS = {"verified", "falsified", "unknown", "timeout", "misclassified"}


def _require(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            pytest.skip(f"{path} not found (shared data absent)")


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(result: tuple[int, str, str], *fragments: str) -> str:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("profit: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _rows(out: str) -> list[list[str]]:
    """The per-image lines of `profit verify` (between the header and the summary)."""
    lines = out.splitlines()
    assert lines[0].startswith("network ") and lines[1].split()[:3] == ["idx", "label", "pred"]
    assert lines[-1].startswith("verified ") and "total" in lines[-1]
    return [line.split() for line in lines[2:-1]]


def _verify(capsys: pytest.CaptureFixture[str], *argv: object) -> list[list[str]]:
    code, out, err = _cli(capsys, "verify", *FAST, *argv)
    assert code == 0 and err == "", err
    rows = _rows(out)
    assert all(r[3] in VERDICTS for r in rows)
    return rows


# ------------------------------------------------------------------ image sources
def test_default_samples(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _verify(capsys, "--count", "10")
    assert [r[0] for r in rows] == [str(i) for i in range(10)]
    labels = load_samples()[1][:10]
    assert [int(r[1]) for r in rows] == labels.tolist()
    assert rows[8][3] == "misclassified"  # the shipped MLP gets sample 8 wrong
    assert sum(r[3] == "verified" for r in rows) >= 5


def test_offset_and_domain(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _verify(capsys, "--count", "3", "--offset", "20", "--domain", "crown", "--eps", "0.01")
    assert [r[0] for r in rows] == ["20", "21", "22"]
    assert all(r[5] in ("quick-attack", "pgd", "crown") for r in rows)


def test_idx_source(capsys: pytest.CaptureFixture[str]) -> None:
    _require(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    by_file = _verify(capsys, "--images", MNIST_DIR / "t10k-images-idx3-ubyte.gz", "--count", "3", "--offset", "100")
    assert [r[0] for r in by_file] == ["100", "101", "102"]
    by_dir = _verify(capsys, "--images", MNIST_DIR, "--count", "3", "--offset", "100")
    assert [r[:4] for r in by_dir] == [r[:4] for r in by_file]


def test_eran_csv_sources(capsys: pytest.CaptureFixture[str]) -> None:
    _require(MNIST_CSV)
    from_csv = _verify(capsys, "--images", MNIST_CSV, "--count", "4")
    from_samples = _verify(capsys, "--count", "4")
    assert [r[:4] for r in from_csv] == [r[:4] for r in from_samples]


def test_cifar_csv_with_normalising_network(capsys: pytest.CaptureFixture[str]) -> None:
    _require(CIFAR_CSV, CIFAR_NET)
    rows = _verify(capsys, "--net", CIFAR_NET, "--images", CIFAR_CSV, "--count", "2", "--domain", "box",
                   "--eps", "0.001")
    assert len(rows) == 2


def test_png_folder_and_arrays(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    images, labels = load_samples()
    pixels = np.round(images[:3, 0] * 255).astype(np.uint8)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(pixels[i]).save(folder / f"{i}_label{labels[i]}.png")
    np.savez(tmp_path / "s.npz", images=pixels, labels=labels[:3])
    np.save(tmp_path / "s.npy", images[:3])
    reference = [r[:4] for r in _verify(capsys, "--count", "3")]
    for source in (folder, tmp_path / "s.npz"):
        assert [r[:4] for r in _verify(capsys, "--images", source)] == reference
    unlabelled = _verify(capsys, "--images", tmp_path / "s.npy")
    assert all(r[1] == r[2] for r in unlabelled)  # label = prediction


# ------------------------------------------------------------------ output files
def test_out_json_and_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = _verify(capsys, "--count", "4", "--out", tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc) == {"network", "eps", "domain", "images", "summary"}
    assert doc["eps"] == 0.02 and doc["domain"] == "auto" and doc["network"].endswith("mnist_mlp.onnx")
    assert [list(r) for r in doc["images"]] == [COLUMNS] * 4
    assert [r["verdict"] for r in doc["images"]] == [r[3] for r in rows]
    assert doc["summary"]["total"] == 4
    _verify(capsys, "--count", "4", "--out", tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        records = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [r["verdict"] for r in records] == [r[3] for r in rows]
    assert [int(r["idx"]) for r in records] == [0, 1, 2, 3]


def test_save_dir_writes_counterexamples_and_grid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    rows = _verify(capsys, "--count", "6", "--eps", "0.2", "--domain", "box", "--save-dir", out)
    falsified = [int(r[0]) for r in rows if r[3] == "falsified"]
    assert falsified
    images = load_samples()[0]
    for idx in falsified:
        cex = np.load(out / f"cex_{idx}.npy")
        assert cex.shape == (1, 28, 28)
        assert np.abs(cex - images[idx]).max() <= 0.2 + 1e-6
        with Image.open(out / f"cex_{idx}.png") as png:
            assert png.size == (28, 28)
            assert np.abs(np.asarray(png, dtype=np.float64) / 255 - cex[0]).max() <= 0.5 / 255 + 1e-6
    with Image.open(out / "grid.png") as grid:
        grid.load()
        assert grid.size[0] > 100 and grid.size[1] > 50
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".npy") == sorted(f"cex_{i}.npy" for i in falsified)


# ------------------------------------------------------------------ user errors
def test_verify_user_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _assert_user_error(_cli(capsys, "verify", "--eps", "-0.1"), "eps")
    _assert_user_error(_cli(capsys, "verify", "--timeout", "0"), "timeout")
    _assert_user_error(_cli(capsys, "verify", "--domain", "zonk"), "zonk")
    _assert_user_error(_cli(capsys, "verify", "--net", tmp_path / "none.onnx"), "none.onnx")
    _assert_user_error(_cli(capsys, "verify", "--out", tmp_path / "r.txt"), "--out")
    _assert_user_error(_cli(capsys, "verify", "--images", tmp_path / "missing"), "missing")
    _assert_user_error(_cli(capsys, "verify", "--mean", "0.1"), "mean and std")
    _assert_user_error(_cli(capsys, "verify", "--count", "0"), "--count")
    (tmp_path / "garbage.onnx").write_bytes(b"not an onnx file")
    _assert_user_error(_cli(capsys, "verify", "--net", tmp_path / "garbage.onnx"))
    np.savez(tmp_path / "wide.npz", images=np.zeros((2, 3, 32, 32), np.float32), labels=[0, 1])
    _assert_user_error(_cli(capsys, "verify", *FAST, "--images", tmp_path / "wide.npz"), "do not fit")


def test_verify_wrong_image_size_for_shared_cifar(capsys: pytest.CaptureFixture[str]) -> None:
    _require(CIFAR_CSV)
    _assert_user_error(_cli(capsys, "verify", *FAST, "--images", CIFAR_CSV, "--count", "1"), "do not fit")


# ------------------------------------------------------------------ vnnlib
def test_vnnlib_sat_writes_the_result_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _require(VNN_TEST)
    result = tmp_path / "out.txt"
    code, out, err = _cli(capsys, "vnnlib", VNN_TEST / "test_sat.onnx", VNN_TEST / "test_prop.vnnlib",
                          "--timeout", "30", "--out", result)
    assert code == 0 and err == ""
    assert out.splitlines()[0] == "result: sat" and out.splitlines()[1].startswith("time: ")
    text = result.read_text()
    assert text.startswith("sat\n((X_0 ") and "(Y_4 " in text
    code, out, _ = _cli(capsys, "vnnlib", VNN_TEST / "test_unsat.onnx", VNN_TEST / "test_prop.vnnlib",
                        "--out", result)
    assert code == 0 and out.splitlines()[0] == "result: unsat" and result.read_text() == "unsat\n"


def test_vnnlib_user_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _require(VNN_TEST)
    nano = VNN_TEST / "test_nano.onnx"
    wide = tmp_path / "wide.vnnlib"
    wide.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n")
    _assert_user_error(_cli(capsys, "vnnlib", nano, wide), "wide.vnnlib:2", "X_1")
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n")
    _assert_user_error(_cli(capsys, "vnnlib", nano, bad), "bad.vnnlib:3")
    _assert_user_error(_cli(capsys, "vnnlib", nano, tmp_path / "none.vnnlib"), "none.vnnlib")
    _assert_user_error(_cli(capsys, "vnnlib", tmp_path / "none.onnx", VNN_TEST / "test_nano.vnnlib"), "none.onnx")
    _assert_user_error(_cli(capsys, "vnnlib", nano, VNN_TEST / "test_nano.vnnlib", "--timeout", "-1"), "timeout")


# ------------------------------------------------------------------ real processes
def test_real_processes(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "profit", "verify", *FAST, "--count", "2", "--threads", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 2 + 2 + 1
    run = subprocess.run([sys.executable, "-m", "profit", "verify", "--eps", "-1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("profit: error: ") and len(run.stderr.splitlines()) == 1
