"""Reference execution of the ORIGINAL ONNX file with onnxruntime (to confirm counterexamples)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


class OnnxRunner:
    """An onnxruntime CPU session (from a path or model bytes) with a flat interface: X_i / Y_j in C order."""

    def __init__(self, path: str | bytes, threads: int = 1):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        model = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"expected one model input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.dtype = _DTYPES.get(inputs[0].type, np.float32)
        self.batch_axis, self.sample_shape = _split_batch(inputs[0].shape)
        self.output_name = self.session.get_outputs()[0].name

    @property
    def n_inputs(self) -> int:
        """Number of scalars per sample."""
        return int(np.prod(self.sample_shape, dtype=np.int64))

    def run(self, x_flat: np.ndarray) -> np.ndarray:
        """Outputs [B, n_outputs] (float64) for inputs [n_inputs] or [B, n_inputs]."""
        x = np.asarray(x_flat, dtype=np.float64)
        x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
        if x.shape[1] != self.n_inputs:
            raise ValueError(f"expected {self.n_inputs} inputs per sample, got {x.shape[1]}")
        x = x.astype(self.dtype)
        if self.batch_axis == "symbolic":
            return self._call(x.reshape((x.shape[0],) + self.sample_shape)).reshape(x.shape[0], -1)
        rows = []
        for sample in x:
            shape = ((1,) if self.batch_axis == "fixed" else ()) + self.sample_shape
            rows.append(self._call(sample.reshape(shape)).reshape(-1))
        return np.stack(rows)

    def _call(self, feed: np.ndarray) -> np.ndarray:
        """One onnxruntime call on an already shaped input."""
        return np.asarray(self.session.run([self.output_name], {self.input_name: feed})[0], dtype=np.float64)


def _split_batch(shape) -> tuple[str, tuple[int, ...]]:
    """('symbolic' | 'fixed' | 'none', per-sample shape), using the loader's batch rule."""
    dims = list(shape)
    if dims and (not isinstance(dims[0], int) or dims[0] <= 0):
        return "symbolic", tuple(int(d) for d in dims[1:])
    if len(dims) >= 2 and dims[0] == 1:
        return "fixed", tuple(int(d) for d in dims[1:])
    return "none", tuple(int(d) for d in dims)
