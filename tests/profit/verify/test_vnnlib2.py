"""`run_vnnlib2` and `profit vnnlib2` on small ONNX models: the VNN-LIB 2.0 calling convention of
vnnlib-satisfactory (first word on stdout), outputs of any shape, and `unknown` plus a reason
for queries profit cannot express. Every sat is re-checked with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from profit.cli import main
from profit.verify import run_vnnlib2


def _save(path: Path, nodes: list, x_dims: list[int], y_dims: list[int], inits: dict[str, np.ndarray]) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_dims)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _conv_net(tmp_path: Path) -> Path:
    """y (1, 1, 2, 2) = 2x2 all-ones Conv of x (1, 1, 3, 3): each output sums a 2x2 window."""
    return _save(tmp_path / "conv.onnx", [helper.make_node("Conv", ["x", "W"], ["y"])], [1, 1, 3, 3], [1, 1, 2, 2],
                 {"W": np.ones((1, 1, 2, 2))})


def _query(tmp_path: Path, y_assert: str, x_dims: str = "1, 1, 3, 3", y_dims: str = "1, 1, 2, 2",
           extra: str = "") -> Path:
    n = int(np.prod([int(d) for d in x_dims.split(",")]))
    idx = [np.unravel_index(i, [int(d) for d in x_dims.split(",")]) for i in range(n)]
    bounds = "".join(f"(assert (>= X[{', '.join(map(str, j))}] 0.0))\n(assert (<= X[{','.join(map(str, j))}] 1.0))\n"
                     for j in idx)
    text = (f"(vnnlib-version <2.0>)\n(declare-network N\n  (declare-input X float32 [{x_dims}])\n{extra}"
            f"  (declare-output Y float32 [{y_dims}])\n)\n{bounds}(assert {y_assert})\n")
    path = tmp_path / "q.vnnlib"
    path.write_text(text)
    return path


def test_a_multi_dimensional_output_is_read_flattened(tmp_path: Path) -> None:
    net = _conv_net(tmp_path)
    assert run_vnnlib2(_query(tmp_path, "(>= Y[0,0,1,1] 5.0)"), {"N": str(net)}, timeout=30).result == "unsat"
    outcome = run_vnnlib2(_query(tmp_path, "(>= Y[0,0,1,1] 3.9)"), {"N": str(net)}, timeout=30)
    assert outcome.result == "sat"
    x, _ = outcome.decision.counterexample
    y = ort.InferenceSession(str(net), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy().astype(np.float32).reshape(1, 1, 3, 3)})[0]
    assert y[0, 0, 1, 1] >= 3.9 and ((0 <= x) & (x <= 1)).all()


def test_an_output_that_ignores_the_input_and_an_exact_boundary(tmp_path: Path) -> None:
    """y = 0 * x + 1: input splitting can split nothing useful; y <= 1 holds at every x (sat),
    y <= 0.5 nowhere (unsat)."""
    net = _save(tmp_path / "const.onnx", [helper.make_node("Mul", ["x", "z"], ["m"]),
                                          helper.make_node("Add", ["m", "one"], ["y"])], [1], [1],
                {"z": np.zeros(1), "one": np.ones(1)})
    sat = run_vnnlib2(_query(tmp_path, "(<= Y[0] 1.0)", "1", "1"), {"N": str(net)}, timeout=20)
    unsat = run_vnnlib2(_query(tmp_path, "(<= Y[0] 0.5)", "1", "1"), {"N": str(net)}, timeout=20)
    assert (sat.result, unsat.result) == ("sat", "unsat")


def test_cli_prints_the_verdict_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, query = _conv_net(tmp_path), _query(tmp_path, "(>= Y[0,0,0,0] 5.0)")
    assert main(["vnnlib2", "verify", str(query), "--network", f"N={net}", "--timeout", "30"]) == 0
    assert capsys.readouterr().out.split()[0] == "unsat"


@pytest.mark.parametrize("case", ["two networks", "unsupported op"])
def test_what_profit_cannot_express_is_unknown_with_a_reason(case: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    net = _conv_net(tmp_path)
    networks = ["--network", f"N={net}"]
    if case == "two networks":
        networks += ["--network", f"M={net}"]
    else:
        net = _save(tmp_path / "sm.onnx", [helper.make_node("Softmax", ["x"], ["y"])], [1, 1, 3, 3], [1, 1, 3, 3], {})
        networks = ["--network", f"N={net}"]
    query = _query(tmp_path, "(>= Y[0,0,0,0] 5.0)")
    assert main(["vnnlib2", "verify", str(query), *networks, "--timeout", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "unknown" and len(out) == 2 and out[1].startswith("reason: ")


def test_supports_answers_one_item_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vnnlib2", "supports", "--onnx-operators"]) == 0
    ops = capsys.readouterr().out.split()
    assert {"Gemm", "Relu", "Slice", "Conv"} <= set(ops) and "Softmax" not in ops
    assert main(["vnnlib2", "supports", "--multiple-network-theories"]) == 0
    assert capsys.readouterr().out == "SNET\n"
    assert main(["vnnlib2", "supports", "--vnnlib-versions"]) == 0
    assert capsys.readouterr().out == "2.0\n2.0\n"


def test_input_splitting_with_only_unsplittable_boxes_left(tmp_path: Path) -> None:
    """y = x on [1, 1000], unsafe y <= 1: the only counterexample, x = 1, lies outside the attack box
    one float32 step inside; the box around it soon cannot be split: unknown (precision), no crash."""
    from networks import load_onnx
    from profit.bab import check_problems
    from specs.vnnlib import parse_vnnlib

    net_path = _save(tmp_path / "id.onnx", [helper.make_node("Add", ["x", "zero"], ["y"])], [1], [1],
                     {"zero": np.zeros(1)})
    (problem,) = parse_vnnlib("(declare-const X_0 Real)(declare-const Y_0 Real)"
                              "(assert (>= X_0 1.0))(assert (<= X_0 1000.0))(assert (<= Y_0 1.0))")
    outcome = check_problems(load_onnx(net_path), [(problem.box, problem.spec)], 20, onnx_path=net_path)
    assert type(outcome).__name__ == "Unknown" and "precision" in outcome.reason


def _hidden_net(tmp_path: Path) -> Path:
    """h = relu(x - 0.5) (the tensor "h"), y = 2 h + 1, on x (1, 2)."""
    nodes = [helper.make_node("Sub", ["x", "half"], ["s"]), helper.make_node("Relu", ["s"], ["h"]),
             helper.make_node("Mul", ["h", "two"], ["m"]), helper.make_node("Add", ["m", "one"], ["y"])]
    return _save(tmp_path / "hidden.onnx", nodes, [1, 2], [1, 2],
                 {"half": np.full(2, 0.5), "two": np.full(2, 2.0), "one": np.ones(2)})


@pytest.mark.parametrize("constraint, expected", [
    ("(<= H[0,1] -0.1)", "unsat"),  # a ReLU output is never negative
    ("(and (>= H[0,0] 0.4) (<= Y[0,0] 1.5))", "unsat"),  # y = 2 h + 1 >= 1.8
    ("(and (>= H[0,1] 0.4) (>= Y[0,1] 1.8))", "sat"),
])
def test_hidden_tensors(constraint: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _hidden_net(tmp_path)
    query = _query(tmp_path, constraint, "1, 2", "1, 2", extra='  (declare-hidden H float32 [1, 2] "h")\n')
    assert main(["vnnlib2", "verify", str(query), "--network", f"N={net}", "--timeout", "20"]) == 0
    assert capsys.readouterr().out.split()[0] == expected


def test_a_constraint_mixing_inputs_and_outputs_is_unknown_and_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, query = _conv_net(tmp_path), _query(tmp_path, "(>= Y[0,0,0,0] X[0,0,0,0])")
    assert main(["vnnlib2", "verify", str(query), "--network", f"N={net}"]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "unknown" and str(query) in captured.out
    assert captured.err.startswith("profit: error: ") and len(captured.err.splitlines()) == 1


def test_a_network_the_ir_cannot_hold_is_falsified_with_onnxruntime_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """y = x * x (Mul of two computed tensors, no IR form): sat at a corner, found by sampling and
    confirmed by onnxruntime; the unsat direction stays unknown (no proof without the IR)."""
    net = _save(tmp_path / "square.onnx", [helper.make_node("Mul", ["x", "x"], ["y"])], [1, 2], [1, 2], {})
    outcome = run_vnnlib2(_query(tmp_path, "(>= Y[0,1] 0.99)", "1, 2", "1, 2"), {"N": str(net)}, timeout=20)
    assert outcome.result == "sat" and outcome.decision.decided_by == "onnx-sampling"
    x, y = outcome.decision.counterexample
    assert float(x[1]) ** 2 >= 0.99 and ((0 <= x) & (x <= 1)).all() and abs(float(y[1]) - float(x[1]) ** 2) < 1e-6
    query = _query(tmp_path, "(>= Y[0,1] 1.5)", "1, 2", "1, 2")
    assert main(["vnnlib2", "verify", str(query), "--network", f"N={net}", "--timeout", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "unknown" and "Mul" in out[1]
