"""Postprocessing of output tensors: classify, detect (both SSD output orders), embed, raw."""
from __future__ import annotations

import numpy as np
import pytest

from edgetpud.daemon.errors import ImageError, InvalidArgumentError, ModelError
from edgetpud.daemon.model.adapters import (
    Class,
    DetectedObject,
    classify,
    dequantize,
    detect,
    detection_layout,
    embed,
    raw_inputs,
    raw_outputs,
)
from edgetpud.daemon.model.preprocess import ImageTransform
from edgetpud.hal.executor import TensorSpec


def spec(name, shape, dtype=np.float32, scale=0.0, zero_point=0, index=0) -> TensorSpec:
    return TensorSpec(name, index, tuple(shape), np.dtype(dtype), scale, zero_point)


SCORES_U8 = spec("scores", [1, 5], np.uint8, 1 / 256, 0)


def test_dequantize():
    q = np.array([0, 128, 255], dtype=np.uint8)
    np.testing.assert_allclose(dequantize(q, spec("x", [3], np.uint8, 0.5, 128)), [-64.0, 0.0, 63.5])
    np.testing.assert_allclose(dequantize(q, spec("x", [3], np.uint8)), [0, 128, 255])


def test_classify_dequantizes_sorts_and_labels():
    out = np.array([[10, 200, 30, 200, 0]], dtype=np.uint8)
    result = classify([out], [SCORES_U8], {1: "cat", 3: "dog"}, top_k=3)
    assert result == [Class(1, "cat", 200 / 256), Class(3, "dog", 200 / 256), Class(2, None, 30 / 256)]


def test_classify_threshold_and_top_k():
    out = np.array([[10, 200, 30, 100, 0]], dtype=np.uint8)
    assert [c.id for c in classify([out], [SCORES_U8], threshold=100 / 256, top_k=10)] == [1, 3]
    assert [c.id for c in classify([out], [SCORES_U8], top_k=1)] == [1]
    assert len(classify([out], [SCORES_U8], top_k=99)) == 5
    with pytest.raises(InvalidArgumentError, match="top_k"):
        classify([out], [SCORES_U8], top_k=0)


def test_classify_needs_a_score_vector():
    with pytest.raises(ModelError, match="more than one score"):
        classify([np.zeros((1, 1), np.float32)], [spec("x", [1, 1])])
    with pytest.raises(ModelError, match="declares"):
        classify([], [SCORES_U8])


# ----------------------------------------------------------------------------- detection

BOXES = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.7, 0.9]]], dtype=np.float32)
CLASSES = np.array([[2.0, 0.0, 17.0]], dtype=np.float32)
SCORES = np.array([[0.9, 0.3, 0.6]], dtype=np.float32)
COUNT = np.array([3.0], dtype=np.float32)
TF1_SPECS = [spec("boxes", [1, 3, 4]), spec("classes", [1, 3]), spec("scores", [1, 3]), spec("count", [1])]
TF2_SPECS = [spec("a", [1, 3]), spec("b", [1, 3, 4]), spec("c", [1]), spec("d", [1, 3])]


def test_layout_by_position():
    assert detection_layout(TF1_SPECS, ["x0", "x1", "x2", "x3"]) == detection_layout(TF1_SPECS)
    tf1 = detection_layout(TF1_SPECS)
    assert (tf1.boxes, tf1.classes, tf1.scores, tf1.count) == (0, 1, 2, 3)
    tf2 = detection_layout(TF2_SPECS)
    assert (tf2.boxes, tf2.classes, tf2.scores, tf2.count) == (1, 3, 0, 2)


def test_layout_by_signature_names():
    names = ["output_1", "output_3", "output_0", "output_2"]  # TF2 signature: count, scores, classes, boxes
    layout = detection_layout(TF2_SPECS, names)
    assert (layout.scores, layout.boxes, layout.count, layout.classes) == (0, 1, 2, 3)
    named = ["detection_scores", "detection_boxes", "num_detections", "detection_classes"]
    assert detection_layout(TF2_SPECS, named) == layout


def test_layout_values_override_position():
    # Outputs in TF1 positions but with scores and classes swapped: the values tell.
    values = [BOXES, SCORES, CLASSES, COUNT]
    layout = detection_layout(TF1_SPECS, values=values)
    assert (layout.classes, layout.scores) == (2, 1)


def test_layout_rejects_non_detection_outputs():
    with pytest.raises(ModelError, match="4 outputs"):
        detection_layout([spec("x", [1, 10])])
    with pytest.raises(ModelError, match="no boxes"):
        detection_layout([spec("a", [1, 3]), spec("b", [1, 3]), spec("c", [1, 3]), spec("d", [1, 3])])
    with pytest.raises(ModelError, match="do not look like"):
        detection_layout([spec("a", [1, 3, 4]), spec("b", [1, 3]), spec("c", [1, 3]), spec("d", [1, 3])])
    with pytest.raises(ModelError, match="must have 3 values"):
        detection_layout([spec("a", [1, 3, 4]), spec("b", [1, 3]), spec("c", [1, 2]), spec("d", [1])])


def test_layout_with_four_or_one_detection():
    # N = 4: classes and scores [1, 4] also end in 4.
    four = [spec("a", [1, 4]), spec("b", [1, 4, 4]), spec("c", [1]), spec("d", [1, 4])]
    layout = detection_layout(four)
    assert (layout.scores, layout.boxes, layout.count, layout.classes) == (0, 1, 2, 3)
    # N = 1: classes, scores and count all hold one value; the order decides.
    tf1 = detection_layout([spec("a", [1, 1, 4]), spec("b", [1, 1]), spec("c", [1, 1]), spec("d", [1])])
    assert (tf1.boxes, tf1.classes, tf1.scores, tf1.count) == (0, 1, 2, 3)
    tf2 = detection_layout([spec("a", [1, 1]), spec("b", [1, 1, 4]), spec("c", [1]), spec("d", [1, 1])])
    assert (tf2.scores, tf2.boxes, tf2.count, tf2.classes) == (0, 1, 2, 3)


@pytest.mark.parametrize("order", ["tf1", "tf2"])
def test_detect_both_orders_give_the_same_objects(order):
    if order == "tf1":
        outputs, specs = [BOXES, CLASSES, SCORES, COUNT], TF1_SPECS
    else:
        outputs, specs = [SCORES, BOXES, COUNT, CLASSES], TF2_SPECS
    objects = detect(outputs, specs, {2: "car", 17: "cat"}, threshold=0.4)
    assert [(o.id, o.label) for o in objects] == [(2, "car"), (17, "cat")]
    assert objects[0].score == pytest.approx(0.9)
    assert objects[0].bbox == pytest.approx((0.2, 0.1, 0.6, 0.5))  # normalised x/y without a transform


def test_detect_maps_boxes_to_source_pixels():
    # A 200x100 source letterboxed into 10x10 at the top-left: scale 0.05, image rows 0..5 of 10.
    transform = ImageTransform(200, 100, 10, 10, 0.05, 0.05)
    objects = detect([BOXES, CLASSES, SCORES, COUNT], TF1_SPECS, transform=transform, threshold=0.0)
    first = objects[0]
    # y: 0.1 * 10 / 0.05 = 20, 0.5 * 10 / 0.05 = 100; x: 0.2 -> 40, 0.6 -> 120
    assert first.bbox == pytest.approx((40.0, 20.0, 120.0, 100.0))
    whole = objects[2]
    assert whole.bbox == pytest.approx((0.0, 0.0, 200.0, 100.0))  # clipped to the image


def test_detect_count_top_k_and_threshold():
    few = np.array([1.0], dtype=np.float32)
    assert len(detect([BOXES, CLASSES, SCORES, few], TF1_SPECS, threshold=0.0)) == 1
    assert [o.id for o in detect([BOXES, CLASSES, SCORES, COUNT], TF1_SPECS, threshold=0.0, top_k=2)] == [2, 17]
    too_many = np.array([50.0], dtype=np.float32)
    assert len(detect([BOXES, CLASSES, SCORES, too_many], TF1_SPECS, threshold=0.0)) == 3
    assert detect([BOXES, CLASSES, SCORES, COUNT], TF1_SPECS, threshold=0.95) == []


def test_detect_result_type():
    obj = detect([BOXES, CLASSES, SCORES, COUNT], TF1_SPECS)[0]
    assert isinstance(obj, DetectedObject) and isinstance(obj.bbox, tuple) and len(obj.bbox) == 4


# ----------------------------------------------------------------------------- embed and raw


def test_embed_dequantizes_and_normalises():
    s = spec("emb", [1, 1, 1, 2], np.uint8, 0.5, 0)
    q = np.array([[[[6, 8]]]], dtype=np.uint8)
    np.testing.assert_allclose(embed([q], [s]), [3.0, 4.0])
    v = embed([q], [s], normalize=True)
    assert v.dtype == np.float32 and v.shape == (2,)
    np.testing.assert_allclose(v, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(embed([np.zeros_like(q)], [s], normalize=True), [0.0, 0.0])


def test_raw_inputs_by_name_and_position():
    specs = [spec("a", [1, 2], np.uint8), spec("b", [3], np.float32)]
    a, b = np.zeros((1, 2), np.uint8), np.ones(3, np.float32)
    ordered = raw_inputs({"b": b, "a": a}, specs)
    assert ordered[0] is not None and ordered[0].shape == (1, 2) and ordered[1].dtype == np.float32
    assert len(raw_inputs([a, b], specs)) == 2


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"a": np.zeros((1, 2), np.uint8)}, "missing: \\['b'\\]"),
        ({"a": np.zeros((1, 2), np.uint8), "b": np.ones(3, np.float32), "c": 1}, "unknown: \\['c'\\]"),
        ({"a": np.zeros((1, 2), np.int8), "b": np.ones(3, np.float32)}, "dtype uint8"),
        ({"a": np.zeros((2, 2), np.uint8), "b": np.ones(3, np.float32)}, "shape \\[1, 2\\]"),
        ({"a": [[0, 0]], "b": np.ones(3, np.float32)}, "numpy array"),
        ([np.zeros((1, 2), np.uint8)], "2 input"),
    ],
)
def test_raw_inputs_errors(tensors, message):
    specs = [spec("a", [1, 2], np.uint8), spec("b", [3], np.float32)]
    with pytest.raises(ImageError, match=message):
        raw_inputs(tensors, specs)


def test_raw_outputs_names_duplicates():
    specs = [spec("x", [1]), spec("x", [1])]
    named = raw_outputs([np.zeros(1), np.ones(1)], specs)
    assert list(named) == ["x", "x#1"]
