"""Every lowered ONNX op: canonical Graph.forward must match onnxruntime on random inputs."""
import numpy as np
import pytest

from onnx_factory import compare, helper, make_onnx, ops_of, rand

N = helper.make_node
RNG = np.random.default_rng(7)


def r(*shape):
    """Seeded random float32 tensor."""
    return rand(RNG, *shape)


def i64(*v):
    """int64 constant."""
    return np.array(v, dtype=np.int64)


@pytest.mark.parametrize("ta,tb,alpha,beta,cshape", [
    (0, 0, 1.0, 1.0, (3,)), (0, 1, 0.5, 2.0, (1, 3)), (0, 1, 1.0, 1.0, None), (0, 0, 1.0, -1.0, ())])
def test_gemm(ta, tb, alpha, beta, cshape):
    w = r(3, 4) if tb else r(4, 3)
    inits = {"W": w} if cshape is None else {"W": w, "C": r(*cshape)}
    ins = ["x", "W"] if cshape is None else ["x", "W", "C"]
    m = compare(make_onnx([N("Gemm", ins, ["y"], transA=ta, transB=tb, alpha=alpha, beta=beta)], [1, 4], inits))
    assert ops_of(m) == ["linear"]


def test_gemm_trans_a_and_full_bias():
    """transA on a [4, 1] input and a bias that varies along rows."""
    m = compare(make_onnx([N("Gemm", ["x", "W", "C"], ["y"], transA=1)], [4, 1], {"W": r(4, 3), "C": r(1, 3)}))
    assert m.output_shape == (3,)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_gemm_variable_c(beta):
    """C computed from the input: linear + add."""
    nodes = [N("Relu", ["x"], ["r"]), N("Gemm", ["x", "W", "r"], ["y"], beta=beta)]
    m = compare(make_onnx(nodes, [1, 3], {"W": r(3, 3)}))
    assert "add" in ops_of(m)


def test_identity_network():
    """The output may be the input itself."""
    m = compare(make_onnx([N("Identity", ["x"], ["y"])], [1, 2, 2]))
    assert m.graph.output_name == m.input_name and m.output_shape == (2, 2)


@pytest.mark.parametrize("xshape,wshape,var_first", [
    ([1, 4], [4, 3], True), ([4], [4, 2], True), ([1, 2, 4], [4, 3], True), ([1, 4], [4], True),
    ([1, 2, 4], [1, 4, 3], True), ([4, 2], [3, 4], False), ([4], [3, 4], False), ([1, 4, 2], [4], False),
    ([1, 4, 2], [3, 4], False)])
def test_matmul(xshape, wshape, var_first):
    ins = ["x", "W"] if var_first else ["W", "x"]
    compare(make_onnx([N("MatMul", ins, ["y"])], xshape, {"W": r(*wshape)}))


CONST_CASES = [((1, 3, 1, 1), True), ((4,), False), ((2, 1, 3, 1, 4), True), ((), False)]


@pytest.mark.parametrize("op,cshape,var_first", [(op, cs, vf) for op in ("Add", "Sub", "Mul", "Div")
                                                 for cs, vf in CONST_CASES if vf or op != "Div"])
def test_binary_with_constant(op, cshape, var_first):
    c = r(*cshape) + (np.float32(3.0) if op == "Div" else 0)
    ins = ["x", "c"] if var_first else ["c", "x"]
    m = compare(make_onnx([N(op, ins, ["y"])], [1, 3, 2, 4], {"c": c}))
    assert set(ops_of(m)) <= {"affine", "gather"}


@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_binary_two_variables_broadcast(op):
    """x [1,2,3] op relu(x)[..., :1] (broadcast along the last axis by a gather)."""
    nodes = [N("Relu", ["x"], ["r"]), N("Slice", ["r", "s", "e", "a"], ["t"]), N(op, ["x", "t"], ["u"]),
             N(op, ["t", "u"], ["y"])]
    m = compare(make_onnx(nodes, [1, 2, 3], {"s": i64(0), "e": i64(1), "a": i64(2)}))
    assert "add" in ops_of(m)


@pytest.mark.parametrize("op,attrs,canon", [
    ("Relu", {}, "relu"), ("LeakyRelu", {"alpha": 0.2}, "leaky_relu"), ("LeakyRelu", {}, "leaky_relu"),
    ("Sigmoid", {}, "sigmoid"), ("Tanh", {}, "tanh"), ("Sign", {}, "sign"), ("Neg", {}, "affine"),
    ("Identity", {}, None), ("Dropout", {}, None)])
def test_elementwise(op, attrs, canon):
    m = compare(make_onnx([N("Relu", ["x"], ["h"]), N("Sub", ["h", "one"], ["g"]), N(op, ["g"], ["y"], **attrs)],
                          [1, 5], {"one": np.float32(1.0)}))
    assert canon is None or canon in ops_of(m)


def test_sign_exact_zero():
    """Sign(relu(x) - relu(x)) is exactly 0."""
    m = compare(make_onnx([N("Relu", ["x"], ["h"]), N("Sub", ["h", "h"], ["g"]), N("Sign", ["g"], ["y"])], [1, 3]))
    assert "sign" in ops_of(m)


@pytest.mark.parametrize("opset,lo,hi", [(6, -0.5, 0.7), (6, 0.0, None), (6, None, 1.0), (11, -1.0, 0.5),
                                         (13, 0.0, 6.0), (13, 0.25, None), (13, None, -0.1), (13, None, None)])
def test_clip(opset, lo, hi):
    if opset < 11:
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        node, inits = N("Clip", ["x"], ["y"], **attrs), {}
    else:
        inits = {k: np.float32(v) for k, v in (("lo", lo), ("hi", hi)) if v is not None}
        node = N("Clip", ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""], ["y"])
    m = compare(make_onnx([node], [1, 7], inits, opset=opset))
    assert set(ops_of(m)) <= {"relu", "affine"}


@pytest.mark.parametrize("attrs,xshape,wshape", [
    ({}, [1, 2, 6, 6], (3, 2, 3, 3)),
    ({"strides": [2, 1], "pads": [1, 0, 1, 0]}, [1, 2, 7, 6], (3, 2, 3, 3)),
    ({"pads": [0, 1, 2, 0]}, [1, 2, 5, 5], (2, 2, 2, 3)),
    ({"dilations": [2, 2], "pads": [1, 1, 1, 1]}, [1, 2, 7, 7], (2, 2, 3, 3)),
    ({"group": 2}, [1, 4, 5, 5], (6, 2, 3, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, [1, 2, 6, 5], (3, 2, 2, 2)),
    ({"auto_pad": "SAME_LOWER"}, [1, 2, 5, 5], (3, 2, 2, 2)),
    ({"auto_pad": "VALID"}, [1, 2, 5, 5], (3, 2, 3, 3)),
    ({"strides": [2], "pads": [1, 2]}, [1, 2, 9], (3, 2, 3)),
    ({"dilations": [2]}, [1, 3, 9], (2, 3, 2))])
def test_conv(attrs, xshape, wshape):
    m = compare(make_onnx([N("Conv", ["x", "W", "B"], ["y"], **attrs)], xshape, {"W": r(*wshape), "B": r(wshape[0])}))
    assert "conv" in ops_of(m)


@pytest.mark.parametrize("attrs,xshape,wshape", [
    ({}, [1, 2, 4, 4], (2, 3, 3, 3)),
    ({"strides": [2, 2]}, [1, 2, 3, 4], (2, 3, 3, 3)),
    ({"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, [1, 2, 4, 4], (2, 1, 4, 4)),
    ({"strides": [2, 1], "pads": [0, 2, 1, 0], "dilations": [1, 2]}, [1, 2, 3, 3], (2, 2, 2, 3)),
    ({"group": 2, "strides": [2]}, [1, 4, 5], (4, 3, 3)),
    ({"pads": [2, 1, 2, 2]}, [1, 2, 4, 4], (2, 3, 2, 2))])
def test_conv_transpose(attrs, xshape, wshape):
    m = compare(make_onnx([N("ConvTranspose", ["x", "W", "B"], ["y"], **attrs)], xshape,
                          {"W": r(*wshape), "B": r(wshape[1] * attrs.get("group", 1))}))
    assert "conv" in ops_of(m)


def test_batchnorm_standalone_and_fused():
    """BN after a conv is fused into it; BN on a rank-2 input is an affine."""
    c = 3
    bn = {"g": r(c), "b": r(c), "m": r(c), "v": np.abs(r(c)) + 0.5}
    conv = N("Conv", ["x", "W"], ["h"])
    m = compare(make_onnx([conv, N("BatchNormalization", ["h", "g", "b", "m", "v"], ["y"], epsilon=1e-3)],
                          [1, 2, 4, 4], {"W": r(c, 2, 3, 3), **bn}))
    assert ops_of(m) == ["conv"] and any("fused" in f for f in m.folded)
    m2 = compare(make_onnx([N("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])], [1, c], bn))
    assert ops_of(m2) == ["affine"]


@pytest.mark.parametrize("attrs,xshape", [
    ({"kernel_shape": [2, 2]}, [1, 2, 4, 4]),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, [1, 2, 5, 6]),
    ({"kernel_shape": [2, 2], "dilations": [2, 1]}, [1, 1, 6, 5]),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, [1, 2, 6, 6]),
    ({"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, [1, 2, 7]),
    ({"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, [1, 1, 4, 4])])
def test_maxpool(attrs, xshape):
    m = compare(make_onnx([N("MaxPool", ["x"], ["y"], **attrs)], xshape, opset=12))
    assert ops_of(m) == ["maxpool"]


@pytest.mark.parametrize("attrs,xshape", [
    ({"kernel_shape": [2, 2]}, [1, 2, 4, 4]),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, [1, 2, 5, 6]),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, [1, 2, 5, 6]),
    ({"kernel_shape": [2, 3], "pads": [0, 1, 1, 2]}, [1, 3, 4, 4]),
    ({"kernel_shape": [2, 3], "pads": [0, 1, 1, 2], "count_include_pad": 1}, [1, 3, 4, 4]),
    ({"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, [1, 2, 7])])
def test_avgpool(attrs, xshape):
    m = compare(make_onnx([N("AveragePool", ["x"], ["y"], **attrs)], xshape, opset=11))
    assert "conv" in ops_of(m) and "maxpool" not in ops_of(m)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op):
    compare(make_onnx([N(op, ["x"], ["y"])], [1, 3, 4, 5]))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis):
    compare(make_onnx([N("Relu", ["x"], ["h"]), N("Flatten", ["h"], ["y"], axis=axis)], [1, 2, 3, 4]))


@pytest.mark.parametrize("shape", [(0, -1), (1, 6, 4), (-1,), (1, 4, 0, 2)])
def test_reshape_constant(shape):
    compare(make_onnx([N("Reshape", ["x", "s"], ["y"])], [1, 2, 3, 4], {"s": i64(*shape)}))


def test_reshape_from_shape_subgraph():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (folded at load time), opset 9 and 13."""
    for opset in (9, 13):
        unsq = (N("Unsqueeze", ["n"], ["n1"], axes=[0]) if opset < 13 else N("Unsqueeze", ["n", "ax"], ["n1"]))
        nodes = [N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "zero"], ["n"], axis=0), unsq,
                 N("Concat", ["n1", "minus1"], ["s"], axis=0), N("Reshape", ["x", "s"], ["y"])]
        inits = {"zero": np.array(0, np.int64), "minus1": i64(-1), "ax": i64(0)}
        m = compare(make_onnx(nodes, ["N", 3, 4], inits, opset=opset))
        assert m.output_shape == (12,) and any("Shape" in f and "constant" in f for f in m.folded)


@pytest.mark.parametrize("perm", [(0, 2, 1, 3), (0, 3, 1, 2), (1, 0, 2, 3)])
def test_transpose(perm):
    compare(make_onnx([N("Transpose", ["x"], ["y"], perm=list(perm))], [1, 2, 3, 4]))


@pytest.mark.parametrize("axis", [1, 2, 0, -1])
def test_concat_with_constant(axis):
    const_shape = [1, 2, 3]
    const_shape[axis] = 2
    nodes = [N("Relu", ["x"], ["h"]), N("Concat", ["x", "c", "h"], ["y"], axis=axis)]
    m = compare(make_onnx(nodes, [1, 2, 3], {"c": r(*const_shape)}))
    assert m.output_shape[-1] >= 3


@pytest.mark.parametrize("opset,starts,ends,axes,steps", [
    (9, [1], [3], [1], None), (9, [-3, 0], [100, -1], [2, 1], None),
    (13, [4], [0], [2], [-1]), (13, [-1, 1], [-100, 100], [1, 2], [-2, 2]), (13, [0], [2], None, None)])
def test_slice(opset, starts, ends, axes, steps):
    if opset < 10:
        attrs = {"starts": starts, "ends": ends} | ({"axes": axes} if axes else {})
        node, inits = N("Slice", ["x"], ["y"], **attrs), {}
    else:
        inits = {"s": i64(*starts), "e": i64(*ends)} | ({"a": i64(*axes)} if axes else {}) | (
            {"t": i64(*steps)} if steps else {})
        node = N("Slice", ["x", "s", "e", "a" if axes else "", "t" if steps else ""], ["y"])
    compare(make_onnx([node], [1, 3, 5], inits, opset=opset))


@pytest.mark.parametrize("opset,mode,value", [(11, "constant", 0.0), (11, "constant", 1.5), (11, "edge", 0.0),
                                              (11, "reflect", 0.0), (2, "constant", -2.0), (13, "constant", 0.0)])
def test_pad(opset, mode, value):
    pads = [0, 0, 1, 2, 0, 0, 2, -1]
    if opset < 11:
        node, inits = N("Pad", ["x"], ["y"], pads=pads, mode=mode, value=value), {}
    else:
        node, inits = N("Pad", ["x", "p", "v"], ["y"], mode=mode), {"p": i64(*pads), "v": np.float32(value)}
    m = compare(make_onnx([node], [1, 2, 3, 4], inits, opset=opset))
    assert "gather" in ops_of(m)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    if opset < 13:
        nodes = [N("Squeeze", ["x"], ["s"], axes=[2]), N("Unsqueeze", ["s"], ["y"], axes=[0, 3])]
        inits = {}
    else:
        nodes = [N("Squeeze", ["x", "a"], ["s"]), N("Unsqueeze", ["s", "b"], ["y"])]
        inits = {"a": i64(2), "b": i64(0, 3)}
    m = compare(make_onnx(nodes, [1, 3, 1, 4], inits, opset=opset))
    assert m.output_shape == (1, 3, 1, 4)


@pytest.mark.parametrize("indices,axis", [(np.array(1, np.int64), 1), (i64(2, 0, -1), 2), (i64(0), 0)])
def test_gather_constant_indices(indices, axis):
    compare(make_onnx([N("Gather", ["x", "i"], ["y"], axis=axis)], [1, 3, 4], {"i": indices}))


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split(opset):
    if opset < 13:
        split, inits = N("Split", ["x"], ["a", "b"], axis=1, split=[1, 3]), {}
    elif opset < 18:
        split, inits = N("Split", ["x", "sp"], ["a", "b"], axis=1), {"sp": i64(1, 3)}
    else:
        split, inits = N("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), {}
    nodes = [split, N("Relu", ["a"], ["ra"]), N("Concat", ["b", "ra"], ["y"], axis=1)]
    compare(make_onnx(nodes, [1, 4, 2], inits, opset=opset))


def test_expand_tile_constant_node():
    nodes = [N("Constant", [], ["shape"], value=helper.make_tensor("v", 7, [3], [2, 3, 4])),
             N("Expand", ["x", "shape"], ["e"]), N("Tile", ["e", "reps"], ["y"])]
    m = compare(make_onnx(nodes, [1, 3, 1], {"reps": i64(1, 2, 1)}))
    assert m.output_shape == (2, 6, 4)


@pytest.mark.parametrize("op,opset", [("Upsample", 9), ("Resize", 13)])
def test_nearest_upsampling(op, opset):
    scales = np.array([1, 1, 2, 3], np.float32)
    node = N(op, ["x", "sc"], ["y"], mode="nearest") if op == "Upsample" else N(op, ["x", "", "sc"], ["y"], mode="nearest")
    compare(make_onnx([node], [1, 2, 3, 2], {"sc": scales}, opset=opset))


@pytest.mark.parametrize("op,keep,axes", [("ReduceSum", 1, [1]), ("ReduceSum", 0, [1, 2]),
                                          ("ReduceMean", 0, [-1]), ("ReduceMean", 1, None)])
def test_reduce(op, keep, axes):
    attrs = {"keepdims": keep} | ({"axes": axes} if axes else {})
    compare(make_onnx([N(op, ["x"], ["y"], **attrs)], [1, 3, 4, 2], opset=11))


def test_cast_float_is_identity():
    m = compare(make_onnx([N("Cast", ["x"], ["c"], to=1), N("Relu", ["c"], ["y"])], [1, 3]))
    assert ops_of(m) == ["relu"]


@pytest.mark.parametrize("in_shape", [[5], [1], ["batch", 5], [3, 5], [1, 1, 5]])
def test_input_batch_detection(in_shape):
    """[5]/[1]/[3,5] have no batch dim; a symbolic or size-1 first dim is the batch."""
    w = r(5 if in_shape[-1] == 5 else 1, 2)
    m = compare(make_onnx([N("MatMul", ["x", "W"], ["y"])], in_shape, {"W": w}))
    expected = {"[5]": (5,), "[1]": (1,), "['batch', 5]": (5,), "[3, 5]": (3, 5), "[1, 1, 5]": (1, 5)}
    assert m.input_shape == expected[str(in_shape)]


def test_initializers_listed_as_inputs_are_constants():
    """Old exporters list weights as graph inputs too: they stay constants."""
    from onnx import TensorProto, numpy_helper
    w = r(3, 2)
    graph = helper.make_graph([N("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("W", TensorProto.FLOAT, [3, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    m = compare(model.SerializeToString())
    assert m.input_name == "x" and m.input_shape == (3,)


def test_affine_chain_merges_into_linear():
    """Sub/Div normalisation after a Gemm merges into it."""
    nodes = [N("Gemm", ["x", "W", "B"], ["h"], transB=1), N("Sub", ["h", "m"], ["s"]), N("Div", ["s", "d"], ["y"])]
    m = compare(make_onnx(nodes, [1, 4], {"W": r(3, 4), "B": r(3), "m": r(3), "d": np.float32(4.0)}), rtol=1e-5)
    assert ops_of(m) == ["linear"]


def _export(module, x, opset):
    """torch.onnx.export (TorchScript exporter) to bytes."""
    import io

    import torch

    buf = io.BytesIO()
    torch.onnx.export(module.eval(), (x,), buf, opset_version=opset, dynamo=False,
                      input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "batch"}})
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_export_cnn():
    """Conv/BN/MaxPool/AvgPool/Flatten/Linear/LeakyReLU/Hardtanh from torch.onnx.export (opset 13)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, stride=2, padding=(0, 1)), nn.LeakyReLU(0.1), nn.AvgPool2d(2, padding=1),
                        nn.Flatten(), nn.Linear(8, 5), nn.Hardtanh(-0.5, 0.5), nn.Sigmoid())
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    m = compare(_export(net, torch.zeros(1, 3, 8, 8), 13))
    assert m.input_shape == (3, 8, 8) and m.output_shape == (5,)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_export_view_and_residual():
    """x.view(x.size(0), -1) (a Shape subgraph), residual add, cat, tanh; opset 9."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(24, 3)

        def forward(self, x):
            h = x.view(x.size(0), -1)
            z = torch.relu(self.fc1(h)) + h
            return self.fc3(torch.cat([torch.tanh(self.fc2(z)), z - 1.0], dim=1))

    torch.manual_seed(0)
    m = compare(_export(Net(), torch.zeros(1, 3, 4), 9))
    assert m.output_shape == (3,)
