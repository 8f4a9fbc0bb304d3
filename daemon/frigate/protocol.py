"""Frigate's ``zmq`` detector protocol as plain values: frames in, frames out (no sockets here).

What Frigate sends (``frigate/detectors/plugins/zmq_ipc.py``, REQ socket):

- ``[{"model_request": true, "model_name": NAME}]``: is NAME (the base name of
  Frigate's ``model.path``) served? Answer ``{"model_available", "model_loaded"}``;
  both true and Frigate starts; available but not loaded and it gives up; not
  available and it uploads the file:
- ``[{"model_data": true, "model_name": NAME}, FILE]``: answer
  ``{"model_saved", "model_loaded"}``.
- ``[{"shape", "dtype", "model_type"}, TENSOR]``: one detection on the C-order bytes
  of the model's input tensor. Answer ``[20, 6]`` float32 rows ``[class_id, score,
  ymin, xmin, ymax, xmax]``; Frigate also takes ``[header {shape, dtype}, bytes]``.

Errors are answered in the same shapes, so that Frigate reads them as "nothing"
(false flags, or zero detections) while a person or a test can read ``error``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

#: Rows Frigate reads, and the fields of each: class_id, score, ymin, xmin, ymax, xmax.
MAX_DETECTIONS = 20
ROW_FIELDS = 6
#: Frigate's own Edge TPU detector stops at the first score below this.
SCORE_THRESHOLD = 0.4
#: A header is a small JSON object; anything longer is not Frigate talking.
MAX_HEADER_BYTES = 64 * 1024
#: The file suffix a model name must have: the daemon serves TFLite models only.
MODEL_SUFFIX = ".tflite"


class ProtocolError(ValueError):
    """A request that is not Frigate's protocol, or asks for something that cannot be.

    ``kind`` says which answer shape the client waits for: ``query`` and ``upload``
    get the handshake's flags, ``tensor`` (also a header that cannot be read) zero detections.
    """

    def __init__(self, message: str, kind: str = "tensor") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ModelQuery:
    """``model_request``: is this model served?"""

    model_name: str


@dataclass(frozen=True)
class ModelUpload:
    """``model_data``: here is the file of a model that was not available."""

    model_name: str
    data: bytes


@dataclass(frozen=True)
class TensorRequest:
    """One detection on the model's input tensor (``model_type`` is Frigate's, e.g. ``ssd``)."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    model_type: Optional[str]
    data: bytes

    def array(self) -> np.ndarray:
        """The tensor, a view on the received bytes.

        Raises:
            ProtocolError: the byte count does not match the shape and dtype.
        """
        expected = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        if len(self.data) != expected:
            raise ProtocolError(f"the tensor has {len(self.data)} bytes; shape {list(self.shape)} of "
                                f"{self.dtype.name} needs {expected}")
        return np.frombuffer(self.data, dtype=self.dtype).reshape(self.shape)


Request = Union[ModelQuery, ModelUpload, TensorRequest]


def parse_request(frames: Sequence[bytes]) -> Request:
    """Read one request's frames (the REQ envelope already removed).

    Raises:
        ProtocolError: no frames, a header that is not a JSON object, missing or
            mistyped fields, or the wrong number of frames for the request.
    """
    if not frames:
        raise ProtocolError("empty request: expected [JSON header] or [JSON header, data]")
    header = _header(frames[0])
    if header.get("model_request") is True:
        _expect_frames(frames, 1, "a model_request", "query")
        return ModelQuery(_model_name(header, "query"))
    if header.get("model_data") is True:
        _expect_frames(frames, 2, "a model_data upload", "upload")
        return ModelUpload(_model_name(header, "upload"), bytes(frames[1]))
    _expect_frames(frames, 2, "a tensor request")
    shape = header.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ProtocolError(f"header 'shape' must be a list of positive integers, got {shape!r}")
    dtype_name = header.get("dtype")
    if not isinstance(dtype_name, str):
        raise ProtocolError(f"header 'dtype' must be a numpy dtype name such as \"uint8\", got {dtype_name!r}")
    try:
        dtype = np.dtype(dtype_name)
    except TypeError:
        raise ProtocolError(f"header 'dtype' {dtype_name!r} is not a numpy dtype name") from None
    if dtype.kind not in "biuf":
        raise ProtocolError(f"header 'dtype' {dtype_name!r} is not a number type")
    model_type = header.get("model_type")
    return TensorRequest(tuple(shape), dtype, model_type if isinstance(model_type, str) else None, frames[1])


def model_bundle_name(model_name: str, kind: str = "query") -> str:
    """The bundle a Frigate model name means: ``traffic_model.tflite`` -> ``traffic_model``.

    Raises:
        ProtocolError: the name is not a ``.tflite`` file name (a path, an ONNX file, ...).
    """
    if "/" in model_name or "\\" in model_name or "\0" in model_name:
        raise ProtocolError(f"model_name {model_name!r} must be a file name, not a path", kind)
    if not model_name.endswith(MODEL_SUFFIX) or len(model_name) == len(MODEL_SUFFIX):
        raise ProtocolError(f"model_name {model_name!r} is not a {MODEL_SUFFIX} file: edgetpud serves "
                            "TensorFlow Lite models (set Frigate's model.path to one)", kind)
    return model_name[:-len(MODEL_SUFFIX)]


def status_reply(**fields: Any) -> List[bytes]:
    """A one-frame JSON answer to the model handshake (``error`` added when not None)."""
    body = {k: v for k, v in fields.items() if v is not None}
    return [json.dumps(body).encode()]


_ROWS_HEADER = json.dumps({"shape": [MAX_DETECTIONS, ROW_FIELDS], "dtype": "float32"}).encode()


def detections_reply(rows: np.ndarray, error: Optional[str] = None) -> List[bytes]:
    """``[header, [20, 6] float32]``: Frigate reads the header's shape and dtype; ``error`` is for people."""
    if rows.shape != (MAX_DETECTIONS, ROW_FIELDS) or rows.dtype != np.float32:
        raise ValueError(f"detections must be float32 [{MAX_DETECTIONS}, {ROW_FIELDS}], got {rows.dtype} {rows.shape}")
    if error is None:
        return [_ROWS_HEADER, rows.tobytes()]
    header: Dict[str, Any] = {"shape": [MAX_DETECTIONS, ROW_FIELDS], "dtype": "float32", "error": error}
    return [json.dumps(header).encode(), rows.tobytes()]


def error_detections(error: str) -> List[bytes]:
    """No detections, and why: what Frigate itself falls back to on any failure."""
    return detections_reply(np.zeros((MAX_DETECTIONS, ROW_FIELDS), np.float32), error)


def detection_rows(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """``[20, 6]`` rows from the postprocess's real values: ``boxes`` ``[N, 4]`` (ymin, xmin, ymax,
    xmax, normalized), ``classes`` and ``scores`` ``[N]``, the first ``count`` of them valid.

    Like Frigate's Edge TPU detector: at most 20, none below ``SCORE_THRESHOLD``, best
    first (ties in the model's order), zero rows after the last. A box given with its
    corners swapped is put right. Whole arrays at a time: this runs for every frame.
    """
    rows = np.zeros((MAX_DETECTIONS, ROW_FIELDS), np.float32)
    count = max(0, min(int(count), len(scores)))
    valid = scores[:count]
    kept = np.flatnonzero(valid >= SCORE_THRESHOLD)
    kept = kept[np.argsort(-valid[kept], kind="stable")][:MAX_DETECTIONS]
    n = len(kept)
    if n:
        box = boxes[kept]
        rows[:n, 0] = np.round(classes[kept])
        rows[:n, 1] = valid[kept]
        rows[:n, 2] = np.minimum(box[:, 0], box[:, 2])
        rows[:n, 3] = np.minimum(box[:, 1], box[:, 3])
        rows[:n, 4] = np.maximum(box[:, 0], box[:, 2])
        rows[:n, 5] = np.maximum(box[:, 1], box[:, 3])
    return rows


def _header(frame: bytes) -> Dict[str, Any]:
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(f"the header frame is {len(frame)} bytes; a JSON header is at most {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(frame).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("the first frame must be a JSON header (UTF-8)") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"the JSON header must be an object, got {type(header).__name__}")
    return header


def _model_name(header: Dict[str, Any], kind: str) -> str:
    name = header.get("model_name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"'model_name' must be a non-empty string, got {name!r}", kind)
    return name


def _expect_frames(frames: Sequence[bytes], count: int, what: str, kind: str = "tensor") -> None:
    if len(frames) != count:
        raise ProtocolError(f"{what} has {count} frame(s), this request has {len(frames)}", kind)
