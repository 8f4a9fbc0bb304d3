"""Protobuf messages <-> the client's plain values."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from edgetpud.daemon.wire import FRAME_DATA, IMAGE_ENCODED, IMAGE_FRAME, LENGTH_DELIMITED, encode_varint, tensor
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb

from .types import (AddedSamples, Class, ClassifyResult, DetectedObject, DetectResult, Device, DeviceUsage,
                    EmbedResult, ExportResult, Frame, HeadVersion, InvokeResult, LearnedClass, LearnedModel, Model,
                    RequestSummary, Result, SharedFrame, Status, TensorInfo, Timing, TrainProgress)

ImageLike = Union[bytes, str, Path, Frame, SharedFrame, np.ndarray]
Crop = Tuple[int, int, int, int]

PIXEL_FORMATS = {"RGB": pb.PIXEL_FORMAT_RGB, "BGR": pb.PIXEL_FORMAT_BGR, "RGBA": pb.PIXEL_FORMAT_RGBA,
                 "BGRA": pb.PIXEL_FORMAT_BGRA, "GRAY": pb.PIXEL_FORMAT_GRAY}
TASKS = {"classify": pb.TASK_CLASSIFY, "detect": pb.TASK_DETECT, "embed": pb.TASK_EMBED, "raw": pb.TASK_RAW}
_ARRAY_FORMATS = {1: "GRAY", 3: "RGB", 4: "RGBA"}


def image(value: ImageLike, crop: Optional[Crop] = None) -> pb.Image:
    """An Image message from encoded bytes, a file path, a Frame or an HxW[xC] uint8 array.

    Raises:
        ValueError: see :func:`fill_image`.
        OSError: a path that cannot be read.
    """
    msg = pb.Image()
    fill_image(msg, value, crop)
    return msg


def fill_image(msg: pb.Image, value: ImageLike, crop: Optional[Crop] = None) -> None:
    """Fill ``msg`` (usually a request's own image field, so a large frame is not copied again).

    Raises:
        ValueError: an array that is not uint8 HxW, HxWx1, HxWx3 or HxWx4, or an unknown pixel format.
        OSError: a path that cannot be read.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        msg.encoded = bytes(value)
    elif isinstance(value, (str, Path)):
        msg.encoded = Path(value).read_bytes()
    elif isinstance(value, (Frame, np.ndarray)):
        _set_frame(msg.frame, *_frame_fields(value))
    elif isinstance(value, SharedFrame):
        msg.frame.CopyFrom(shared_frame(value))
    else:
        raise ValueError(f"cannot send {type(value).__name__} as an image: pass bytes, a path, a Frame, a "
                         "SharedFrame or an array")
    if crop is not None:
        x, y, w, h = crop
        msg.crop.CopyFrom(pb.Crop(x=x, y=y, width=w, height=h))


def shared_frame(value: SharedFrame) -> pb.RawFrame:
    """The RawFrame naming a SharedFrame's span (no pixels travel).

    Raises:
        ValueError: an unknown pixel format, or a ring's frame sent before (once sent, it goes with that call).
    """
    claim = getattr(value.release, "claim", None)
    if claim is not None:
        claim()  # once per frame: see shared._Release
    pixel_format = value.pixel_format.upper()
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"unknown pixel format {value.pixel_format!r}; use one of {sorted(PIXEL_FORMATS)}")
    return pb.RawFrame(width=value.width, height=value.height, stride=value.stride,
                       pixel_format=PIXEL_FORMATS[pixel_format],
                       shared=pb.SharedSpan(region=value.region, offset=value.offset, byte_size=value.byte_size))


# ------------------------------------------------------------------ requests carrying one image

def _len_field(number: int, length: int) -> bytes:
    """The key and length of a length-delimited field (the payload follows)."""
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(length)


def _byte_view(data: Any) -> Any:
    """``data`` as a flat bytes-like object without copying it when it is contiguous."""
    if isinstance(data, bytes):
        return data
    view = memoryview(data)
    return view.cast("B") if view.c_contiguous else bytes(data)


def encode_image_request(request: Any, value: ImageLike, crop: Optional[Crop] = None) -> bytes:
    """``request`` (whose ``image`` is left unset) serialized with ``value`` as its image.

    The same bytes as setting ``request.image`` and calling ``SerializeToString`` (up to
    field order, which protobuf parsers ignore), but the pixels are copied once, into
    the result, instead of three times (``tobytes``, into the message, out of it): a
    640x480 frame is 0.9 MB and these copies cost a noticeable part of a round trip.

    Raises:
        ValueError: see :func:`fill_image`.
        OSError: a path that cannot be read.
    """
    parts = _image_parts(value, crop)
    size = sum(len(p) for p in parts)
    number = request.DESCRIPTOR.fields_by_name["image"].number
    return b"".join([request.SerializeToString(), _len_field(number, size), *parts])


def _image_parts(value: ImageLike, crop: Optional[Crop]) -> list:
    """The serialized fields of an Image message, as a list of bytes-like pieces to join."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = _byte_view(value)
        parts = [_len_field(IMAGE_ENCODED, len(data)), data]
    elif isinstance(value, (str, Path)):
        data = Path(value).read_bytes()
        parts = [_len_field(IMAGE_ENCODED, len(data)), data]
    elif isinstance(value, (Frame, np.ndarray)):
        parts = _frame_parts(*_frame_fields(value))
    elif isinstance(value, SharedFrame):
        parts = [pb.Image(frame=shared_frame(value)).SerializeToString()]
    else:
        raise ValueError(f"cannot send {type(value).__name__} as an image: pass bytes, a path, a Frame, a "
                         "SharedFrame or an array")
    if crop is not None:
        x, y, w, h = crop
        parts.append(pb.Image(crop=pb.Crop(x=x, y=y, width=w, height=h)).SerializeToString())
    return parts


def _frame_fields(value: Union[Frame, np.ndarray]) -> Tuple[Any, int, int, int, str]:
    """(pixels as a flat bytes-like view, width, height, stride, pixel format) of a Frame or an array.

    Raises:
        ValueError: an unknown pixel format, or an array that is not uint8 HxW, HxWx1, HxWx3 or HxWx4.
    """
    if isinstance(value, Frame):
        pixel_format = value.pixel_format.upper()
        if pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"unknown pixel format {value.pixel_format!r}; use one of {sorted(PIXEL_FORMATS)}")
        return _byte_view(value.data), value.width, value.height, value.stride, pixel_format
    channels = 1 if value.ndim == 2 else (value.shape[2] if value.ndim == 3 else 0)
    if value.dtype != np.uint8 or channels not in _ARRAY_FORMATS:
        raise ValueError(f"an image array must be uint8 HxW, HxWx3 (RGB) or HxWx4 (RGBA), "
                         f"got {value.dtype} {list(value.shape)}")
    array = np.ascontiguousarray(value)
    return memoryview(array).cast("B"), array.shape[1], array.shape[0], array.strides[0], _ARRAY_FORMATS[channels]


def _frame_parts(data: Any, width: int, height: int, stride: int, pixel_format: str) -> list:
    head = pb.RawFrame(width=width, height=height, stride=stride,
                       pixel_format=PIXEL_FORMATS[pixel_format]).SerializeToString()
    data_key = _len_field(FRAME_DATA, len(data)) if len(data) else b""
    body = [head, data_key, data] if len(data) else [head]
    return [_len_field(IMAGE_FRAME, sum(len(p) for p in body)), *body]


def _set_frame(frame: pb.RawFrame, data: Any, width: int, height: int, stride: int, pixel_format: str) -> None:
    """Fill the message in place: frames are large, so no intermediate message is copied."""
    frame.data = bytes(data)
    frame.width = width
    frame.height = height
    frame.stride = stride
    frame.pixel_format = PIXEL_FORMATS[pixel_format]


def tensors(values: Union[Dict[str, np.ndarray], Sequence[np.ndarray]]) -> list:
    items = values.items() if isinstance(values, dict) else (("", v) for v in values)
    return [tensor(name, np.asarray(v)) for name, v in items]


def array(msg: pb.Tensor) -> np.ndarray:
    dtype = np.dtype(msg.dtype)
    return np.frombuffer(msg.data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(tuple(msg.shape))


def _served(msg: pb.ServedBy) -> Dict[str, Any]:
    t = msg.timing
    return {"model": msg.model, "version": msg.version, "device": msg.device,
            "timing": Timing(t.queue_s, t.preprocess_s, t.invoke_s, t.postprocess_s)}


def _label(msg: Any) -> Optional[str]:
    return msg.label if msg.HasField("label") else None


def classes(items: Sequence[pb.Class]) -> list:
    return [Class(c.id, _label(c), c.score) for c in items]


def objects(items: Sequence[pb.DetectedObject]) -> list:
    return [DetectedObject(o.id, _label(o), o.score, (o.bbox.xmin, o.bbox.ymin, o.bbox.xmax, o.bbox.ymax),
                           (o.normalized_bbox.xmin, o.normalized_bbox.ymin, o.normalized_bbox.xmax,
                            o.normalized_bbox.ymax) if o.HasField("normalized_bbox") else None)
            for o in items]


def classify_result(msg: Any) -> ClassifyResult:
    return ClassifyResult(**_served(msg.served_by), classes=classes(msg.classes))


def detect_result(msg: Any) -> DetectResult:
    return DetectResult(**_served(msg.served_by), objects=objects(msg.objects))


def embed_result(msg: Any) -> EmbedResult:
    return EmbedResult(**_served(msg.served_by), embedding=array(msg.embedding))


def invoke_result(msg: Any) -> InvokeResult:
    return InvokeResult(**_served(msg.served_by), outputs={t.name: array(t) for t in msg.outputs})


def stream_payload(task: str, msg: pb.StreamResponse) -> Result:
    return {"classify": classify_result, "detect": detect_result, "embed": embed_result,
            "raw": invoke_result}[task](msg)


def device(msg: pb.Device) -> Device:
    return Device(id=msg.id, kind=msg.kind, index=msg.index, path=msg.path, state=msg.state,
                  temperature_c=msg.temperature_c if msg.HasField("temperature_c") else None,
                  throttle_level=msg.throttle_level if msg.HasField("throttle_level") else None,
                  models=list(msg.models), restarts=msg.restarts, error=msg.error)


def _tensor_info(msg: pb.TensorInfo) -> TensorInfo:
    return TensorInfo(msg.name, msg.dtype, tuple(msg.shape), msg.scale, msg.zero_point)


def _report(msg: pb.ModelInfo) -> Optional[Dict[str, Any]]:
    if not msg.HasField("report"):
        return None
    r = msg.report
    return {"verdict": r.verdict,
            "operators": [{"index": o.index, "op": o.op, "target": o.target,
                           "reason": o.reason if o.HasField("reason") else None} for o in r.operators],
            "summary": {"tpu_ops": r.tpu_ops, "cpu_ops": r.cpu_ops}}


def model(msg: pb.ModelInfo) -> Model:
    return Model(name=msg.name, version=msg.version, task=msg.task, state=msg.state, path=msg.path,
                 devices=list(msg.devices), inputs=[_tensor_info(t) for t in msg.inputs],
                 outputs=[_tensor_info(t) for t in msg.outputs], report=_report(msg), error=msg.error,
                 edgetpu_compiled=msg.edgetpu_compiled, label_count=msg.label_count,
                 versions=list(msg.versions), description=msg.description, problems=list(msg.problems))


def status(msg: pb.StatusResponse) -> Status:
    return Status(ready=msg.ready, devices=[device(d) for d in msg.devices],
                  models=[model(m) for m in msg.models], version=msg.version, uptime_s=msg.uptime_s,
                  requests=[RequestSummary(model=r.model, count=r.count, errors=r.errors, codes=dict(r.codes),
                                           p50_s=r.p50_s, p90_s=r.p90_s, p99_s=r.p99_s) for r in msg.requests],
                  usage=[DeviceUsage(device=u.device, invocations=u.invocations, busy_s=u.busy_s,
                                     utilization=u.utilization) for u in msg.usage])


# ------------------------------------------------------------------ learning


def embedding(value: Any) -> pb.Embedding:
    """An Embedding message from any array-like of numbers (flattened: [1,D], [1,1,1,D] and [D] alike).

    Raises:
        ValueError: not numbers, or empty.
    """
    values = np.asarray(value, dtype=np.float32).ravel()
    if values.size == 0:
        raise ValueError("an embedding needs at least one value")
    return pb.Embedding(values=values.tolist())


def learned_model(msg: pb.LearnedModel) -> LearnedModel:
    return LearnedModel(model=msg.model, version=msg.version, head_version=msg.head_version, method=msg.method,
                        classes=_learned_classes(msg))


def _learned_classes(msg: pb.LearnedModel) -> list:
    return [LearnedClass(c.id, c.label, c.samples, c.source) for c in msg.classes]


def added_samples(msg: pb.AddSamplesResponse) -> AddedSamples:
    m = msg.model
    return AddedSamples(model=m.model, version=m.version, head_version=m.head_version, method=m.method,
                        classes=_learned_classes(m), added=msg.added)


def train_progress(msg: pb.TrainProgress) -> TrainProgress:
    validation = msg.validation_accuracy
    return TrainProgress(epoch=msg.epoch, epochs=msg.epochs, loss=msg.loss, train_accuracy=msg.train_accuracy,
                         validation_accuracy=validation if math.isfinite(validation) else None,
                         model=learned_model(msg.model) if msg.HasField("model") else None)


def head_version(msg: pb.HeadVersion) -> HeadVersion:
    return HeadVersion(head_version=msg.head_version, method=msg.method, created=msg.created,
                       labels=list(msg.labels), current=msg.current)


def label_lines(text: str) -> list:
    """The header's "one label a line" as a list in class id order (a final newline is not a label)."""
    if not text:
        return []
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def export_result(header: pb.ExportHeader, data: bytes) -> ExportResult:
    return ExportResult(model=header.model, head_version=header.head_version, target=header.target,
                        size=header.size, labels=label_lines(header.labels), data=data)
