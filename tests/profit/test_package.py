"""The public API of `profit`: every exported name exists, and the examples in the package
docstring and the README run as written (the shipped networks and samples only)."""

from __future__ import annotations

import os
import textwrap
import unittest
from pathlib import Path

import pytest

import profit
from domains import DOMAINS


def test_every_exported_name_exists() -> None:
    missing = [name for name in profit.__all__ if not hasattr(profit, name)]
    assert not missing


def test_docstring_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's lines, with the placeholder files swapped for shipped ones."""
    doc = profit.__doc__
    code = textwrap.dedent(doc[doc.index("    import profit"):])
    monkeypatch.chdir(os.path.dirname(os.path.dirname(profit.__file__)))
    code = code.replace('profit.load_input("digit.png", net)', "profit.load_sample(0, net)[0]")
    code = code.replace('outcome = profit.run_vnnlib("net.onnx", "prop.vnnlib", timeout=60)', "")
    scope: dict = {}
    exec(compile(code, "profit.__doc__", "exec"), scope)
    assert isinstance(scope["outcome"], (profit.Proven, profit.Counterexample, profit.Unknown))
    assert scope["features"].batch_size == 1
    assert scope["e"].kind in ("axp", "cxp") and scope["e"].literals
    assert scope["saliency"].shape == scope["x"].shape and scope["certified"].shape == (1,)


def test_readme_python_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The README's Python block (bound an eps-ball with each domain) runs as written."""
    root = Path(profit.__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    start = readme.index("```python\n", readme.index("bound an eps-ball with each domain")) + len("```python\n")
    code = readme[start:readme.index("```", start)]
    monkeypatch.chdir(root)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(DOMAINS)
    assert all(line.split()[2].endswith("/10") for line in lines)


def test_readme_testing_example_runs() -> None:
    """The README's profit.testing example runs and its specs pass (shipped net and samples)."""
    root = Path(profit.__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    start = readme.index("```python\n", readme.index("## Robustness specs in your own test suite")) + len("```python\n")
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme[start:readme.index("```", start)], "README.md", "exec"), namespace)
    namespace["test_first_digits_are_robust"]()
    result = unittest.TextTestRunner(verbosity=0).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(namespace["MlpSpec"]))
    assert result.wasSuccessful() and result.testsRun == 1
