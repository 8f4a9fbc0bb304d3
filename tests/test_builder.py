"""ModelBuilder: synthetic models load in the stock TFLite interpreter and compute what we expect."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest
from flatbuffers import flexbuffers

from edgetpud.daemon.errors import ModelError
from edgetpud.daemon.model.builder import (
    DETECTION_POSTPROCESS,
    ModelBuilder,
    detection_postprocess_options,
    quantize_array,
)
from edgetpud.daemon.model.tflite import TfliteModel
from edgetpud.hal.executor import TfliteExecutor
from edgetpud.hal.runtime import find_runtime


def run(model: bytes, *inputs: np.ndarray) -> List[np.ndarray]:
    executor = TfliteExecutor(model)
    try:
        return executor.invoke(list(inputs))
    finally:
        executor.close()


def test_quantized_add_matches_hand_computation() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 4], np.uint8, scale=0.5, zero_point=10)
    c = b.const("c", np.array([[20, 30, 40, 50]], np.uint8), scale=0.25, zero_point=0)
    b.output(b.add(x, c, scale=1.0, zero_point=5))
    # real x = 0.5 * (q - 10); real c = 0.25 * q; out = round(x + c) + 5
    (out,) = run(b.build(), np.array([[10, 14, 30, 200]], np.uint8))
    expected = np.round(0.5 * (np.array([10, 14, 30, 200]) - 10) + 0.25 * np.array([20, 30, 40, 50])) + 5
    np.testing.assert_array_equal(out, expected.reshape(1, 4).astype(np.uint8))
    assert out.dtype == np.uint8


def test_quantized_fully_connected_matches_hand_computation() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 3], np.uint8, scale=1.0, zero_point=0)
    w = b.const("w", np.array([[129, 130, 131], [127, 128, 126]], np.uint8), scale=1.0, zero_point=128)
    bias = b.const("bias", np.array([7, 100], np.int32), scale=1.0, zero_point=0)
    b.output(b.fully_connected(x, w, bias, scale=1.0, zero_point=0))
    (out,) = run(b.build(), np.array([[3, 5, 7]], np.uint8))
    # weights are [[1, 2, 3], [-1, 0, -2]]: [3 + 10 + 21 + 7, -3 + 0 - 14 + 100]
    np.testing.assert_array_equal(out, np.array([[41, 83]], np.uint8))


def test_int8_per_channel_conv2d_matches_numpy_reference() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(-3, 4, size=(1, 5, 5, 2)).astype(np.int8)
    weights = (rng.integers(-2, 3, size=(3, 3, 3, 2)) * 2).astype(np.int8)
    scales = [1.0, 0.5, 0.5]  # even weights keep every sum an integer: no rounding ties
    b = ModelBuilder()
    x = b.input("x", image.shape, np.int8, scale=1.0, zero_point=0)
    w = b.const("w", weights, scales=scales, zero_points=[0, 0, 0], quantized_dimension=0)
    bias = b.const("bias", np.array([1, -2, 0], np.int32), scales=scales, zero_points=[0, 0, 0])
    y = b.conv2d(x, w, bias, padding="SAME", scale=1.0, zero_point=0)
    b.output(y)
    model = b.build()
    assert TfliteModel.read(model).tensor(w).per_channel
    (out,) = run(model, image)
    padded = np.pad(image.astype(np.int64)[0], ((1, 1), (1, 1), (0, 0)))
    real_w = weights.astype(np.float64) * np.asarray(scales)[:, None, None, None]
    ref = np.zeros((5, 5, 3))
    for i in range(5):
        for j in range(5):
            ref[i, j] = np.tensordot(real_w, padded[i:i + 3, j:j + 3, :], axes=([1, 2, 3], [0, 1, 2]))
    ref += np.array([1, -2, 0]) * np.asarray(scales)  # bias real value = q * (input scale * w scale)
    expected = np.clip(ref, -128, 127).astype(np.int8)[None]
    assert out.shape == (1, 5, 5, 3)
    np.testing.assert_array_equal(out, expected)


def test_float_model_with_dynamic_batch() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 4], np.float32, shape_signature=[-1, 4])
    w = b.const("w", np.array([[1, 0, 0, 0], [0, 1, 1, 0]], np.float32))
    bias = b.const("bias", np.array([0.5, -1], np.float32))
    y = b.fully_connected(x, w, bias, activation="RELU")
    b.output(b.softmax(y))
    model = TfliteModel.read(b.build())
    assert model.inputs[0].shape_signature == (-1, 4) and model.inputs[0].is_dynamic
    assert model.outputs[0].dtype == np.float32 and not model.outputs[0].quantized
    interpreter = find_runtime().interpreter_class(model_content=model.to_bytes())
    interpreter.resize_tensor_input(0, [3, 4])
    interpreter.allocate_tensors()
    data = np.array([[1, 2, 3, 4], [0, 0, 0, 0], [-5, 1, 1, 1]], np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    logits = np.maximum(data @ np.array([[1, 0, 0, 0], [0, 1, 1, 0]], np.float32).T + [0.5, -1], 0)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def bilinear_half_pixel(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """RESIZE_BILINEAR with half-pixel centers (TensorFlow's rule) of an NHWC array, in float64."""
    def taps(out_size: int, in_size: int):
        source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        low = np.floor(source)
        weight = source - low
        low = low.astype(int)
        return np.clip(low, 0, in_size - 1), np.clip(low + 1, 0, in_size - 1), weight

    y0, y1, wy = taps(out_h, image.shape[1])
    x0, x1, wx = taps(out_w, image.shape[2])
    f = image.astype(np.float64)
    wx = wx[None, None, :, None]
    rows0 = f[:, y0][:, :, x0] * (1 - wx) + f[:, y0][:, :, x1] * wx
    rows1 = f[:, y1][:, :, x0] * (1 - wx) + f[:, y1][:, :, x1] * wx
    wy = wy[None, :, None, None]
    return rows0 * (1 - wy) + rows1 * wy


def test_shape_ops_chain_infers_the_interpreters_shapes_and_values() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 2], np.uint8, scale=0.1, zero_point=3)
    padded = b.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    pooled = b.max_pool2d(padded, 2, 2)
    avg = b.average_pool2d(pooled, 3, 1)
    resized = b.resize_bilinear(x, (8, 6))
    flat = b.reshape(pooled, [1, -1])
    joined = b.concatenation([x, x], axis=3)
    b.output(padded, pooled, avg, resized, flat, joined)
    model = b.build()
    image = np.arange(32, dtype=np.uint8).reshape(1, 4, 4, 2) * 7
    executor = TfliteExecutor(model)
    try:
        built = TfliteModel.read(model)
        assert [o.shape for o in executor.outputs] == [o.shape for o in built.outputs]
        assert [o.shape for o in built.outputs] == [
            (1, 6, 6, 2), (1, 3, 3, 2), (1, 1, 1, 2), (1, 8, 6, 2), (1, 18), (1, 4, 4, 4)
        ]
        padded_v, pooled_v, avg_v, resized_v, flat_v, joined_v = executor.invoke([image])
    finally:
        executor.close()
    ref_pad = np.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=3)  # padded with the zero point
    np.testing.assert_array_equal(padded_v, ref_pad)
    ref_pool = ref_pad.reshape(1, 3, 2, 3, 2, 2).max(axis=(2, 4))
    np.testing.assert_array_equal(pooled_v, ref_pool)
    # same scale in and out, so the kernels work on the integers and round half up
    ref_avg = np.floor(ref_pool.mean(axis=(1, 2), keepdims=True) + 0.5)
    np.testing.assert_array_equal(avg_v, ref_avg.astype(np.uint8))
    np.testing.assert_array_equal(resized_v, np.floor(bilinear_half_pixel(image, 8, 6) + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(flat_v, ref_pool.reshape(1, -1))
    np.testing.assert_array_equal(joined_v, np.concatenate([image, image], axis=3))


def test_elementwise_and_conversion_ops_run() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 2, 2, 4], np.float32)
    q = b.quantize(x, np.int8, scale=0.05, zero_point=0)
    dw_w = b.const("dw", np.ones((1, 1, 1, 4), np.int8), scales=[1.0] * 4, zero_points=[0] * 4,
                   quantized_dimension=3)
    dw = b.depthwise_conv2d(q, dw_w, None, scale=0.05, zero_point=0)
    m = b.mul(dw, dw, scale=0.05, zero_point=0)
    sig = b.logistic(m)
    mean = b.mean(dw, [1, 2], keep_dims=True, scale=0.05, zero_point=0)
    b.output(b.dequantize(sig), b.dequantize(mean))
    data = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 2, 2, 4)
    sig_v, mean_v = run(b.build(), data)
    ref_q = np.round(data / 0.05) * 0.05
    np.testing.assert_allclose(sig_v, 1 / (1 + np.exp(-ref_q * ref_q)), atol=2 / 256)
    np.testing.assert_allclose(mean_v, ref_q.mean(axis=(1, 2), keepdims=True), atol=0.05)


def test_multiple_subgraphs_round_trip() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 2], np.float32)
    b.output(b.add(x, x))
    body = b.add_subgraph("body")
    b.use_subgraph(body)
    y = b.input("y", [1, 2], np.float32)
    b.output(b.mul(y, y))
    model = TfliteModel.read(b.build())
    assert model.subgraph_count == 2 and model.subgraph_name(1) == "body"
    assert [o.opcode for o in model.operators(1)] == ["MUL"]
    np.testing.assert_array_equal(run(model.to_bytes(), np.array([[1, 2]], np.float32))[0], [[2, 4]])


def test_detection_postprocess_options_decode() -> None:
    data = detection_postprocess_options(
        max_detections=5, max_classes_per_detection=1, num_classes=90, nms_score_threshold=0.25,
        nms_iou_threshold=0.6, y_scale=10, x_scale=10, h_scale=5, w_scale=5, use_regular_nms=True,
    )
    decoded = flexbuffers.Loads(data)
    assert decoded["max_detections"] == 5 and decoded["num_classes"] == 90
    assert decoded["nms_iou_threshold"] == pytest.approx(0.6) and decoded["y_scale"] == 10.0
    assert decoded["use_regular_nms"] is True


def test_detection_postprocess_model_runs_in_the_stock_interpreter() -> None:
    n = 4
    b = ModelBuilder()
    boxes = b.input("boxes", [1, n, 4], np.float32)
    scores = b.input("scores", [1, n, 3], np.float32)
    anchors = b.const("anchors", np.array(
        [[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5]],
        np.float32))  # (y_center, x_center, h, w)
    b.output(*b.detection_postprocess(boxes, scores, anchors, max_detections=3, nms_score_threshold=0.05))
    model = TfliteModel.read(b.build())
    (op,) = model.operators()
    assert op.opcode == DETECTION_POSTPROCESS and not op.builtin
    class_scores = np.zeros((1, n, 3), np.float32)
    class_scores[0, 0, 1] = 0.9  # anchor 0 -> class 0 (column 0 is background)
    class_scores[0, 1, 2] = 0.8  # anchor 1 -> class 1
    class_scores[0, 2, 1] = 0.3  # anchor 2, moved onto anchor 1's box below: suppressed by NMS
    class_scores[0, 3, 1] = 0.2
    encodings = np.zeros((1, n, 4), np.float32)
    # (ty, tx, th, tw): ty = 10 / y_scale(10) = one anchor height down -> exactly anchor 1's box
    encodings[0, 2] = [10.0, 0.0, 0.0, 0.0]
    out_boxes, out_classes, out_scores, count = run(model.to_bytes(), encodings, class_scores)
    assert int(count[0]) == 3
    np.testing.assert_allclose(out_scores[0], [0.9, 0.8, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(out_classes[0], [0, 1, 0])
    # boxes come out as (ymin, xmin, ymax, xmax)
    np.testing.assert_allclose(out_boxes[0], [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0.5, 0, 1, 0.5]], atol=1e-6)


def test_quantized_detection_inputs_run() -> None:
    """SSD models feed the postprocess op uint8 boxes/scores; the op dequantizes them itself."""
    n = 2
    b = ModelBuilder()
    boxes = b.input("boxes", [1, n, 4], np.uint8, scale=0.1, zero_point=128)
    scores = b.input("scores", [1, n, 2], np.uint8, scale=1 / 256, zero_point=0)
    anchors = b.const("anchors", quantize_array(np.array([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]),
                                                1 / 128, 0), scale=1 / 128, zero_point=0)
    b.output(*b.detection_postprocess(boxes, scores, anchors, max_detections=2, nms_score_threshold=0.1))
    class_scores = np.array([[[0, 200], [0, 64]]], np.uint8)
    out_boxes, out_classes, out_scores, count = run(b.build(), np.full((1, n, 4), 128, np.uint8), class_scores)
    assert int(count[0]) == 2
    np.testing.assert_allclose(out_scores[0], [200 / 256, 64 / 256], rtol=1e-5)
    np.testing.assert_allclose(out_boxes[0, 0], [0, 0, 0.5, 0.5], atol=1e-6)


def test_custom_op_and_generic_op_keep_their_options() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 3], np.uint8)
    y = b.tensor("y", [1, 3], np.uint8)
    b.custom("fake-op-double", [x], [y], options=b"\x00\x01")
    b.output(y)
    model = TfliteModel.read(b.build())
    (op,) = model.operators()
    assert (op.opcode, op.builtin, op.custom_options) == ("fake-op-double", False, b"\x00\x01")
    with pytest.raises(Exception, match="fake-op-double"):
        TfliteExecutor(model.to_bytes())


def test_build_without_outputs_is_refused() -> None:
    b = ModelBuilder()
    b.input("x", [1], np.float32)
    with pytest.raises(ModelError, match="no outputs"):
        b.build()
    with pytest.raises(ModelError, match="needs a 4-D tensor"):
        b.max_pool2d(0)
    image = b.input("image", [1, 4, 4, 1], np.float32)
    with pytest.raises(ModelError, match="unknown padding"):
        b.max_pool2d(image, padding="FULL")


def test_quantize_array_rounds_half_away_from_zero_and_clamps() -> None:
    np.testing.assert_array_equal(
        quantize_array(np.array([-1.0, -0.25, 0.25, 0.75, 100.0]), 0.5, 1, np.int8), [-1, 0, 2, 3, 127]
    )
