"""`nnverify inspect`: the lowered graph, the loader log, unstable neurons and the route (JSON report)."""
import json

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from verifier.cli import EXIT_ERROR, main


def _model(tmp_path, with_unsupported=False):
    """x[1,3] -> Gemm -> Relu -> (Sin * Relu) -> Gemm -> y[1,2] (optionally through an unsupported Atan)."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Sin", ["h"], ["s"]), helper.make_node("Mul", ["s", "r"], ["m"]),
             helper.make_node("Gemm", ["m", "w2"], ["y"], transB=1)]
    if with_unsupported:
        nodes.insert(2, helper.make_node("Atan", ["r"], ["e"]))
        nodes[-2] = helper.make_node("Mul", ["s", "e"], ["m"])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "net.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _spec(tmp_path):
    """A box of width 2 around 0 and one unsafe polytope Y_0 >= Y_1."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(3)) + "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    text += "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(3))
    text += "(assert (>= Y_0 Y_1))\n"
    path = tmp_path / "prop.vnnlib"
    path.write_text(text)
    return path


def _report(capsys, *argv):
    """Run the CLI in-process and parse its JSON report."""
    assert main(["inspect", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_model_lists_lowered_ops_shapes_and_parameters(tmp_path, capsys):
    info = _report(capsys, _model(tmp_path))
    assert info["input_shape"] == [3] and info["output_shape"] == [2]
    assert info["ops"] == {"linear": 2, "mul": 1, "relu": 1, "sin": 1}
    assert info["parameters"] == 4 * 3 + 2 * 4
    assert [n["op"] for n in info["nodes"]] == ["linear", "relu", "sin", "mul", "linear"]
    assert any(line.startswith("lowered Mul") and "mul" in line for line in info["folded"])
    assert "spec" not in info
    assert sorted(info["rules"]) == ["linear", "mul", "relu", "sin"]
    assert all(rule[k] and "unsupported" not in rule[k] for rule in info["rules"].values() for k in ("ibp", "crown", "checker"))


def test_inspect_with_spec_reports_unstable_neurons_and_route(tmp_path, capsys):
    info = _report(capsys, _model(tmp_path), _spec(tmp_path))
    spec = info["spec"]
    assert spec["regions"] == 1 and spec["polytopes"] == 1
    assert 0 <= spec["unstable"] <= 4
    assert spec["route"] == "input-split" and "3 inputs" in spec["route_reason"]


def test_inspect_unsupported_model_is_an_error(tmp_path, capsys):
    assert main(["inspect", str(_model(tmp_path, with_unsupported=True))]) == EXIT_ERROR
    assert "Atan" in capsys.readouterr().err


def test_inspect_text_report_runs(tmp_path, capsys):
    assert main(["inspect", str(_model(tmp_path)), str(_spec(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "bound rules (IBP | CROWN | checker):" in out and "  sin " in out
