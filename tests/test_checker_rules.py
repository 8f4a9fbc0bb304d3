"""Every Edge TPU rule and limitation, one passing and one failing synthetic model each.

Models are built with ``ModelBuilder`` from generic tensors and ``op()`` calls
so each case controls exactly the option or tensor the rule looks at.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import pytest

from edgetpud.daemon.model.builder import ModelBuilder
from edgetpud.daemon.model.checker import RULES, check_model
from edgetpud.daemon.model.checker.report import OperatorEntry
from edgetpud.daemon.model.tflite import TfliteModel, default_options

I8 = np.int8


def act(b: ModelBuilder, name: str, shape: Sequence[int], dtype=I8, **kw) -> int:
    """A quantized activation tensor."""
    zp = 128 if np.dtype(dtype) == np.uint8 else 0
    if np.dtype(dtype).kind == "f":
        return b.tensor(name, shape, dtype, **kw)
    return b.tensor(name, shape, dtype, 0.05, zp, **kw)


def inp(b: ModelBuilder, name: str, shape: Sequence[int], dtype=I8, **kw) -> int:
    """A quantized model input."""
    zp = 128 if np.dtype(dtype) == np.uint8 else 0
    if np.dtype(dtype).kind == "f":
        return b.input(name, shape, dtype, **kw)
    return b.input(name, shape, dtype, 0.05, zp, **kw)


def opts(op: str, **fields):
    """Default schema options of ``op`` with some fields set."""
    o = default_options(op)
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def ints(b: ModelBuilder, name: str, values) -> int:
    return b.const(name, np.asarray(values, dtype=np.int32))


def weights(b: ModelBuilder, name: str, shape, value: int = 1) -> int:
    return b.const(name, np.full(shape, value, dtype=I8), 0.02, 0)


def bias(b: ModelBuilder, name: str, n: int) -> int:
    return b.const(name, np.zeros([n], dtype=np.int32), 0.001, 0)


def single(op: str, in_shapes: Sequence[Sequence[int]], out_shape: Sequence[int], options=None,
           extra: Optional[Callable[[ModelBuilder], list]] = None, dtype=I8, out_dtype=None) -> bytes:
    """One op whose data inputs are model inputs and whose extra (constant) inputs come from ``extra``."""
    b = ModelBuilder()
    ins = [inp(b, f"x{i}" if i else "x", s, dtype) for i, s in enumerate(in_shapes)]
    if extra is not None:
        ins = ins + extra(b)
    y = act(b, "y", out_shape, out_dtype or dtype)
    b.op(op, ins, [y], options)
    b.output(y)
    return b.build()


def only(data: bytes, runtime: int = 14) -> OperatorEntry:
    report = check_model(data, runtime_version=runtime)
    assert len(report.operators) == 1
    return report.operators[0]


def assert_maps(data: bytes, runtime: int = 14) -> None:
    entry = only(data, runtime)
    assert entry.target == "tpu", entry.reason
    assert entry.reason is None and entry.rule is None


def assert_fails(data: bytes, rule: str, *fragments: str, runtime: int = 14) -> OperatorEntry:
    entry = only(data, runtime)
    assert entry.target == "cpu"
    rules = [f.rule for f in entry.failures]
    assert rule in rules, f"{rule} not in {rules}: {entry.reason}"
    reason = next(f.reason for f in entry.failures if f.rule == rule)
    for fragment in fragments:
        assert fragment in reason, f"{fragment!r} not in {reason!r}"
    return entry


def test_rule_table_reads_like_the_documentation():
    titles = {r.title for r in RULES.ops}
    for title in ("Add", "Conv2d", "DepthwiseConv2d", "LSTM", "Mean", "Squeeze", "StridedSlice", "TransposeConv"):
        assert title in titles
    assert RULES.rule_for("RSQRT").min_runtime == 14
    assert RULES.rule_for("EXPAND_DIMS").min_runtime == 13
    assert RULES.rule_for("EXP") is None
    for rule in RULES.ops:
        for lim in rule.limitations:
            assert lim.text.endswith(".") and callable(lim.check)
    assert [lim.name for lim in RULES.general] == ["eight-bit", "static-shape", "constant-parameters", "at-most-3d"]


# ------------------------------------------------------------------ general rules
def test_eight_bit_passes_int8():
    assert_maps(single("ADD", [[1, 8, 8, 3], [1, 8, 8, 3]], [1, 8, 8, 3]))


def test_eight_bit_passes_uint8():
    assert_maps(single("ADD", [[1, 8, 8, 3], [1, 8, 8, 3]], [1, 8, 8, 3], dtype=np.uint8))


def test_eight_bit_fails_float():
    entry = assert_fails(single("ADD", [[1, 8, 8, 3], [1, 8, 8, 3]], [1, 8, 8, 3], dtype=np.float32),
                         "eight-bit", "'x'", "float32", "int8 or uint8")
    assert entry.status == "Operation is working on an unsupported data type"


def test_eight_bit_fails_int16_activations():
    assert_fails(single("ADD", [[1, 8], [1, 8]], [1, 8], dtype=np.int16), "eight-bit", "int16")


def test_eight_bit_allows_int32_bias_but_not_float_weights():
    def conv(weight_dtype) -> bytes:
        b = ModelBuilder()
        x = inp(b, "x", [1, 8, 8, 3])
        if weight_dtype == np.float32:
            w = b.const("w", np.ones([4, 3, 3, 3], np.float32))
        else:
            w = weights(b, "w", [4, 3, 3, 3])
        y = b.conv2d(x, w, bias(b, "b", 4))
        b.output(y)
        return b.build()

    assert_maps(conv(I8))
    assert_fails(conv(np.float32), "eight-bit", "filter tensor 'w' (input 1) is float32")


def test_static_shape_passes():
    assert_maps(single("RELU", [[1, 8, 8, 3]], [1, 8, 8, 3]))


def test_static_shape_fails_dynamic_batch():
    b = ModelBuilder()
    x = inp(b, "x", [1, 8, 8, 3], shape_signature=[-1, 8, 8, 3])
    y = act(b, "y", [1, 8, 8, 3], shape_signature=[-1, 8, 8, 3])
    b.op("RELU", [x], [y])
    b.output(y)
    assert_fails(b.build(), "static-shape", "'x'", "dynamic shape", "[-1,8,8,3]")


def _conv_with_bias(bias_from_input: bool) -> bytes:
    b = ModelBuilder()
    x = inp(b, "x", [1, 8, 8, 3])
    w = weights(b, "w", [4, 3, 3, 3])
    bb = b.input("b", [4], np.int32, 0.001, 0) if bias_from_input else bias(b, "b", 4)
    y = b.conv2d(x, w, bb)
    b.output(y)
    return b.build()


def test_constant_parameters_passes_constant_bias():
    assert_maps(_conv_with_bias(False))


def test_constant_parameters_fails_bias_from_input():
    assert_fails(_conv_with_bias(True), "constant-parameters", "bias tensor 'b' (input 2)",
                 "not constant", "model input")


def test_constant_parameters_fails_computed_axis():
    b = ModelBuilder()
    x = inp(b, "x", [1, 8, 8, 4])
    a0 = b.input("a0", [2], np.int32)
    axis = b.tensor("axis", [2], np.int32)
    b.op("RELU", [a0], [axis])  # the axis is computed at run time
    y = act(b, "y", [1, 1, 1, 4])
    b.op("MEAN", [x, axis], [y], opts("MEAN", keepDims=True))
    b.output(y)
    report = check_model(b.build())
    mean = report.operators[1]
    assert "constant-parameters" in [f.rule for f in mean.failures]
    assert "computed by op 0 (RELU)" in " ".join(f.reason for f in mean.failures)


def test_rank_passes_5d_with_outer_ones():
    assert_maps(single("ADD", [[1, 1, 2, 8, 8], [1, 1, 2, 8, 8]], [1, 1, 2, 8, 8]))


def test_rank_fails_size_outside_three_innermost():
    entry = assert_fails(single("ADD", [[2, 2, 1, 8, 8], [2, 2, 1, 8, 8]], [2, 2, 1, 8, 8]),
                         "at-most-3d", "'x'", "5 dimensions", "[2,2,1,8,8]")
    assert entry.status.startswith("Tensor has unsupported rank")


def test_rank_exempts_constant_weights_with_a_note():
    report = check_model(_conv_with_bias(False))
    assert report.verdict == "full"
    assert any(n["key"] == "rank-weights" and "[4,3,3,3]" in n["text"] for n in report.notes)


# ------------------------------------------------------------------ supported operations
UNARY_OPS = ["LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1", "L2_NORMALIZATION", "RSQRT"]
BINARY_OPS = ["ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE"]


@pytest.mark.parametrize("op", UNARY_OPS)
def test_unary_ops_map(op):
    assert_maps(single(op, [[1, 4, 4, 8]], [1, 4, 4, 8]))


@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary_ops_map(op):
    assert_maps(single(op, [[1, 4, 4, 8], [1, 4, 4, 8]], [1, 4, 4, 8]))


@pytest.mark.parametrize("op", ["EXP", "SIN", "GATHER", "ARG_MAX"])
def test_unsupported_builtin_ops_fail(op):
    entry = assert_fails(single(op, [[1, 8]], [1, 8]), "supported-ops", op, "not in the Edge TPU's list")
    assert entry.status == "Operation not supported"


def test_custom_op_fails():
    b = ModelBuilder()
    x = inp(b, "x", [1, 8])
    y = act(b, "y", [1, 8])
    b.custom("MyCustomOp", [x], [y])
    b.output(y)
    assert_fails(b.build(), "supported-ops", "custom op 'MyCustomOp'")


def test_unknown_builtin_code_fails():
    model = TfliteModel.read(single("RELU", [[1, 8]], [1, 8]))
    model.raw.operatorCodes[0].builtinCode = 250
    model.raw.operatorCodes[0].deprecatedBuiltinCode = 127
    assert_fails(model.to_bytes(), "supported-ops", "code 250", "unknown")


def test_space_to_depth_and_slice_map():
    assert_maps(single("SPACE_TO_DEPTH", [[1, 4, 4, 2]], [1, 2, 2, 8], opts("SPACE_TO_DEPTH", blockSize=2)))
    assert_maps(single("SLICE", [[1, 4, 4, 8]], [1, 2, 2, 8],
                       extra=lambda b: [ints(b, "begin", [0, 1, 1, 0]), ints(b, "size", [1, 2, 2, 8])]))


# ------------------------------------------------------------------ runtime-version gated ops
def _expand_dims() -> bytes:
    return single("EXPAND_DIMS", [[4, 8]], [1, 4, 8], extra=lambda b: [ints(b, "axis", [0])])


def _transpose() -> bytes:
    return single("TRANSPOSE", [[1, 4, 8]], [1, 8, 4], extra=lambda b: [ints(b, "perm", [0, 2, 1])])


def _sum() -> bytes:
    return single("SUM", [[1, 4, 4, 8]], [1, 1, 1, 8], opts("SUM", keepDims=True),
                  extra=lambda b: [ints(b, "axis", [1, 2])])


def _reduce(op: str, axes=(1, 2)) -> Callable[[], bytes]:
    return lambda: single(op, [[1, 4, 4, 8]], [1, 1, 1, 8], opts(op, keepDims=True),
                          extra=lambda b: [ints(b, "axis", list(axes))])


def _pack(axis: int = 1) -> bytes:
    """Two [3,4] tensors packed along axis 1 -> [3,2,4]; axis 0 packs one [3,4,4] -> [1,3,4,4] (batch)."""
    if axis == 0:
        return single("PACK", [[3, 4, 4]], [1, 3, 4, 4], opts("PACK", valuesCount=1, axis=0))
    return single("PACK", [[3, 4], [3, 4]], [3, 2, 4], opts("PACK", valuesCount=2, axis=axis))


def _prelu(alpha_shape=(1, 1, 8)) -> bytes:
    return single("PRELU", [[1, 4, 4, 8]], [1, 4, 4, 8],
                  extra=lambda b: [weights(b, "alpha", list(alpha_shape))])


def _requantize() -> bytes:
    return single("QUANTIZE", [[1, 8]], [1, 8], dtype=np.uint8, out_dtype=I8)


def _transpose_conv() -> bytes:
    return single("TRANSPOSE_CONV", [], [1, 8, 8, 4], opts("TRANSPOSE_CONV", strideH=2, strideW=2),
                  extra=lambda b: [ints(b, "output_shape", [1, 8, 8, 4]), weights(b, "w", [4, 3, 3, 2]),
                                   inp(b, "x", [1, 4, 4, 2])])


def _lstm(op: str = "UNIDIRECTIONAL_SEQUENCE_LSTM") -> bytes:
    """A small integer LSTM: 8-bit weights, int32 biases, variable int8/int16 states."""
    b = ModelBuilder()
    x = inp(b, "x", [1, 4, 8])
    ins = [x]
    ins += [weights(b, f"w{i}", [6, 8]) for i in range(4)]
    ins += [weights(b, f"r{i}", [6, 6]) for i in range(4)]
    ins += [-1, -1, -1]
    ins += [bias(b, f"b{i}", 6) for i in range(4)]
    ins += [-1, -1]
    m = b.model
    ins.append(m.add_tensor("h", [1, 6], I8, scale=0.01, zero_point=0, is_variable=True))
    ins.append(m.add_tensor("c", [1, 6], np.int16, scale=0.0002, zero_point=0, is_variable=True))
    ins += [-1, -1, -1, -1]
    y = act(b, "y", [1, 4, 6])
    b.op(op, ins, [y])
    b.output(y)
    return b.build()


GATED = [
    ("EXPAND_DIMS", 13, _expand_dims),
    ("PACK", 13, _pack),
    ("PRELU", 13, _prelu),
    ("QUANTIZE", 13, _requantize),
    ("SUM", 13, _sum),
    ("TRANSPOSE_CONV", 13, _transpose_conv),
    ("REDUCE_MAX", 14, _reduce("REDUCE_MAX")),
    ("REDUCE_MIN", 14, _reduce("REDUCE_MIN")),
    ("RSQRT", 14, lambda: single("RSQRT", [[1, 8]], [1, 8])),
    ("SQUARED_DIFFERENCE", 14, lambda: single("SQUARED_DIFFERENCE", [[1, 8], [1, 8]], [1, 8])),
    ("TRANSPOSE", 14, _transpose),
    ("UNIDIRECTIONAL_SEQUENCE_LSTM", 14, _lstm),
]


@pytest.mark.parametrize("op,version,make", GATED, ids=[g[0] for g in GATED])
def test_runtime_gated_op_maps_from_its_version(op, version, make):
    assert_maps(make(), runtime=version)


@pytest.mark.parametrize("op,version,make", GATED, ids=[g[0] for g in GATED])
def test_runtime_gated_op_fails_before_its_version(op, version, make):
    entry = assert_fails(make(), "runtime-version", f"runtime {version} or newer",
                         f"checking for runtime {version - 1}", runtime=version - 1)
    assert entry.op == op


def test_lstm_int16_cell_state_maps_with_a_note():
    report = check_model(_lstm())
    assert report.verdict == "full"
    assert any(n["key"] == "int16-lstm-state" and "'c'" in n["text"] for n in report.notes)


def test_lstm_unidirectional_only():
    assert_fails(_lstm("BIDIRECTIONAL_SEQUENCE_LSTM"), "LSTM.unidirectional-only", "bidirectional")


# ------------------------------------------------------------------ op limitations
@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_pooling_without_fused_activation_maps(op):
    o = opts(op, filterHeight=2, filterWidth=2, strideH=2, strideW=2)
    assert_maps(single(op, [[1, 4, 4, 8]], [1, 2, 2, 8], o))


@pytest.mark.parametrize("op,title", [("AVERAGE_POOL_2D", "AveragePool2d"), ("MAX_POOL_2D", "MaxPool2d")])
def test_pooling_with_fused_activation_fails(op, title):
    o = opts(op, filterHeight=2, filterWidth=2, strideH=2, strideW=2, fusedActivationFunction=3)
    assert_fails(single(op, [[1, 4, 4, 8]], [1, 2, 2, 8], o), f"{title}.no-fused-activation", "RELU6")


def test_concatenation_plain_maps():
    assert_maps(single("CONCATENATION", [[1, 4, 4, 3], [1, 4, 4, 5]], [1, 4, 4, 8], opts("CONCATENATION", axis=3)))


def test_concatenation_fused_activation_fails():
    o = opts("CONCATENATION", axis=3, fusedActivationFunction=1)
    assert_fails(single("CONCATENATION", [[1, 4, 4, 3], [1, 4, 4, 5]], [1, 4, 4, 8], o),
                 "Concatenation.no-fused-activation", "RELU")


def _concat_const(values, n_inputs: int = 2) -> bytes:
    def extra(b):
        return [b.const("c", np.full([1, 4, 4, 2], values, dtype=I8), 0.05, 0)]
    shapes = [[1, 4, 4, 3]] * (n_inputs - 1)
    return single("CONCATENATION", shapes, [1, 4, 4, 3 * (n_inputs - 1) + 2], opts("CONCATENATION", axis=3),
                  extra=extra)


def test_concatenation_constant_zeros_of_two_inputs_maps():
    assert_maps(_concat_const(0))


def test_concatenation_constant_not_zeros_fails():
    assert_fails(_concat_const(3), "Concatenation.constant-only-zeros-pair", "'c'", "not all zeros",
                 "32 of 32")


def test_concatenation_constant_among_three_inputs_fails():
    assert_fails(_concat_const(0, n_inputs=3), "Concatenation.constant-only-zeros-pair", "one of 3 inputs")


def _conv(dilation, op: str = "CONV_2D") -> bytes:
    b = ModelBuilder()
    x = inp(b, "x", [1, 16, 16, 4])
    if op == "CONV_2D":
        y = b.conv2d(x, weights(b, "w", [4, 3, 3, 4]), bias(b, "b", 4), dilation=dilation)
    else:
        y = b.depthwise_conv2d(x, weights(b, "w", [1, 3, 3, 4]), bias(b, "b", 4), dilation=dilation)
    b.output(y)
    return b.build()


def test_conv2d_same_dilation_maps():
    assert_maps(_conv((2, 2)))


def test_conv2d_different_dilation_fails():
    assert_fails(_conv((1, 2)), "Conv2d.same-dilation-xy", "dilation_w_factor=2", "dilation_h_factor=1")


def test_depthwise_runtime12_undilated_maps():
    assert_maps(_conv(1, "DEPTHWISE_CONV_2D"), runtime=12)


def test_depthwise_runtime12_dilated_fails():
    assert_fails(_conv((2, 2), "DEPTHWISE_CONV_2D"), "DepthwiseConv2d.no-dilation", "dilation is 2x2", runtime=12)


def test_depthwise_runtime13_same_dilation_maps():
    assert_maps(_conv((2, 2), "DEPTHWISE_CONV_2D"), runtime=13)


def test_depthwise_runtime13_different_dilation_fails():
    assert_fails(_conv((2, 1), "DEPTHWISE_CONV_2D"), "DepthwiseConv2d.same-dilation-xy",
                 "dilation_w_factor=1, dilation_h_factor=2", runtime=13)


def _fc(out_rows: int = 1, weights_format: int = 0) -> bytes:
    b = ModelBuilder()
    x = inp(b, "x", [out_rows, 16])
    y = act(b, "y", [out_rows, 10])
    b.op("FULLY_CONNECTED", [x, weights(b, "w", [10, 16]), bias(b, "b", 10)], [y],
         opts("FULLY_CONNECTED", weightsFormat=weights_format))
    b.output(y)
    return b.build()


def test_fully_connected_default_format_vector_output_maps():
    assert_maps(_fc())


def test_fully_connected_shuffled_weights_fail():
    assert_fails(_fc(weights_format=1), "FullyConnected.default-weights-format", "SHUFFLED4x16INT8")


def test_fully_connected_batched_output_fails():
    assert_fails(_fc(out_rows=4), "FullyConnected.one-d-output", "'y'", "[4,10]", "2 dimensions with size > 1")


def test_fully_connected_effectively_1d_output_is_noted():
    report = check_model(_fc())
    assert any(n["key"] == "effective-1d:FULLY_CONNECTED" and "[1,10]" in n["text"] for n in report.notes)


def _mean(axes, channels: int = 8) -> bytes:
    out = [1 if i in axes else d for i, d in enumerate([1, 4, 4, channels])]
    return single("MEAN", [[1, 4, 4, channels]], out, opts("MEAN", keepDims=True),
                  extra=lambda b: [ints(b, "axis", list(axes))])


def test_mean_runtime12_xy_maps():
    assert_maps(_mean([1, 2]), runtime=12)


def test_mean_runtime12_z_fails():
    assert_fails(_mean([3]), "Mean.reduces-xy-only", "3 (z)", "[1,4,4,8]", runtime=12)


def test_mean_runtime13_batch_fails():
    assert_fails(_mean([0, 1]), "Mean.reduces-not-batch", "axis 0 (batch)", runtime=13)


def test_mean_runtime13_z_multiple_of_4_maps():
    assert_maps(_mean([3], channels=8), runtime=13)


def test_mean_runtime13_z_not_multiple_of_4_fails():
    assert_fails(_mean([3], channels=6), "Mean.z-reduction-multiple-of-4", "z = 6", runtime=13)


def test_pack_outside_batch_maps():
    assert_maps(_pack(axis=1))


def test_pack_in_batch_dimension_fails():
    assert_fails(_pack(axis=0), "Pack.packs-not-batch", "axis 0 (batch)", "[1,3,4,4]")


def _pad(paddings) -> bytes:
    shape = [1, 4, 4, 8]
    out = [d + lo + hi for d, (lo, hi) in zip(shape, paddings)]
    return single("PAD", [shape], out, extra=lambda b: [ints(b, "paddings", paddings)])


def test_pad_runtime12_xy_maps():
    assert_maps(_pad([[0, 0], [1, 1], [1, 1], [0, 0]]), runtime=12)


def test_pad_runtime12_z_fails():
    assert_fails(_pad([[0, 0], [0, 0], [0, 0], [0, 4]]), "Pad.pads-xy-only", "3 (z)", runtime=12)


def test_pad_runtime13_z_maps():
    assert_maps(_pad([[0, 0], [0, 0], [0, 0], [0, 4]]), runtime=13)


def test_pad_runtime13_batch_fails():
    assert_fails(_pad([[1, 0], [0, 0], [0, 0], [0, 0]]), "Pad.pads-not-batch", "axis 0 (batch)", runtime=13)


def test_prelu_alpha_2d_fails():
    assert_fails(_prelu((1, 4, 8)), "PReLU.one-d-alpha", "'alpha'", "[1,4,8]")


@pytest.mark.parametrize("op,title", [("REDUCE_MAX", "ReduceMax"), ("REDUCE_MIN", "ReduceMin"), ("SUM", "Sum")])
def test_reductions_over_batch_fail(op, title):
    assert_fails(_reduce(op, axes=(0,))(), f"{title}.reduces-not-batch", "axis 0 (batch)")


def test_reshape_small_maps_without_warning():
    b = ModelBuilder()
    y = b.reshape(inp(b, "x", [1, 4, 4, 8]), [1, 128])
    b.output(y)
    report = check_model(b.build())
    assert report.verdict == "full" and report.warnings == []


def test_reshape_large_maps_with_a_warning():
    b = ModelBuilder()
    y = b.reshape(inp(b, "x", [1, 1024, 1024, 2]), [1, 2048, 1024])
    b.output(y)
    report = check_model(b.build())
    assert report.verdict == "full"
    assert any("large reshapes" in w and "2,097,152" in w for w in report.warnings)


@pytest.mark.parametrize("op", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize_image_maps_with_precision_warning(op):
    report = check_model(single(op, [[1, 4, 4, 3]], [1, 8, 8, 3], extra=lambda b: [ints(b, "size", [8, 8])]))
    assert report.verdict == "full"
    assert any(op in w and "precision" in w for w in report.warnings)


@pytest.mark.parametrize("op,title", [("RESIZE_BILINEAR", "ResizeBilinear"),
                                      ("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighbor")])
def test_resize_non_image_fails(op, title):
    data = single(op, [[1, 1, 4, 4, 3]], [1, 1, 8, 8, 3], extra=lambda b: [ints(b, "size", [8, 8])])
    assert_fails(data, f"{title}.image-3d-io", "'x'", "[1,1,4,4,3]")
    assert not any("precision" in w for w in check_model(data).warnings)


def test_softmax_vector_maps():
    assert_maps(single("SOFTMAX", [[1, 16000]], [1, 16000]))


def test_softmax_batched_fails():
    assert_fails(single("SOFTMAX", [[2, 10]], [2, 10]), "Softmax.one-d-input", "'x'", "[2,10]")


def test_softmax_too_large_fails():
    assert_fails(single("SOFTMAX", [[1, 16001]], [1, 16001]), "Softmax.at-most-16000-elements", "16,001")


def _split(axis: int, shape=(1, 8, 8, 4)) -> bytes:
    b = ModelBuilder()
    a = ints(b, "axis", [axis])
    x = inp(b, "x", list(shape))
    out_shape = list(shape)
    n = 2 if shape[axis] % 2 == 0 and shape[axis] > 1 else 1
    out_shape[axis] //= n
    ys = [act(b, f"y{i}", out_shape) for i in range(n)]
    b.op("SPLIT", [a, x], ys, opts("SPLIT", numSplits=n))
    b.output(*ys)
    return b.build()


def test_split_channels_maps():
    assert_maps(_split(3))


def test_split_batch_fails():
    assert_fails(_split(0), "Split.splits-not-batch", "axis 0 (batch)", "'x'")


def _squeeze(in_shape, dims) -> bytes:
    out = [d for i, d in enumerate(in_shape) if i not in dims]
    return single("SQUEEZE", [in_shape], out, opts("SQUEEZE", squeezeDims=list(dims)))


def test_squeeze_runtime12_leading_ones_maps():
    assert_maps(_squeeze([1, 1, 8], [0, 1]), runtime=12)


def test_squeeze_runtime12_inner_one_fails():
    assert_fails(_squeeze([1, 8, 1], [2]), "Squeeze.squeezes-leading-ones-only", "[2]", "[1,8,1]", runtime=12)


def test_squeeze_runtime13_inner_one_maps():
    assert_maps(_squeeze([1, 8, 1], [2]), runtime=13)


def _strided_slice(strides=(1, 1, 1, 1), **fields) -> bytes:
    out = [1] + [4 // s for s in strides[1:]]
    return single("STRIDED_SLICE", [[1, 4, 4, 4]], out, opts("STRIDED_SLICE", **fields),
                  extra=lambda b: [ints(b, "begin", [0, 0, 0, 0]), ints(b, "end", [1, 4, 4, 4]),
                                   ints(b, "strides", list(strides))])


def test_strided_slice_stride_1_maps():
    assert_maps(_strided_slice())


def test_strided_slice_stride_2_fails():
    assert_fails(_strided_slice((1, 2, 2, 1)), "StridedSlice.strides-all-one", "[1,2,2,1]")


def test_strided_slice_ellipsis_fails():
    assert_fails(_strided_slice(ellipsisMask=2), "StridedSlice.no-ellipsis-mask", "ellipsis_mask is 2")


def test_strided_slice_new_axis_fails():
    assert_fails(_strided_slice(newAxisMask=1), "StridedSlice.no-new-axis-mask", "new_axis_mask is 1")


# ------------------------------------------------------------------ float I/O
def _float_io(quantize_input_is_model_input: bool = True) -> bytes:
    b = ModelBuilder()
    x = inp(b, "x", [1, 8], np.float32)
    if not quantize_input_is_model_input:
        x2 = b.tensor("x_abs", [1, 8], np.float32)
        b.op("ABS", [x], [x2])
        x = x2
    q = act(b, "xq", [1, 8])
    b.op("QUANTIZE", [x], [q])
    r = act(b, "r", [1, 8])
    b.op("RELU", [q], [r])
    y = b.tensor("y", [1, 8], np.float32)
    b.op("DEQUANTIZE", [r], [y])
    b.output(y)
    return b.build()


def test_float_io_quantize_and_dequantize_stay_on_cpu_without_a_cut():
    report = check_model(_float_io())
    assert report.verdict == "full"
    assert [(e.op, e.target, e.boundary) for e in report.operators] == [
        ("QUANTIZE", "cpu", True), ("RELU", "tpu", False), ("DEQUANTIZE", "cpu", True)]
    assert report.cut_point is None
    assert any(w.startswith("float I/O adds a CPU quantize/dequantize") for w in report.warnings)
    assert "'x'" in report.operators[0].reason and "'y'" in report.operators[2].reason


def test_float_quantize_in_the_middle_is_a_float_op():
    report = check_model(_float_io(quantize_input_is_model_input=False))
    assert report.verdict == "none"
    abs_op, quantize = report.operators[0], report.operators[1]
    assert abs_op.rule == "supported-ops"
    assert quantize.target == "cpu" and not quantize.boundary
    assert "eight-bit" in [f.rule for f in quantize.failures]


# ------------------------------------------------------------------ partitioning (the cut)
def chain(*steps: Tuple[str, str]) -> bytes:
    """Input ``x`` [1,8] through one-input ops in a row, each ``(op, output name)``.

    The cut follows data flow, so these tests need each op fed by the one before and
    the tensor names the reasons quote.
    """
    b = ModelBuilder()
    t = inp(b, "x", [1, 8])
    for op, name in steps:
        out = act(b, name, [1, 8])
        b.op(op, [t], [out])
        t = out
    b.output(t)
    return b.build()


def test_supported_op_after_an_unsupported_one_stays_on_cpu():
    report = check_model(chain(("RELU", "a"), ("EXP", "e"), ("TANH", "y")))
    assert report.verdict == "partial"
    assert [e.target for e in report.operators] == ["tpu", "cpu", "cpu"]
    tanh = report.operators[2]
    assert tanh.rule == "cut" and tanh.status == "More than one subgraph is not supported"
    assert "'e'" in tanh.reason and "op 1 (EXP)" in tanh.reason
    assert report.cut_point.index == 1 and report.cut_point.op == "EXP"
    assert report.to_dict()["summary"] == {"tpu_ops": 1, "cpu_ops": 2, "total_ops": 3, "boundary_ops": 0}


def test_cut_reason_names_the_first_unmapped_op_upstream():
    report = check_model(chain(("EXP", "e"), ("TANH", "t"), ("RELU", "y")))
    assert report.verdict == "none"
    assert "op 1 (TANH), downstream of op 0 (EXP)" in report.operators[2].reason


def test_side_branch_after_an_unsupported_op_still_maps():
    """Data flow, not list order: RELU comes after EXP in the list but does not depend on it."""
    b = ModelBuilder()
    x = inp(b, "x", [1, 8])
    c = act(b, "c", [1, 8])
    b.op("TANH", [x], [c])
    side = act(b, "side", [1, 8])
    b.op("EXP", [c], [side])
    main = act(b, "main", [1, 8])
    b.op("RELU", [c], [main])
    joined = act(b, "joined", [1, 8])
    b.op("ADD", [main, side], [joined])
    b.output(main, joined)
    report = check_model(b.build())
    assert [(e.op, e.target) for e in report.operators] == [
        ("TANH", "tpu"), ("EXP", "cpu"), ("RELU", "tpu"), ("ADD", "cpu")]
    assert report.operators[3].rule == "cut" and "'side'" in report.operators[3].reason
    assert report.verdict == "partial" and report.cut_point.op == "EXP"


def test_op_types_table_groups_by_status():
    rows = check_model(chain(("RELU", "a"), ("EXP", "e"), ("RELU", "y"))).op_types()
    assert rows == [
        {"operator": "RELU", "count": 1, "status": "Mapped to Edge TPU"},
        {"operator": "EXP", "count": 1, "status": "Operation not supported"},
        {"operator": "RELU", "count": 1, "status": "More than one subgraph is not supported"},
    ]


def test_check_model_accepts_a_tflite_model_and_rejects_bad_runtime():
    model = TfliteModel.read(single("RELU", [[1, 8]], [1, 8]))
    assert check_model(model).verdict == "full"
    with pytest.raises(ValueError):
        check_model(model, runtime_version=0)


def test_malformed_parameters_give_a_reason_not_a_traceback():
    """Paddings with an odd count cannot be read as (before, after) pairs: the op stays on the CPU."""
    data = single("PAD", [[1, 4, 4, 8]], [1, 6, 6, 8], extra=lambda b: [ints(b, "paddings", [0, 1, 1])])
    assert_fails(data, "Pad.pads-not-batch", "cannot evaluate this limitation")


# ------------------------------------------------------------------ observed on edgetpu_compiler 16
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"


def _cast_prefix(cast_also_feeds_abs: bool = False, cast_to=np.float32, tail: Sequence[str] = ()) -> bytes:
    """MoveNet's input side: uint8 input, CAST to float, QUANTIZE to int8, then RELU (and ``tail`` ops)."""
    b = ModelBuilder()
    x = inp(b, "image", [1, 8, 8, 3], np.uint8)
    f = b.tensor("image_f", [1, 8, 8, 3], cast_to)
    b.op("CAST", [x], [f])
    q = act(b, "image_q", [1, 8, 8, 3])
    b.op("QUANTIZE", [f], [q])
    t = act(b, "r", [1, 8, 8, 3])
    b.op("RELU", [q], [t])
    for i, op in enumerate(tail):
        out = act(b, f"tail{i}", [1, 8, 8, 3])
        b.op(op, [t], [out])
        t = out
    outputs = [t]
    if cast_also_feeds_abs:
        side = b.tensor("image_abs", [1, 8, 8, 3], cast_to)
        b.op("ABS", [f], [side])
        outputs.append(side)
    b.output(*outputs)
    return b.build()


def test_leading_cast_and_quantize_run_on_cpu_without_a_cut():
    report = check_model(_cast_prefix())
    assert [(e.op, e.target, e.boundary, e.rule) for e in report.operators] == [
        ("CAST", "cpu", True, "input-cast"), ("QUANTIZE", "cpu", True, "input-cast"),
        ("RELU", "tpu", False, None)]
    assert report.verdict == "full" and report.cut_point is None
    assert "'image'" in report.operators[0].reason and "uint8" in report.operators[0].reason
    assert [e.compiler_status for e in report.operators] == [
        "Operation not supported", UNSPECIFIED, "Mapped to Edge TPU"]


def test_cast_prefix_is_marked_as_observed_on_compiler_16():
    report = check_model(_cast_prefix())
    assert report.operators[0].evidence.observed and report.operators[0].evidence.compiler == "16"
    observed = report.to_dict()["observed_rules"]
    assert [(r["rule"], r["compiler_version"], r["ops"]) for r in observed] == [("input-cast", "16", [0, 1])]
    assert "MoveNet" in observed[0]["seen_in"] and observed[0]["basis"] == "observed"
    assert report.to_dict()["operators"][2]["basis"]["basis"] == "documented"


def test_cast_prefix_then_unsupported_op_cuts_there_not_at_the_cast():
    """MoveNet compiles to CAST, QUANTIZE, edgetpu-custom-op, ARG_MAX: the cut is the ARG_MAX."""
    report = check_model(_cast_prefix(tail=("TANH", "ARG_MAX", "RELU")))
    assert [e.target for e in report.operators] == ["cpu", "cpu", "tpu", "tpu", "cpu", "cpu"]
    assert report.verdict == "partial" and report.cut_point.op == "ARG_MAX"


def test_cast_that_also_feeds_another_op_is_not_a_prefix():
    report = check_model(_cast_prefix(cast_also_feeds_abs=True))
    cast, quantize = report.operators[0], report.operators[1]
    assert not cast.boundary and cast.rule == "supported-ops"
    assert quantize.target == "cpu" and not quantize.boundary and quantize.rule == "eight-bit"
    assert report.verdict == "none" and report.cut_point.op == "CAST"


def test_cast_to_an_integer_is_not_a_prefix():
    report = check_model(_cast_prefix(cast_to=np.int32))
    assert not report.operators[0].boundary and report.cut_point.op == "CAST"
    assert report.verdict == "none"


def test_cast_of_a_wide_integer_input_is_not_a_prefix():
    """MoveNet's cast reads a uint8 image; an int32 input is not what was seen."""
    b = ModelBuilder()
    x = b.input("ids", [1, 8], np.int32)
    f = b.tensor("f", [1, 8], np.float32)
    b.op("CAST", [x], [f])
    q = act(b, "q", [1, 8])
    b.op("QUANTIZE", [f], [q])
    b.output(q)
    report = check_model(b.build())
    assert [e.boundary for e in report.operators] == [False, False]
    assert report.cut_point.op == "CAST" and report.verdict == "none"


def test_cast_of_a_computed_tensor_cuts():
    b = ModelBuilder()
    x = inp(b, "x", [1, 8])
    r = act(b, "r", [1, 8])
    b.op("RELU", [x], [r])
    f = b.tensor("f", [1, 8], np.float32)
    b.op("CAST", [r], [f])
    q = act(b, "q", [1, 8])
    b.op("QUANTIZE", [f], [q])
    b.output(q)
    report = check_model(b.build())
    assert [(e.target, e.boundary) for e in report.operators] == [("tpu", False), ("cpu", False), ("cpu", False)]
    assert report.cut_point.op == "CAST" and report.verdict == "partial"


def test_float_dequantize_logs_unsupported_data_type():
    report = check_model(_float_io())
    assert report.operators[2].compiler_status == "Operation is working on an unsupported data type"
    assert report.operators[0].compiler_status == UNSPECIFIED
    assert not report.operators[0].evidence.observed  # the float-input quantize is documented


def _resize(in_hw: Tuple[int, int], out_hw: Tuple[int, int], op: str = "RESIZE_BILINEAR", channels: int = 8) -> bytes:
    options = opts(op, alignCorners=True) if op == "RESIZE_BILINEAR" else None
    return single(op, [[1, *in_hw, channels]], [1, *out_hw, channels], options,
                  extra=lambda b: [ints(b, "size", list(out_hw))])


def test_resize_bilinear_from_a_single_pixel_stays_on_cpu():
    entry = assert_fails(_resize((1, 1), (33, 33)), "ResizeBilinear.not-from-single-pixel",
                         "single pixel", "[1,1,1,8] -> [1,33,33,8]")
    assert entry.rule == "ResizeBilinear.not-from-single-pixel"
    assert entry.status == UNSPECIFIED
    assert entry.evidence.observed and "[1,1,1,256]" in entry.evidence.seen_in
    assert entry.uncertain is None  # a shape rule, not a threshold


def test_resize_bilinear_identity_maps_without_doubt():
    report = check_model(_resize((33, 33), (33, 33)))
    assert report.verdict == "full" and report.uncertain_ops() == []


def test_resize_bilinear_large_factor_stays_on_cpu_and_says_it_is_uncertain():
    entry = assert_fails(_resize((2, 2), (31, 31)), "ResizeBilinear.factor-below-cpu-threshold",
                         "x15.5", "prediction may differ")
    assert entry.uncertain and "x15.5" in entry.uncertain


def test_resize_bilinear_factor_just_below_threshold_maps_with_a_doubt():
    report = check_model(_resize((2, 2), (30, 30)))
    assert report.verdict == "full"
    doubts = report.uncertain_ops()
    assert [(d["op"], d["target"]) for d in doubts] == [("RESIZE_BILINEAR", "tpu")]
    assert "x15" in doubts[0]["text"] and "may differ" in doubts[0]["text"]
    assert any("x15" in w and "may differ" in w for w in report.warnings)


def test_resize_bilinear_two_times_maps():
    report = check_model(_resize((16, 16), (32, 32)))
    assert report.verdict == "full" and report.operators[0].failures == []


def test_resize_nearest_neighbor_from_a_single_pixel_still_maps():
    """The single-pixel rule was seen on RESIZE_BILINEAR only: it is not extended to other resizes."""
    report = check_model(_resize((1, 1), (33, 33), op="RESIZE_NEAREST_NEIGHBOR"))
    assert report.verdict == "full"


def _deeplab_pooling_branch() -> bytes:
    """DeepLab's image pooling: MEAN to one pixel, RESIZE_BILINEAR back, CONCATENATION with the features."""
    b = ModelBuilder()
    x = inp(b, "features", [1, 8, 8, 4])
    pooled = b.mean(x, [1, 2], keep_dims=True, name="pooled")
    up = act(b, "upsampled", [1, 8, 8, 4])
    b.op("RESIZE_BILINEAR", [pooled, ints(b, "size", [8, 8])], [up], opts("RESIZE_BILINEAR", alignCorners=True))
    side = act(b, "side", [1, 8, 8, 4])
    b.op("RELU", [x], [side])
    joined = act(b, "joined", [1, 8, 8, 8])
    b.op("CONCATENATION", [side, up], [joined], opts("CONCATENATION", axis=3))
    y = act(b, "logits", [1, 8, 8, 8])
    b.op("RELU", [joined], [y])
    b.output(y)
    return b.build()


def test_everything_downstream_of_a_cpu_resize_runs_on_cpu():
    report = check_model(_deeplab_pooling_branch())
    assert [(e.op, e.target, e.rule) for e in report.operators] == [
        ("MEAN", "tpu", None),
        ("RESIZE_BILINEAR", "cpu", "ResizeBilinear.not-from-single-pixel"),
        ("RELU", "tpu", None),
        ("CONCATENATION", "cpu", "cut"),
        ("RELU", "cpu", "cut"),
    ]
    assert report.verdict == "partial" and report.cut_point.op == "RESIZE_BILINEAR"
    assert "downstream of op 1 (RESIZE_BILINEAR)" in report.operators[4].reason
    assert report.operators[4].compiler_status == "More than one subgraph is not supported"


def test_cut_after_a_threshold_resize_is_uncertain_downstream_too():
    b = ModelBuilder()
    x = inp(b, "x", [1, 2, 2, 4])
    up = act(b, "up", [1, 31, 31, 4])
    b.op("RESIZE_BILINEAR", [x, ints(b, "size", [31, 31])], [up])
    y = act(b, "y", [1, 31, 31, 4])
    b.op("RELU", [up], [y])
    b.output(y)
    doubts = check_model(b.build()).uncertain_ops()
    assert [(d["index"], d["target"]) for d in doubts] == [(0, "cpu"), (1, "cpu")]
    assert "op 0 (RESIZE_BILINEAR)" in doubts[1]["text"]


def _tile(multiples, in_shape=(1, 1, 1, 8)) -> bytes:
    out = [d * m for d, m in zip(in_shape, multiples)]
    return single("TILE", [list(in_shape)], out, extra=lambda b: [ints(b, "multiples", list(multiples))])


def test_tile_in_y_and_x_maps_as_observed():
    entry = only(_tile([1, 33, 33, 1]))
    assert entry.target == "tpu" and entry.evidence.observed
    report = check_model(_tile([1, 33, 33, 1]))
    assert [(r["rule"], r["ops"]) for r in report.observed_rules()] == [("mapped:TILE", [0])]


def test_tile_in_z_stays_on_cpu():
    assert_fails(_tile([1, 1, 1, 2]), "Tile.tiles-xy-only", "axis 3 (z)", "[1,1,1,2]")


def test_tile_in_batch_stays_on_cpu():
    assert_fails(_tile([2, 1, 1, 1]), "Tile.tiles-xy-only", "axis 0 (batch)")


def test_tile_needs_runtime_14():
    assert_fails(_tile([1, 33, 33, 1]), "runtime-version", "Tile", runtime=13)


def test_observed_rules_are_in_the_rule_table():
    assert RULES.rule_for("TILE").evidence.observed
    resize = {lim.name: lim for lim in RULES.rule_for("RESIZE_BILINEAR").limitations}
    assert resize["not-from-single-pixel"].evidence.compiler == "16"
    assert resize["factor-below-cpu-threshold"].threshold
    assert not resize["image-3d-io"].evidence.observed
    ids = {(c.id, b) for c in RULES.conversions for b in c.builtins}
    assert {("float-io", "QUANTIZE"), ("float-io", "DEQUANTIZE"), ("input-cast", "CAST"),
            ("input-cast", "QUANTIZE")} == ids
    assert RULES.conversion("input-cast", "CAST").evidence.observed
    assert not RULES.conversion("float-io", "DEQUANTIZE").evidence.observed


def test_compiler_log_counts_like_edgetpu_compiler():
    log = check_model(_cast_prefix(tail=("ARG_MAX",))).compiler_log()
    assert log["edgetpu_ops"] == 1 and log["cpu_ops"] == 3
    assert log["operators"] == [
        {"operator": "CAST", "count": 1, "status": "Operation not supported"},
        {"operator": "QUANTIZE", "count": 1, "status": UNSPECIFIED},
        {"operator": "RELU", "count": 1, "status": "Mapped to Edge TPU"},
        {"operator": "ARG_MAX", "count": 1, "status": "Operation not supported"},
    ]


def test_large_reshape_is_named_as_uncertain():
    b = ModelBuilder()
    b.output(b.reshape(inp(b, "x", [1, 1024, 1024, 2]), [1, 2048, 1024]))
    doubts = check_model(b.build()).uncertain_ops()
    assert [(d["op"], d["target"]) for d in doubts] == [("RESHAPE", "tpu")]
    assert "2,097,152" in doubts[0]["text"]
