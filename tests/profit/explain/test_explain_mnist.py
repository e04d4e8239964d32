"""Explanations on the shipped 5-vs-6 network: the paper's two patches, PNGs and the CLI.

Instances: shipped sample 23 (a "5", class 0) with the 20-pixel patch rows 15-18 x cols
8-12, and sample 11 (a "6", class 1) with the 7-pixel patch 431,432,458,459,486,487,488
of Ignatiev et al. (NeurIPS 2019). The network never changes its answer on sample 11
whatever the 7 pixels are (checked here), so that enumeration is short; sample 23's is not.
Checks use the full truth table of the 20-pixel patch (2^20 completions, float64).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from networks import load_onnx, shipped
from networks.datasets import load_samples
from profit.attacks import onnx_outputs
from profit.cli import main
from profit.explain import CERTIFIED, Explainer, ExplainOptions, PixelDomain
from profit.viz.explain import DIM, SCALE, expl_frequencies, render_heatmap, save_explanation_pngs, value_colour
from specs.suites.explanations import minimal_hitting_sets

PATCH_20 = [r * 28 + c for r in range(15, 19) for c in range(8, 13)]
PATCH_7 = [431, 432, 458, 459, 486, 487, 488]
FIVE, SIX = 23, 11
BINARY = PixelDomain.parse("binary")


@pytest.fixture(scope="module")
def net():
    return load_onnx(shipped("mnist_5v6"))


def _instance(index: int) -> np.ndarray:
    images, _ = load_samples()
    return BINARY.quantize(images[index].reshape(-1).astype(np.float64))


def _table(ex: Explainer) -> tuple[np.ndarray, np.ndarray]:
    """Every completion of a binary patch as a code (bit i = the value of patch position i),
    and whether it satisfies the explained target (float64)."""
    p = ex.problem
    codes = np.arange(1 << p.n, dtype=np.int64)
    sat = np.concatenate([p.evaluate(((c[:, None] >> np.arange(p.n)) & 1).astype(np.float64))
                          for c in np.split(codes, max(1, len(codes) >> 16))])
    return codes, sat != ex.negate


def _masks(codes: np.ndarray, literals, patch: list[int]) -> np.ndarray:
    """Which completions agree with the (pixel, 0/1) literals."""
    pos = {q: i for i, q in enumerate(patch)}
    mask = sum(1 << pos[p] for p, _ in literals)
    want = sum(int(v) << pos[p] for p, v in literals)
    return (codes & mask) == want


def _bits(pixels, patch: list[int]) -> int:
    pos = {q: i for i, q in enumerate(patch)}
    return sum(1 << pos[p] for p in pixels)


def test_seven_pixel_patch_on_a_six(net) -> None:
    for mode in ("local", "absolute"):
        ex = Explainer(net, _instance(SIX), PATCH_7, BINARY, mode=mode)
        assert ex.predicted == 1
        points, sat = _table(ex)
        assert sat.all()  # no assignment of the 7 pixels changes the answer
        start = time.monotonic()
        run = ex.enumerate("both").run()
        print(f"5v6 sample {SIX} 7-pixel {mode}: {len(run.explanations)} explanations, "
              f"{len(run.counterexamples)} counterexamples, {time.monotonic() - start:.2f} s")
        assert run.status == "complete"
        assert [e.literals for e in run.explanations] == [()] and run.counterexamples == []
    opposite = Explainer(net, _instance(SIX), PATCH_7, BINARY, mode="absolute",
                         options=ExplainOptions(target="opposite"))
    run = opposite.enumerate("both").run()
    assert run.status == "complete"
    assert run.explanations == [] and [c.literals for c in run.counterexamples] == [()]


@pytest.mark.parametrize("mode", ["local", "absolute"])
def test_twenty_pixel_patch_on_a_five(net, mode: str) -> None:
    ex = Explainer(net, _instance(FIVE), PATCH_20, BINARY, mode=mode)
    assert ex.predicted == 0
    start = time.monotonic()
    run = ex.enumerate("both").run()
    seconds = time.monotonic() - start
    stats = run.stats()
    print(f"5v6 sample {FIVE} 20-pixel {mode}: {stats['explanations']} explanations, "
          f"{stats['counterexamples']} counterexamples, {seconds:.2f} s, calls {stats['oracle_calls']}")
    assert run.status == "complete"
    assert len(run.explanations) > 10 and len(run.counterexamples) > 10
    assert all(e.minimality == CERTIFIED for e in run.items)
    points, sat = _table(ex)
    for e in run.explanations:  # sufficient, and each one-literal weakening admits a violation
        assert sat[_masks(points, e.literals, PATCH_20)].all()
        for k in range(e.size):
            assert not sat[_masks(points, e.literals[:k] + e.literals[k + 1:], PATCH_20)].all()
    problem = ex.problem
    for c in run.counterexamples:  # witnesses re-checked in float64 and onnxruntime
        y64 = problem.logits(c.witness[problem.patch_index][None])
        yrt = onnx_outputs(problem.onnx, net, torch.from_numpy(c.witness).float().reshape(1, 1, 28, 28))
        assert not problem.keeps(y64)[0] and not problem.keeps(yrt.numpy())[0]
    if mode == "local":
        axps = {_bits(e.pixels, PATCH_20) for e in run.explanations}
        cxps = {_bits(c.pixels, PATCH_20) for c in run.counterexamples}
        assert minimal_hitting_sets(cxps, 20) == axps
        assert minimal_hitting_sets(axps, 20) == cxps
        for c in run.counterexamples:  # freeing a CXp admits a violation, freeing less does not
            fixed = [(p, v) for p, v in zip(PATCH_20, problem.center) if p not in c.pixels]
            assert not sat[_masks(points, fixed, PATCH_20)].all()
    else:
        for c in run.counterexamples:
            assert not sat[_masks(points, c.literals, PATCH_20)].any()
            for e in run.explanations:
                assert any(dict(c.literals).get(p, v) != v for p, v in e.literals)  # e breaks c


def _decode(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 at the centre of each SCALE x SCALE block."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return rgb[SCALE // 2::SCALE, SCALE // 2::SCALE]


@pytest.mark.parametrize("mode", ["local", "absolute"])
def test_pngs(net, tmp_path: Path, mode: str) -> None:
    x = _instance(FIVE)
    ex = Explainer(net, x, PATCH_20, BINARY, mode=mode)
    run = ex.enumerate("both", limit=40).run()
    expls = run.explanations
    saved = save_explanation_pngs(ex, tmp_path, run, one=2, sample=FIVE)
    names = {f"sample{FIVE}-orig.png", f"sample{FIVE}-patch.png", f"sample{FIVE}-0-all-expls.png",
             f"sample{FIVE}-0-freq.png", f"sample{FIVE}-0-one-expl.png", f"sample{FIVE}-true-ae.png"}
    assert set(saved.paths) == names and all((tmp_path / n).is_file() for n in names)
    image = x.reshape(28, 28)
    gray = np.rint(image * 255).astype(np.uint8)
    orig = _decode(tmp_path / f"sample{FIVE}-orig.png")
    assert orig.shape == (28, 28, 3) and (orig == gray[:, :, None]).all()
    patch = _decode(tmp_path / f"sample{FIVE}-patch.png").reshape(-1, 3)
    for p in range(784):
        want = value_colour(x[p]) if p in PATCH_20 else np.repeat(gray.reshape(-1)[p], 3)
        assert (patch[p] == want).all()
    one = _decode(tmp_path / f"sample{FIVE}-0-one-expl.png").reshape(-1, 3)
    lits = dict(expls[2].literals)
    dim = np.rint(image.reshape(-1) * 255 * DIM).astype(np.uint8)
    for p in range(784):
        want = value_colour(lits[p]) if p in lits else np.repeat(dim[p], 3)
        assert (one[p] == want).all()
    counts, means = expl_frequencies(expls, 784)
    every = _decode(tmp_path / f"sample{FIVE}-0-all-expls.png").reshape(-1, 3)
    top = int(np.argmax(counts))
    assert (every[top] == value_colour(means[top])).all()  # the most frequent pixel at full opacity
    assert all((every[p] == dim[p]).all() for p in range(784) if counts[p] == 0)
    heat = _decode(tmp_path / f"sample{FIVE}-0-freq.png").reshape(-1, 3)
    assert (heat == render_heatmap(counts / len(expls), image, PATCH_20).reshape(-1, 3)).all()
    assert all((heat[p] == dim[p]).all() for p in range(784) if p not in PATCH_20)  # the digit, for context
    assert len(np.unique(heat[np.asarray(PATCH_20)], axis=0)) > 1
    ae = np.asarray(Image.open(tmp_path / f"sample{FIVE}-true-ae.png").convert("L"))[SCALE // 2::SCALE,
                                                                                     SCALE // 2::SCALE]
    ae = ae.astype(np.float32) / 255
    y = net.logits(torch.from_numpy(ae).reshape(1, 1, 28, 28))
    assert int(y.argmax()) != 0  # the decoded adversarial example is not classified "5"
    assert saved.adversarial is not None and saved.adversarial.violates
    assert saved.adversarial.predicted == saved.adversarial.runtime_predicted == 1
    first = run.counterexamples[0]
    changed = [p for p in PATCH_20 if ae.reshape(-1)[p] != x[p]]
    if mode == "absolute":
        assert all(ae.reshape(-1)[p] == v for p, v in first.literals)
    else:
        assert set(changed) <= set(first.pixels)


def test_cli_json_and_exit_codes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    patch_file = tmp_path / "patch.txt"
    patch_file.write_text(",".join(map(str, PATCH_20)))
    code = main(["explain", "-p", str(patch_file), "-d", str(FIVE), "--mode", "absolute", "--enum", "both",
                 "--htype", "mcsls", "--json", str(out), "--save", "--outdir", str(tmp_path / "png")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "status: complete" in text and "true adversarial example: predicted class 1" in text
    doc = json.loads(out.read_text())
    assert doc["instance"] == FIVE and doc["class"] == 0 and doc["mode"] == "absolute"
    assert doc["domain"] == "binary" and doc["patch"] == PATCH_20 and doc["status"] == "complete"
    assert doc["explanations"] and doc["counterexamples"]
    assert all(e["minimality"] == "certified" for e in doc["explanations"])
    c = doc["counterexamples"][0]
    assert len(c["witness"]) == 784 and all(c["witness"][p] == v for p, v in c["literals"])
    assert doc["stats"]["explanations"] == len(doc["explanations"])
    assert len(list((tmp_path / "png").glob("*.png"))) == 6
    code = main(["explain", "-p", ",".join(map(str, PATCH_20)), "-d", str(FIVE), "--limit", "2", "-v"])
    text = capsys.readouterr().out
    assert code == 2 and "status: partial (limit)" in text and "cand " in text
    code = main(["explain", "-p", ",".join(map(str, PATCH_7)), "-d", str(SIX), "--mode", "local", "-c", "1",
                 "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["explanations"] == [{"literals": [], "minimality": "certified"}]


@pytest.mark.parametrize("argv", [
    ["-p", "missing.txt", "-d", "11"],
    ["-p", "1,2", "-d", "1000"],
    ["-p", "1,2,900", "-d", "11"],
    ["-p", "1,2", "-d", "11", "-i", "3", "--domain", "binary"],
    ["-p", "1,2", "-d", "11", "--mode", "absolute", "--domain", "box"],
    ["-p", "1,2", "-d", "11", "-c", "opposite"],
    ["-p", "1,2", "-d", "11", "-c", "seven"],
    ["-p", "1,2", "-d", "11", "--domain", "linf:2"],
])
def test_cli_bad_input(argv: list[str], capsys) -> None:
    assert main(["explain", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("profit: error:") and len(err.strip().splitlines()) == 1


def test_continuous_domain_local(net) -> None:
    """[0, 1] over 8 pixels of a grayscale "5": attacks, bounds and branch and bound (profit.bab)."""
    images, _ = load_samples()
    x = images[45].reshape(-1).astype(np.float64)
    patch = [r * 28 + c for r in range(16, 18) for c in range(9, 13)]
    ex = Explainer(net, x, patch, "box")
    run = ex.enumerate("both", timeout=120).run()
    assert run.status == "complete" and len(run.explanations) > 5 and len(run.counterexamples) > 5
    problem = ex.problem
    rng = np.random.default_rng(0)
    for e in run.explanations:  # sampled completions (vertices and uniform points) keep the class
        free = np.array([p not in e.pixels for p in patch])
        points = np.where(free, rng.integers(0, 2, (2000, 8)).astype(float), problem.center)
        points[1000:] = np.where(free, rng.random((1000, 8)), problem.center)
        assert problem.evaluate(points).all()
    for c in run.counterexamples:  # the witness frees only the CXp's pixels and changes the class
        w = c.witness[problem.patch_index]
        assert all(w[i] == problem.center[i] for i, p in enumerate(patch) if p not in c.pixels)
        assert not problem.keeps(problem.logits(w[None]))[0]
    axps = {_bits(e.pixels, patch) for e in run.explanations}
    cxps = {_bits(c.pixels, patch) for c in run.counterexamples}
    assert minimal_hitting_sets(cxps, 8) == axps and minimal_hitting_sets(axps, 8) == cxps
