"""The CLI's last line of defence and its start-up: a bug inside any stage becomes one line on
stderr naming the stage and the exception, exit code 3, and `profit vnnlib` still writes
`unknown`; `--debug` / PROFIT_DEBUG=1 show the traceback; choosing a subcommand imports only
what it needs.

Failures are injected by replacing one library function the stage always calls with one that
raises, as a bug there would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import profit.cli
import profit.verify.robustness as robustness_front_end
from networks.datasets import shared_dir
from profit.bab.search import Search
from profit.cli import COMMANDS, load_command, main
from profit.cli.common import EXIT_INTERNAL_ERROR
from profit.explain.hitting import HittingSets
from profit.features.proof import ProofFeatures

REPO = Path(__file__).resolve().parents[3]
PATCH = "428,429,430,456,457,458"


def _bug(*args: object, **kwargs: object) -> None:
    raise KeyError("6")


def _vnnlib_instance() -> tuple[Path, Path]:
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared is absent")
    test = shared / "benchmarks" / "vnncomp2021" / "test"
    return test / "test_tiny.onnx", test / "test_tiny.vnnlib"


def _assert_internal_error(code: int, err: str, stage: str) -> None:
    assert code == EXIT_INTERNAL_ERROR
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"profit: internal error in {stage}: KeyError '6' (please report"), lines[0]


@pytest.mark.parametrize("stage, target, argv", [
    ("verify", (robustness_front_end, "quick_attack"), ["verify", "--count", "2", "--no-progress"]),
    ("features", (ProofFeatures, "compute"), ["features", "mnist_mlp", "--count", "1"]),
    ("explain", (HittingSets, "__init__"), ["explain", "-p", PATCH, "-d", "23"]),
])
def test_a_bug_in_a_stage_is_one_line_and_exit_3(stage: str, target: tuple[object, str], argv: list[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PROFIT_DEBUG", raising=False)
    monkeypatch.setattr(*target, _bug)
    code = main(argv)
    _assert_internal_error(code, capsys.readouterr().err, stage)


def test_a_bug_in_bab_still_leaves_an_unknown_result_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    onnx, spec = _vnnlib_instance()
    monkeypatch.delenv("PROFIT_DEBUG", raising=False)
    monkeypatch.setattr(Search, "attack", _bug)
    out = tmp_path / "result.txt"
    code = main(["vnnlib", str(onnx), str(spec), "--timeout", "10", "--out", str(out)])
    _assert_internal_error(code, capsys.readouterr().err, "bab")
    assert out.read_text() == "unknown\n"


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(robustness_front_end, "quick_attack", _bug)
    for argv, env in ((["--debug", "verify", "--count", "1", "--no-progress"], None),
                      (["verify", "--count", "1", "--no-progress"], "1")):
        if env is None:
            monkeypatch.delenv("PROFIT_DEBUG", raising=False)
        else:
            monkeypatch.setenv("PROFIT_DEBUG", env)
        assert main(argv) == EXIT_INTERNAL_ERROR
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "quick_attack" in err
        assert err.strip().splitlines()[-1].startswith("profit: internal error in verify: KeyError '6'")


def test_every_command_module_matches_the_registry() -> None:
    for name, summary in COMMANDS.items():
        command = load_command(name)
        assert (command.name, command.summary) == (name, summary)
    assert sorted(p.stem for p in Path(profit.cli.__file__).parent.glob("*.py")) == sorted(
        [*COMMANDS, "__init__", "common"])


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_help_imports_no_heavy_module() -> None:
    """`profit --help` parses arguments only: no torch, onnx or plotting (it used to take ~5 s)."""
    loaded = _imported_after("from profit.cli import main, build_parser; build_parser(loaded=[])")
    assert loaded.isdisjoint({"torch", "onnx", "onnxruntime", "matplotlib", "scipy", "cvxpy", "pysat", "numba"})


@pytest.mark.parametrize("name", ["verify", "vnnlib"])
def test_verifying_imports_no_plotting_or_solvers(name: str) -> None:
    """A verification subcommand loads torch and onnx, not the plots, LP/SAT solvers or onnxruntime."""
    loaded = _imported_after(f"import profit.cli.{name}")
    assert loaded.isdisjoint({"matplotlib", "scipy", "cvxpy", "pysat", "onnxruntime", "numba"}), loaded
