"""OnnxRunner: flat inputs reshaped to the ONNX input (fixed, symbolic or no batch dim)."""
import numpy as np
import pytest
from onnx import helper

from onnx_factory import make_onnx
from verifier.model.reference import OnnxRunner

N = helper.make_node


@pytest.mark.parametrize("in_shape,n_inputs", [([1, 2, 3], 6), (["B", 2, 3], 6), ([2, 3], 6), ([6], 6)])
def test_runner_flat_interface(in_shape, n_inputs):
    """y = 2x + 1 flattened, for every batch convention."""
    data = make_onnx([N("Mul", ["x", "two"], ["t"]), N("Add", ["t", "one"], ["y"])], in_shape,
                     {"two": np.float32(2), "one": np.float32(1)})
    runner = OnnxRunner(data)
    assert runner.n_inputs == n_inputs
    x = np.arange(3 * n_inputs, dtype=np.float64).reshape(3, n_inputs) / 7
    np.testing.assert_allclose(runner.run(x), 2 * x + 1, rtol=1e-6)
    np.testing.assert_allclose(runner.run(x[0]), 2 * x[:1] + 1, rtol=1e-6)


def test_runner_rejects_wrong_length():
    runner = OnnxRunner(make_onnx([N("Relu", ["x"], ["y"])], [1, 4]))
    with pytest.raises(ValueError, match="expected 4 inputs"):
        runner.run(np.zeros(5))


def test_runner_from_path(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(make_onnx([N("Relu", ["x"], ["y"])], [1, 3]))
    out = OnnxRunner(str(path)).run(np.array([[-1.0, 0.5, 2.0]]))
    np.testing.assert_array_equal(out, [[0.0, 0.5, 2.0]])
