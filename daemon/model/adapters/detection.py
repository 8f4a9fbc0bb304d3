"""Detection: objects from the four outputs of ``TFLite_Detection_PostProcess`` (SSD models).

TF1 and TF2 exports order those outputs differently; ``detection_layout`` finds
which is which from signature names, shapes and, when still ambiguous, the values.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgetpud.daemon.errors import ModelError
from edgetpud.daemon.results import DetectedObject
from edgetpud.hal.executor import TensorSpec

from ..preprocess import ImageTransform
from .common import check_outputs, check_top_k, dequantize

log = logging.getLogger(__name__)

#: The custom operator that ends SSD detection models.
DETECTION_POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def postprocess_shapes(custom_options: Optional[bytes]) -> Optional[Tuple[Tuple[int, ...], ...]]:
    """The shapes of the four outputs of ``TFLite_Detection_PostProcess`` (boxes, classes, scores,
    count, the kernel's own order) from its options.

    Some exports (the AutoML Video traffic model) leave those shapes out of the file: the
    kernel sets them when tensors are allocated, to N = max_detections x
    max_classes_per_detection detections. None when the options do not say.
    """
    if not custom_options:
        return None
    try:
        from flatbuffers import flexbuffers

        options = flexbuffers.Loads(custom_options)
        n = int(options["max_detections"]) * int(options.get("max_classes_per_detection", 1))
    except Exception:  # noqa: BLE001 - unreadable options: the shapes stay unknown
        return None
    return ((1, n, 4), (1, n), (1, n), (1,))


@dataclass(frozen=True)
class DetectionLayout:
    """Which output index holds boxes, classes, scores and the count."""

    boxes: int
    classes: int
    scores: int
    count: int


_ROLE_WORDS = (("boxes", "box"), ("classes", "class"), ("scores", "score"), ("count", "num"), ("count", "count"))
_GENERIC_NAME = re.compile(r"^output_(\d+)$")
# TF2 exports name the postprocess outputs output_0..3 in this order.
_GENERIC_ROLES = {0: "count", 1: "scores", 2: "classes", 3: "boxes"}


def _shape_ok(layout: Dict[str, int], specs: Sequence[TensorSpec]) -> bool:
    def size(i: int) -> int:
        return int(np.prod(specs[i].shape)) if specs[i].shape else 1

    boxes = specs[layout["boxes"]].shape
    return (
        len(set(layout.values())) == 4
        and bool(boxes) and boxes[-1] == 4
        and size(layout["count"]) == 1
        and size(layout["classes"]) == size(layout["scores"]) == size(layout["boxes"]) // 4
    )


def _layout_from_names(names: Sequence[str], specs: Sequence[TensorSpec]) -> Optional[Dict[str, int]]:
    roles: Dict[str, int] = {}
    for i, name in enumerate(names):
        lowered = (name or "").lower()
        generic = _GENERIC_NAME.match(lowered)
        if generic and int(generic.group(1)) in _GENERIC_ROLES:
            role: Optional[str] = _GENERIC_ROLES[int(generic.group(1))]
        else:
            role = next((r for r, word in _ROLE_WORDS if word in lowered), None)
        if role is None or role in roles:
            return None
        roles[role] = i
    if len(roles) == 4 and _shape_ok(roles, specs):
        return roles
    return None


def named_layout(specs: Sequence[TensorSpec], names: Sequence[str]) -> Optional[DetectionLayout]:
    """The layout when the outputs' names say every role (then no frame's values are needed), else None."""
    if len(names) != 4 or len(specs) != 4:
        return None
    found = _layout_from_names(names, specs)
    return DetectionLayout(**found) if found is not None else None


def detection_layout(
    specs: Sequence[TensorSpec],
    names: Optional[Sequence[str]] = None,
    values: Optional[Sequence[np.ndarray]] = None,
) -> DetectionLayout:
    """Find boxes, classes, scores and count among the 4 outputs of ``TFLite_Detection_PostProcess``.

    Signature output names decide when they name every role. Otherwise boxes are
    the ``[1, N, 4]`` output and the count the one-value output; of the two
    ``[1, N]`` outputs, the first is classes when it follows the boxes (TF1 order
    boxes, classes, scores, count) and scores when it precedes them (TF2 order
    scores, boxes, count, classes). With ``values``, an unambiguous look at the
    data (class ids are whole numbers, scores lie in [0, 1]) overrides the order.

    Raises:
        ModelError: the outputs are not shaped like a detection postprocess.
    """
    if len(specs) != 4:
        raise ModelError(
            f"detect: a detection model has 4 outputs (boxes, classes, scores, count), this one has {len(specs)}"
        )
    if names is not None:
        named = named_layout(specs, names)
        if named is not None:
            return named
    sizes = [int(np.prod(s.shape)) if s.shape else 1 for s in specs]
    shapes = [list(s.shape) for s in specs]
    box_idx = [i for i, s in enumerate(specs) if len(s.shape) >= 2 and s.shape[-1] == 4]
    if not box_idx:
        raise ModelError(f"detect: outputs {shapes} have no boxes [1,N,4]")
    # With N = 4, classes and scores [1, 4] also end in 4: the boxes are the higher-rank, larger one.
    boxes = max(box_idx, key=lambda i: (len(specs[i].shape), sizes[i], -i))
    n = sizes[boxes] // 4
    count_idx = [i for i in range(4) if i != boxes and sizes[i] == 1]
    if len(count_idx) == 3 and n == 1:
        # Everything but the boxes holds one value: only the order can tell (TF1 count last, TF2 count third).
        count_idx = [3 if boxes == 0 else 2]
    if len(count_idx) != 1:
        raise ModelError(f"detect: outputs {shapes} do not look like boxes [1,N,4], classes, scores and count [1]")
    count = count_idx[0]
    first, second = [i for i in range(4) if i not in (boxes, count)]
    if sizes[first] != n or sizes[second] != n:
        raise ModelError(f"detect: classes and scores must have {n} values each, like the boxes")
    classes, scores = (first, second) if first > boxes else (second, first)
    if values is not None:
        classes, scores = _refine_by_values(values, classes, scores)
    return DetectionLayout(boxes=boxes, classes=classes, scores=scores, count=count)


def _refine_by_values(values: Sequence[np.ndarray], classes: int, scores: int) -> Tuple[int, int]:
    def looks_like_ids(a: np.ndarray) -> bool:
        a = np.asarray(a, dtype=np.float64)
        return bool(np.all(a >= 0) and np.all(a == np.round(a)))

    def looks_like_scores(a: np.ndarray) -> bool:
        a = np.asarray(a, dtype=np.float64)
        return bool(np.all((a >= 0) & (a <= 1)))

    c, s = values[classes], values[scores]
    if looks_like_ids(c) and looks_like_scores(s):
        return classes, scores
    if looks_like_ids(s) and looks_like_scores(c):
        log.debug("detect: classes and scores swapped according to their values")
        return scores, classes
    return classes, scores


def detect(
    outputs: Sequence[np.ndarray],
    specs: Sequence[TensorSpec],
    labels: Optional[Mapping[int, str]] = None,
    transform: Optional[ImageTransform] = None,
    threshold: float = 0.4,
    top_k: int = 25,
    names: Optional[Sequence[str]] = None,
) -> List[DetectedObject]:
    """Objects scoring at least ``threshold``, best first, at most ``top_k``.

    Boxes come out of the model as normalised (ymin, xmin, ymax, xmax) of the model
    input; ``transform`` maps them back through the resize or letterbox to source
    pixels (without it, bboxes stay normalised, in (xmin, ymin, xmax, ymax) order).

    Raises:
        ModelError: the outputs are not those of a detection postprocess.
        ValueError: ``top_k`` < 1 or a non-finite threshold.
    """
    check_top_k(top_k, threshold)
    check_outputs(outputs, specs, "detect")
    real = [dequantize(a, s) for a, s in zip(outputs, specs)]
    layout = detection_layout(specs, names, real)
    boxes = real[layout.boxes].reshape(-1, 4)
    classes = real[layout.classes].reshape(-1)
    scores = real[layout.scores].reshape(-1)
    count = int(np.clip(real[layout.count].reshape(-1)[0], 0, boxes.shape[0]))
    keep = [i for i in range(count) if scores[i] >= threshold]
    keep.sort(key=lambda i: (-float(scores[i]), i))
    objects: List[DetectedObject] = []
    for i in keep[:top_k]:
        ymin, xmin, ymax, xmax = (float(v) for v in boxes[i])
        normalized: Optional[Tuple[float, float, float, float]]
        if transform is not None:
            bbox = transform.box_to_source(ymin, xmin, ymax, xmax)
            normalized = _normalized(bbox, transform)
        else:
            bbox = (min(xmin, xmax), min(ymin, ymax), max(xmin, xmax), max(ymin, ymax))
            normalized = bbox
        class_id = int(round(float(classes[i])))
        objects.append(DetectedObject(class_id, (labels or {}).get(class_id), float(scores[i]), bbox, normalized))
    return objects


def _normalized(bbox: Tuple[float, float, float, float],
                transform: ImageTransform) -> Optional[Tuple[float, float, float, float]]:
    """A source-pixel box as fractions of the source image (what Frigate-style apps take), if its size is known."""
    width, height = transform.source_width, transform.source_height
    if not width or not height:
        return None
    x0, y0, x1, y1 = bbox
    return (x0 / width, y0 / height, x1 / width, y1 / height)
