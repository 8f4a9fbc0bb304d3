"""TfliteModel against the real Coral models: round trips, inspection facts, mutation, bad input."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

from edgetpud.daemon.errors import ModelError
from edgetpud.daemon.model import tflite as tfl
from edgetpud.daemon.model.tflite import EDGETPU_CUSTOM_OP, TfliteModel
from edgetpud.daemon.model.tflite.serialize import pack
from edgetpud.hal.executor import TfliteExecutor

CPU_TWINS = [
    "mobilenet_v1_0.25_128_quant.tflite",
    "mobilenet_v1_0.5_160_quant.tflite",
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
    "keras_lstm_mnist_ptq.tflite",
    "tools/split_concat.tflite",
    "tools/mobilenet_quant_v1_224_head_layers.tflite",
]
COMPILED = [
    "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
    "mobilenet_v1_0.5_160_quant_edgetpu.tflite",
    "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite",
    "keras_lstm_mnist_ptq_edgetpu.tflite",
    "tools/split_concat_edgetpu.tflite",
    "tools/mobilenet_quant_v1_224_feature_layers_edgetpu.tflite",
]


def _all_models(root: Path) -> List[Path]:
    models = sorted(root.rglob("*.tflite"))
    assert len(models) >= len(CPU_TWINS) + len(COMPILED) + 1, f"test data incomplete: {models}"
    return models


def _random_inputs(executor: TfliteExecutor, seed: int = 1234) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in executor.inputs:
        if np.issubdtype(spec.dtype, np.integer):
            info = np.iinfo(spec.dtype)
            arrays.append(rng.integers(info.min, info.max, size=spec.shape, endpoint=True).astype(spec.dtype))
        else:
            arrays.append(rng.standard_normal(spec.shape).astype(spec.dtype))
    return arrays


def _plain(options: object) -> dict:
    return {k: (np.asarray(v).tolist() if isinstance(v, (list, np.ndarray)) else v) for k, v in vars(options).items()}


def assert_same_structure(a: TfliteModel, b: TfliteModel) -> None:
    """Everything a reader can observe through the public API is equal."""
    assert a.subgraph_count == b.subgraph_count
    assert a.description == b.description
    assert a.metadata == b.metadata
    assert a.signatures == b.signatures
    assert a.opcodes() == b.opcodes()
    for s in range(a.subgraph_count):
        assert a.input_indices(s) == b.input_indices(s)
        assert a.output_indices(s) == b.output_indices(s)
        ops_a, ops_b = a.operators(s), b.operators(s)
        assert ops_a == ops_b  # index, opcode, builtin, version, inputs, outputs
        for x, y in zip(ops_a, ops_b):
            assert x.custom_options == y.custom_options
            assert type(x.options) is type(y.options)
            if x.options is not None:
                assert _plain(x.options) == _plain(y.options)
        tensors_a, tensors_b = a.tensors(s), b.tensors(s)
        assert tensors_a == tensors_b  # name, shapes, dtype, scale, zero point, constness, buffer
        for x, y in zip(tensors_a, tensors_b):
            np.testing.assert_array_equal(x.scales, y.scales)
            np.testing.assert_array_equal(x.zero_points, y.zero_points)
            if x.is_constant and x.type_name not in tfl.PACKED_TYPES:
                np.testing.assert_array_equal(a.tensor_data(x.index, s), b.tensor_data(y.index, s))


def test_every_model_round_trips(test_data: Path) -> None:
    for path in _all_models(test_data):
        original = TfliteModel.read(path)
        written = original.to_bytes()
        assert written[4:8] == b"TFL3", path
        again = TfliteModel.read(written)
        assert_same_structure(original, again)
        # Writing is a fixed point: a second write gives the same bytes.
        assert again.to_bytes() == written, path


@pytest.mark.parametrize("name", CPU_TWINS)
def test_written_cpu_twin_gives_bit_identical_outputs(test_data: Path, name: str) -> None:
    path = test_data / name
    written = TfliteModel.read(path).to_bytes()
    original, rewritten = TfliteExecutor(path), TfliteExecutor(written)
    try:
        inputs = _random_inputs(original)
        expected = original.invoke(inputs)
        actual = rewritten.invoke(inputs)
        assert [o.shape for o in actual] == [o.shape for o in expected]
        for e, a in zip(expected, actual):
            assert e.dtype == a.dtype
            np.testing.assert_array_equal(a, e)
    finally:
        original.close()
        rewritten.close()


def test_written_tensor_data_is_16_byte_aligned_and_bytes_like_input_works(test_data: Path) -> None:
    """The converter aligns buffers to 16 bytes so runtimes can use them in place; so do we."""
    from edgetpud.daemon.model._schema import schema

    written = TfliteModel.read(bytearray((test_data / "mobilenet_v1_0.25_128_quant.tflite").read_bytes())).to_bytes()
    base = np.frombuffer(written, dtype=np.uint8).ctypes.data
    model = schema.Model.GetRootAs(written, 0)
    checked = 0
    for i in range(model.BuffersLength()):
        data = model.Buffers(i).DataAsNumpy()
        if isinstance(data, np.ndarray) and data.size >= 16:
            assert (data.ctypes.data - base) % 16 == 0, f"buffer {i} is not aligned"
            checked += 1
    assert checked > 20
    assert TfliteModel.read(memoryview(written)).subgraph_count == 1


def test_signatures_can_be_rewritten(test_data: Path) -> None:
    model = TfliteModel.read(test_data / "keras_lstm_mnist_ptq.tflite")
    out = model.output_indices()[0]
    model.set_signature("serving_default", {"image": model.input_indices()[0]}, {"probs": out})
    model.set_signature("other", {"x": 0}, {"y": out})
    copy = model.copy()
    assert [(s.key, s.inputs, s.outputs) for s in copy.signatures] == [
        ("serving_default", {"image": 0}, {"probs": out}),
        ("other", {"x": 0}, {"y": out}),
    ]
    copy.remove_signatures()
    assert copy.signatures == [] and len(model.signatures) == 2
    with pytest.raises(ModelError, match="does not exist"):
        model.set_signature("bad", {"x": 10_000}, {})


def test_large_format_stores_buffers_after_flatbuffer_and_still_runs(test_data: Path) -> None:
    path = test_data / "tools/mobilenet_quant_v1_224_head_layers.tflite"
    model = TfliteModel.read(path)
    large = model.to_bytes(large_format=True)
    # The flatbuffer proper no longer holds tensor data: its buffers carry offsets into the file tail.
    from edgetpud.daemon.model._schema import schema

    raw = schema.ModelT.InitFromPackedBuf(large, 0)
    external = [b for b in raw.buffers if b.offset > 1]
    assert external and all(b.data is None or len(b.data) == 0 for b in external)
    assert all(b.offset % 16 == 0 and b.offset + b.size <= len(large) for b in external)
    reread = TfliteModel.read(large)
    assert_same_structure(model, reread)
    assert reread.to_bytes() == model.to_bytes()
    original, rewritten = TfliteExecutor(path), TfliteExecutor(large)
    try:
        inputs = _random_inputs(original, seed=7)
        np.testing.assert_array_equal(rewritten.invoke(inputs)[0], original.invoke(inputs)[0])
    finally:
        original.close()
        rewritten.close()


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_model_round_trip_keeps_edgetpu_op_exactly(test_data: Path, name: str) -> None:
    model = TfliteModel.read(test_data / name)
    assert model.is_edgetpu_compiled
    assert model.edgetpu_op_count == 1
    assert model.cpu_operators() == []
    (op,) = [o for o in model.operators() if o.opcode == EDGETPU_CUSTOM_OP]
    assert not op.builtin and op.options is None
    assert op.custom_options and len(op.custom_options) > 1000  # the compiled executable
    again = TfliteModel.read(model.to_bytes())
    (op2,) = [o for o in again.operators() if o.opcode == EDGETPU_CUSTOM_OP]
    assert op2.custom_options == op.custom_options
    assert (op2.inputs, op2.outputs) == (op.inputs, op.outputs)


def test_associated_files_survive_round_trip(test_data: Path) -> None:
    """Coral's classifiers carry labels as a zip after the flatbuffer; writing must not drop them."""
    for name in ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.25_128_quant_edgetpu.tflite"):
        model = TfliteModel.read(test_data / name)
        labels = model.associated_files["imagenet_labels.txt"].decode().splitlines()
        assert labels[0] == "background" and len(labels) == 1001
        again = TfliteModel.read(model.to_bytes())
        assert again.associated_files == model.associated_files
    model.set_associated_files({"labels.txt": b"0 cat\n"})
    assert TfliteModel.read(model.to_bytes()).associated_files == {"labels.txt": b"0 cat\n"}
    model.set_associated_files(None)
    assert TfliteModel.read(model.to_bytes()).associated_files == {}
    assert TfliteModel.read(test_data / "keras_lstm_mnist_ptq.tflite").associated_files == {}


def test_cpu_twins_are_not_compiled(test_data: Path) -> None:
    for name in CPU_TWINS:
        model = TfliteModel.read(test_data / name)
        assert not model.is_edgetpu_compiled and model.edgetpu_op_count == 0, name
        assert len(model.cpu_operators()) == len(model.operators()) > 0, name


def test_embedding_extractor_facts(test_data: Path) -> None:
    model = TfliteModel.read(test_data / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    (out,) = model.outputs
    assert out.shape == (1, 1, 1, 1024)
    assert out.dtype == np.uint8 and out.type_name == "UINT8"
    assert out.scale == pytest.approx(0.02353, abs=1e-5)
    assert out.zero_point == 0
    assert not out.is_constant
    (inp,) = model.inputs
    assert inp.shape == (1, 224, 224, 3) and inp.dtype == np.uint8
    assert model.operators()[-1].opcode == "AVERAGE_POOL_2D"


def test_mobilenet_025_facts(test_data: Path) -> None:
    model = TfliteModel.read(test_data / "mobilenet_v1_0.25_128_quant.tflite")
    (inp,) = model.inputs
    assert inp.shape == (1, 128, 128, 3) and inp.dtype == np.uint8
    assert inp.shape_signature == inp.shape and not inp.is_dynamic
    (out,) = model.outputs
    assert out.shape == (1, 1001) and out.scale == pytest.approx(1 / 256)
    assert set(model.opcodes()) == {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX"}
    assert model.metadata["min_runtime_version"].rstrip(b"\0") == b"1.5.0"
    assert model.min_runtime_version == "1.5.0"
    ops = model.operators()
    conv = ops[0]
    assert conv.opcode == "CONV_2D" and conv.builtin and conv.version >= 1
    assert type(conv.options).__name__ == "Conv2DOptionsT"
    weights = model.tensor(conv.inputs[1])
    assert weights.is_constant and weights.dtype == np.uint8
    data = model.tensor_data(weights.index)
    assert data.shape == weights.shape and data.dtype == np.uint8
    bias = model.tensor(conv.inputs[2])
    assert bias.dtype == np.int32 and bias.is_constant
    # A uint8 conv bias has scale = input scale * weight scale.
    assert bias.scale == pytest.approx(inp.scale * weights.scale, rel=1e-4)


def test_lstm_and_split_concat_facts(test_data: Path) -> None:
    lstm = TfliteModel.read(test_data / "keras_lstm_mnist_ptq.tflite")
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in lstm.opcodes()
    (sig,) = lstm.signatures
    assert sig.key == "serving_default" and sig.subgraph == 0
    assert list(sig.inputs.values()) == lstm.input_indices()
    assert list(sig.outputs.values()) == lstm.output_indices()
    fc = [o for o in lstm.operators() if o.opcode == "FULLY_CONNECTED"][0]
    assert fc.version == 4  # versions come from the opcode table, not a default
    split = TfliteModel.read(test_data / "tools/split_concat.tflite")
    assert [o.opcode for o in split.operators()] == ["CONCATENATION", "SPLIT", "CONCATENATION"]
    assert len(split.outputs) == 5 and all(o.zero_point == 128 for o in split.outputs)


def test_head_layers_and_invalid_model_facts(test_data: Path) -> None:
    head = TfliteModel.read(test_data / "tools/mobilenet_quant_v1_224_head_layers.tflite")
    assert [o.opcode for o in head.operators()] == ["CONV_2D", "RESHAPE", "SOFTMAX"]
    assert head.inputs[0].shape == (1, 1, 1, 1024)
    invalid = TfliteModel.read(test_data / "invalid_models/model_invoking_error.tflite")
    (inp,) = invalid.inputs
    assert inp.shape == (1, 3) and inp.dtype == np.uint8
    (op,) = invalid.operators()
    assert op.opcode == "fake-op-double" and not op.builtin
    assert not invalid.is_edgetpu_compiled


def test_set_tensor_data_retargets_the_classifier_head(test_data: Path) -> None:
    """Replacing the head's weights and bias (what retraining export does) changes the prediction."""
    path = test_data / "tools/mobilenet_quant_v1_224_head_layers.tflite"
    model = TfliteModel.read(path)
    conv = model.operators()[0]
    w, b = model.tensor(conv.inputs[1]), model.tensor(conv.inputs[2])
    new_w = np.full(w.shape, w.zero_point, dtype=w.dtype)  # all-zero real weights
    new_b = np.zeros(b.shape, dtype=np.int32)
    new_b[42] = 1 << 20  # a large positive logit for class 42 only
    model.set_tensor_data(w.index, new_w)
    model.set_tensor_data(b.index, new_b)
    reread = TfliteModel.read(model.to_bytes())
    np.testing.assert_array_equal(reread.tensor_data(b.index), new_b)
    executor = TfliteExecutor(model.to_bytes())
    try:
        (probs,) = executor.invoke(_random_inputs(executor))
        assert int(np.argmax(probs)) == 42 and probs[0, 42] == 255
    finally:
        executor.close()


def test_set_tensor_data_changes_shape_and_quantization() -> None:
    model = TfliteModel.empty()
    model.add_subgraph()
    t = model.add_tensor("w", [2], np.int8, buffer=np.array([1, 2], np.int8), scale=0.5, zero_point=0)
    shared = model.add_tensor("w2", [2], np.int8, buffer=model.tensor(t).buffer)
    model.set_tensor_data(t, np.arange(6, dtype=np.int8).reshape(2, 3), scale=[0.1, 0.2], zero_point=[0, 0])
    info = model.tensor(t)
    assert info.shape == (2, 3) and info.per_channel
    np.testing.assert_allclose(info.scales, [0.1, 0.2])
    # The shared buffer was not overwritten under the other tensor.
    np.testing.assert_array_equal(model.tensor_data(shared), [1, 2])
    with pytest.raises(ModelError, match="cast it first"):
        model.set_tensor_data(t, np.zeros(3, np.float32))


def test_add_operator_handles_extended_opcodes_and_reuses_codes() -> None:
    model = TfliteModel.empty()
    model.add_subgraph()
    x = model.add_tensor("x", [1, 4], np.float32)
    y = model.add_tensor("y", [1, 4], np.float32)
    z = model.add_tensor("z", [1, 4], np.float32)
    model.add_operator("GELU", [x], [y])  # builtin code > 127: needs the extended field
    model.add_operator("gelu", [y], [z])
    model.add_operator("CUSTOM", [z], [x], custom_code="my-op", custom_options=b"\x01\x02")
    code = model.raw.operatorCodes[0]
    assert code.builtinCode > 127 and code.deprecatedBuiltinCode == 127
    assert model.opcodes() == ["GELU", "my-op"]
    ops = TfliteModel.read(model.to_bytes()).operators()
    assert [o.opcode for o in ops] == ["GELU", "GELU", "my-op"]
    assert type(ops[0].options).__name__ == "GeluOptionsT"
    assert ops[2].custom_options == b"\x01\x02" and not ops[2].builtin
    with pytest.raises(ModelError, match="takes Conv2DOptionsT"):
        model.add_operator("CONV_2D", [x], [y], options=tfl.schema.AddOptionsT())
    with pytest.raises(ModelError, match="unknown builtin operator"):
        model.add_operator("NOT_AN_OP", [x], [y])
    with pytest.raises(ModelError, match="tensor 99 does not exist"):
        model.add_operator("ADD", [x, 99], [y])


@pytest.mark.parametrize(
    "op, options",
    [
        ("CONV_2D", "Conv2DOptionsT"),
        ("MAX_POOL_2D", "Pool2DOptionsT"),
        ("AVERAGE_POOL_2D", "Pool2DOptionsT"),
        ("MEAN", "ReducerOptionsT"),
        ("FULLY_CONNECTED", "FullyConnectedOptionsT"),
        ("DEPTHWISE_CONV_2D", "DepthwiseConv2DOptionsT"),
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "UnidirectionalSequenceLSTMOptionsT"),
        ("UNIDIRECTIONAL_SEQUENCE_RNN", "SequenceRNNOptionsT"),
        ("MAXIMUM", "MaximumMinimumOptionsT"),
        ("L2_NORMALIZATION", "L2NormOptionsT"),
        ("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptionsT"),
        ("TOPK_V2", "TopKV2OptionsT"),
        ("STABLEHLO_CONCATENATE", "StablehloConcatenateOptionsT"),
        ("LOGISTIC", "NoneType"),
        ("CUSTOM", "NoneType"),
    ],
)
def test_default_options_match_the_op(op: str, options: str) -> None:
    assert type(tfl.default_options(op)).__name__ == options


def test_remove_unused_renumbers_buffers_and_codes() -> None:
    model = TfliteModel.empty()
    model.add_subgraph()
    model.add_buffer(b"orphan")
    c = model.add_tensor("c", [3], np.uint8, buffer=b"\x07\x08\x09")
    x = model.add_tensor("x", [3], np.uint8, buffer=0)
    y = model.add_tensor("y", [3], np.uint8)
    model.add_operator("ADD", [x, c], [y])
    model.raw.operatorCodes.insert(0, model.raw.operatorCodes[0].__class__())  # an unused code
    model.raw.subgraphs[0].operators[0].opcodeIndex = 1
    model.remove_unused()
    assert len(model.raw.operatorCodes) == 1 and model.operators()[0].opcode == "ADD"
    assert len(model.raw.buffers) == 3
    np.testing.assert_array_equal(model.tensor_data(c), [7, 8, 9])


# ---------------------------------------------------------------- bad input


def test_missing_path_raises_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        TfliteModel.read(tmp_path / "nope.tflite")
    with pytest.raises(ModelError, match="is a folder"):
        TfliteModel.read(tmp_path)


def test_empty_and_short_bytes_raise_model_error() -> None:
    with pytest.raises(ModelError, match="empty"):
        TfliteModel.read(b"")
    with pytest.raises(ModelError, match="too short"):
        TfliteModel.read(b"TFL3")


def test_random_bytes_raise_model_error() -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(ModelError, match="not a TFLite model.*TFL3"):
        TfliteModel.read(rng.bytes(4096))
    # Random bytes that happen to carry the identifier still fail cleanly.
    for _ in range(20):
        data = rng.bytes(4) + b"TFL3" + rng.bytes(int(rng.integers(0, 4096)))
        with pytest.raises(ModelError):
            TfliteModel.read(data)


def test_truncated_file_raises_model_error(test_data: Path) -> None:
    for name in ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "keras_lstm_mnist_ptq.tflite"):
        data = (test_data / name).read_bytes()
        for size in (9, 64, 1000, len(data) // 2, len(data) - 64):
            with pytest.raises(ModelError, match="truncated or corrupt"):
                TfliteModel.read(data[:size])


def test_corrupted_bytes_never_crash_or_hang(test_data: Path) -> None:
    data = (test_data / "tools/split_concat.tflite").read_bytes()
    rng = np.random.default_rng(11)
    start = time.monotonic()
    outcomes = {"ok": 0, "error": 0}
    for i in range(300):
        corrupt = bytearray(data)
        if i % 2:
            corrupt = corrupt[: int(rng.integers(8, len(data)))]
        else:
            for pos in rng.integers(8, len(data), size=4):
                corrupt[pos] = int(rng.integers(0, 256))
        try:
            model = TfliteModel.read(bytes(corrupt))
            model.operators(), model.tensors()
            outcomes["ok"] += 1
        except ModelError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100
    assert time.monotonic() - start < 30


def test_zero_subgraphs_raise_model_error() -> None:
    empty = TfliteModel.empty()
    data = pack(empty.raw)  # a valid flatbuffer that to_bytes() would refuse to write
    assert data[4:8] == b"TFL3"
    with pytest.raises(ModelError, match="no subgraphs"):
        TfliteModel.read(data)


def test_out_of_range_index_is_rejected() -> None:
    model = TfliteModel.empty()
    model.add_subgraph()
    x = model.add_tensor("x", [1], np.uint8)
    model.set_inputs([x])
    model.raw.subgraphs[0].tensors[0].buffer = 57
    with pytest.raises(ModelError, match="buffer 57"):
        TfliteModel.read(pack(model.raw))
    with pytest.raises(ModelError, match="tensor 3 does not exist"):
        model.set_outputs([3])
