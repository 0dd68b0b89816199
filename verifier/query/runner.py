"""The reference runner of a compiled query: onnxruntime on each original file, z -> observed vector.

For a candidate z it builds every network's inputs (u = M z + c in float64), feeds them to
onnxruntime in the network's input type, and returns exactly the observed vector the product
graph computes: each network's outputs and hidden tensors (asked from onnxruntime by name),
the passthrough z entries, and the products. A candidate whose network inputs are not
representable in the input type (an equality such as X_g == X_f + 0.1 that float32 cannot meet
exactly) gets a NaN row, which no witness check accepts.
"""
from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


class _Session:
    """One original file, its hidden tensors added as outputs, run one sample at a time."""

    def __init__(self, path: str, hidden: list[str]):
        model = onnx.load(path)
        present = {o.name for o in model.graph.output}
        for name in hidden:
            if name not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, _ORT_TYPES.get(i.type, np.float32), i.shape) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in model.graph.output if o.name in present] + list(hidden)

    def run(self, u: np.ndarray) -> np.ndarray | None:
        """Flat observed values for flat inputs ``u``; None when u is not exact in the input types."""
        feeds, offset = {}, 0
        for name, dtype, shape in self.inputs:
            dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
            size = int(np.prod(dims))
            chunk = u[offset:offset + size]
            cast = chunk.astype(dtype)
            if not np.array_equal(cast.astype(np.float64), chunk):
                return None
            feeds[name] = cast.reshape(dims)
            offset += size
        values = self.session.run(self.outputs, feeds)
        return np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in values])

    @property
    def dtype(self):
        return self.inputs[0][1] if self.inputs else np.float32


class QueryRunner:
    """``run(z [B, n_z]) -> observed [B, n_obs]`` on the original ONNX files."""

    def __init__(self, compiled):
        self.c = compiled
        self.maps = [compiled.head(net) for net in compiled.networks]
        self.sessions = [_Session(net.path, [d.onnx_name for d in net.observed if d.kind == "hidden"])
                         for net in compiled.networks]
        self.dtype = self.sessions[0].dtype
        self.n_inputs = len(compiled.free)

    def run(self, z: np.ndarray) -> np.ndarray:
        """Observed vectors [B, n_obs] (float64; a NaN row where the inputs are not representable)."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, self.n_inputs)
        rows = []
        for sample in z:
            us, obs = [], []
            for (M, const), session in zip(self.maps, self.sessions):
                u = M @ sample + const
                y = session.run(u)
                us.append(u)
                obs.append(y)
            if any(y is None for y in obs):
                rows.append(np.full(self.c.spec.n_outputs, np.nan))
                continue
            extra = [sample[j] for j in self.c.passthrough]
            for mono in self.c.monomials:
                value = 1.0
                for key in mono:
                    f = self.c.factor(key)
                    value *= (us if f.kind == "input" else obs)[f.part][f.index]
                extra.append(value)
            rows.append(np.concatenate(obs + [np.asarray(extra, dtype=np.float64)]))
        return np.stack(rows)
