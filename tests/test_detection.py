"""End-to-end detection on a tiny SSD-style model built here, ending in TFLite_Detection_PostProcess.

The model's image input is [1, 2, 2, 3] uint8 (scale 1/255). Reshaped to [1, 4, 3],
each pixel becomes the class scores (background, class 0, class 1) of one anchor;
the box encodings are constant zeros, so every decoded box is exactly its anchor.
Known anchors and known pixel colours give known detections and boxes, in both the
TF1 output order (boxes, classes, scores, count) and the TF2 one (scores, boxes,
count, classes), with and without signature names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetpud.daemon.errors import ModelError
from edgetpud.daemon.model import DetectedObject, ModelBundle, load_model
from edgetpud.daemon.model.builder import ModelBuilder

# Anchors as (y_center, x_center, height, width), normalised; as boxes (ymin, xmin, ymax, xmax):
ANCHORS = np.array(
    [
        [0.25, 0.25, 0.5, 0.5],  # (0.00, 0.00, 0.50, 0.50) top-left
        [0.25, 0.75, 0.4, 0.2],  # (0.05, 0.65, 0.45, 0.85) top-right, narrow
        [0.75, 0.25, 0.2, 0.4],  # (0.65, 0.05, 0.85, 0.45) bottom-left, flat
        [0.75, 0.75, 0.5, 0.5],  # (0.50, 0.50, 1.00, 1.00) bottom-right
    ],
    dtype=np.float32,
)
# One pixel per anchor, (background, class 0, class 1) scores * 255.
PIXELS = np.array(
    [
        [[0, 230, 0], [0, 0, 128]],
        [[255, 10, 20], [0, 100, 200]],
    ],
    dtype=np.uint8,
)
LABELS = "0 person\n1 bicycle\n"


def build_ssd(order: str, signature: bool = False) -> bytes:
    b = ModelBuilder("tiny ssd for tests")
    image = b.input("image", [1, 2, 2, 3], np.uint8, scale=1 / 255, zero_point=0)
    class_predictions = b.reshape(image, [1, 4, 3])
    box_encodings = b.const("box_encodings", np.zeros((1, 4, 4), np.float32))
    anchors = b.const("anchors", ANCHORS)
    boxes, classes, scores, count = b.detection_postprocess(
        box_encodings, class_predictions, anchors, max_detections=4, nms_score_threshold=0.01,
        nms_iou_threshold=0.5,
    )
    outputs = [boxes, classes, scores, count] if order == "tf1" else [scores, boxes, count, classes]
    b.output(*outputs)
    model = b.build_model()
    if signature:
        # TF2 exports name the postprocess outputs output_0..3 as count, scores, classes, boxes.
        model.set_signature(
            "serving_default", {"images": image},
            {"output_0": count, "output_1": scores, "output_2": classes, "output_3": boxes},
        )
    return model.to_bytes()


def write_bundle(root: Path, order: str, signature: bool = False, toml: str = 'task = "detect"\n') -> Path:
    folder = root / f"ssd_{order}{'_sig' if signature else ''}"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(build_ssd(order, signature))
    (folder / "labels.txt").write_text(LABELS)
    (folder / "model.toml").write_text(toml)
    return folder


def quadrants(size: int = 40) -> np.ndarray:
    """A size x size image whose quadrants hold the four anchor pixels (bilinear to 2x2 keeps them exact)."""
    half = size // 2
    img = np.zeros((size, size, 3), np.uint8)
    img[:half, :half], img[:half, half:] = PIXELS[0, 0], PIXELS[0, 1]
    img[half:, :half], img[half:, half:] = PIXELS[1, 0], PIXELS[1, 1]
    return img


EXPECTED = [  # (id, label, score, bbox in pixels of the 40x40 image)
    (0, "person", 230 / 255, (0.0, 0.0, 20.0, 20.0)),
    (1, "bicycle", 200 / 255, (20.0, 20.0, 40.0, 40.0)),
    (1, "bicycle", 128 / 255, (26.0, 2.0, 34.0, 18.0)),
]


def check(objects, expected):
    assert all(isinstance(o, DetectedObject) for o in objects)
    assert [(o.id, o.label) for o in objects] == [(e[0], e[1]) for e in expected]
    for obj, (_, _, score, bbox) in zip(objects, expected):
        assert obj.score == pytest.approx(score, abs=1e-6)
        assert obj.bbox == pytest.approx(bbox, abs=1e-4)


@pytest.mark.parametrize("order, signature", [("tf1", False), ("tf2", False), ("tf2", True)])
def test_detect_both_output_orders(tmp_path: Path, order: str, signature: bool):
    folder = write_bundle(tmp_path, order, signature)
    bundle = ModelBundle.load(folder)
    if signature:
        assert bundle.output_names == ["output_1", "output_3", "output_0", "output_2"]
    with load_model(folder) as session:
        check(session.detect(quadrants()), EXPECTED)


@pytest.mark.parametrize("order", ["tf1", "tf2"])
def test_detect_by_position_only(tmp_path: Path, order: str):
    folder = write_bundle(tmp_path, order)
    with load_model(folder) as session:
        session.bundle.output_names = ["a", "b", "c", "d"]  # no names to go by: shapes, order and values decide
        check(session.detect(quadrants()), EXPECTED)


def test_task_is_inferred_from_the_postprocess_op(tmp_path: Path):
    folder = write_bundle(tmp_path, "tf1", toml="")
    assert ModelBundle.load(folder).task == "detect"


def test_threshold_and_top_k(tmp_path: Path):
    with load_model(write_bundle(tmp_path, "tf1")) as session:
        check(session.detect(quadrants(), threshold=0.6), EXPECTED[:2])
        check(session.detect(quadrants(), top_k=1), EXPECTED[:1])
        low = session.detect(quadrants(), threshold=0.05, top_k=10)
        assert len(low) == 4 and low[-1].bbox == pytest.approx((2.0, 26.0, 18.0, 34.0), abs=1e-4)


def test_boxes_map_back_through_a_letterbox(tmp_path: Path):
    toml = 'task = "detect"\n[preprocess]\nresize = "letterbox"\n'
    # 80 wide x 40 tall: letterboxed to 2 wide x 1 tall at the top, the bottom row is padding (zeros).
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40], img[:, 40:] = PIXELS[0, 0], PIXELS[0, 1]
    with load_model(write_bundle(tmp_path, "tf2", toml=toml)) as session:
        objects = session.detect(img)
    # Input pixels -> source pixels: divide by the scale 2/80; y beyond the image is clipped to 40.
    check(objects, [(0, "person", 230 / 255, (0.0, 0.0, 40.0, 40.0)), (1, "bicycle", 128 / 255, (52.0, 4.0, 68.0, 36.0))])


def test_roi_offsets_boxes(tmp_path: Path):
    img = np.zeros((100, 100, 3), np.uint8)
    img[30:70, 10:50] = quadrants()
    with load_model(write_bundle(tmp_path, "tf1")) as session:
        objects = session.detect(img, roi=(10, 30, 40, 40))
    shifted = [(i, l, s, (b[0] + 10, b[1] + 30, b[2] + 10, b[3] + 30)) for i, l, s, b in EXPECTED]
    check(objects, shifted)


def test_detect_on_a_classifier_is_a_model_error(tmp_path: Path):
    b = ModelBuilder()
    x = b.input("image", [1, 2, 2, 3], np.uint8, scale=1 / 255, zero_point=0)
    b.output(b.reshape(x, [1, 12]))
    path = tmp_path / "classifier.tflite"
    path.write_bytes(b.build())
    with load_model(path) as session:
        assert session.bundle.task == "classify"
        with pytest.raises(ModelError, match="4 outputs"):
            session.detect(quadrants())
