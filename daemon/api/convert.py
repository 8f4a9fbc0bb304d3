"""Protobuf <-> service-core values, field by field.

Kept apart from the servicers so each servicer reads as "convert, call, convert".
Only malformed messages are rejected here (RequestError); everything about
whether an image or a tensor suits a model is the service's call.
"""
from __future__ import annotations

import enum
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgetpud.daemon import service as core
from edgetpud.daemon.metrics import MetricsSummary
from edgetpud.daemon.model.preprocess import MAX_PIXELS
from edgetpud.daemon.registry import ModelState
from edgetpud.daemon.results import Class, DetectedObject
from edgetpud.daemon.wire import tensor
from edgetpud.hal.device import DeviceInfo
from edgetpud.hal.executor import TensorSpec
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb

from .status import RequestError

PIXEL_FORMATS = {
    pb.PIXEL_FORMAT_UNSPECIFIED: "RGB",
    pb.PIXEL_FORMAT_RGB: "RGB",
    pb.PIXEL_FORMAT_BGR: "BGR",
    pb.PIXEL_FORMAT_RGBA: "RGBA",
    pb.PIXEL_FORMAT_BGRA: "BGRA",
    pb.PIXEL_FORMAT_GRAY: "GRAY",
}
BYTES_PER_PIXEL = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "GRAY": 1}
TASKS = {
    pb.TASK_UNSPECIFIED: "classify",
    pb.TASK_CLASSIFY: "classify",
    pb.TASK_DETECT: "detect",
    pb.TASK_EMBED: "embed",
    pb.TASK_RAW: "raw",
}


# ------------------------------------------------------------------ requests

#: Reads a frame's shared span: (region, offset, byte_size, what) -> the bytes (see kserve_shm.SharedTensors).
SharedReader = Callable[[str, int, int, str], Any]


def image_input(image: pb.Image, pixels: Optional[memoryview] = None,
                shared: Optional[SharedReader] = None) -> "core.ImageInput":
    """An ImageInput from an Image message; ``pixels``, when given, replace its emptied bytes (see lift.py).

    A frame whose pixels are in shared memory (``frame.shared``) is read through ``shared``.

    Raises:
        RequestError: neither encoded bytes nor a frame were sent, the pixel format is unknown, or a
            frame has both data and a shared span.
    """
    source = image.WhichOneof("source")
    crop = None
    if image.HasField("crop"):
        c = image.crop
        crop = (int(c.x), int(c.y), int(c.width), int(c.height))
    if source == "encoded":
        return core.ImageInput(data=image.encoded if pixels is None else pixels, crop=crop)
    if source == "frame":
        f = image.frame
        if f.pixel_format not in PIXEL_FORMATS:
            raise RequestError(f"unknown pixel_format {f.pixel_format}; use one of RGB, BGR, RGBA, BGRA, GRAY")
        fmt = PIXEL_FORMATS[f.pixel_format]
        stride = int(f.stride) or int(f.width) * BYTES_PER_PIXEL[fmt]
        data: Any = f.data if pixels is None else pixels
        if f.HasField("shared"):
            data = _shared_pixels(f, len(data), stride, shared)
        frame = core.RawFrame(data=data, width=int(f.width), height=int(f.height), stride=stride, pixel_format=fmt)
        return core.ImageInput(frame=frame, crop=crop)
    raise RequestError("the request has no image: set image.encoded (JPEG/PNG/BMP bytes) or image.frame")


def _shared_pixels(frame: pb.RawFrame, sent: int, stride: int, shared: Optional[SharedReader]) -> Any:
    """The pixels of a frame sent as a shared-memory span, its size checked before a byte is read.

    Raises:
        RequestError: the frame also carries data, names no region, is larger than an image may be, its
            span is not the frame's ``stride * height`` bytes, or shared memory is not offered here.
        NotFoundError, InvalidArgumentError, PermissionDeniedError: see ``Region.read``.
    """
    span = frame.shared
    if sent:
        raise RequestError("image.frame has both data and a shared span: send the pixels one way")
    if not span.region:
        raise RequestError("image.frame.shared names no region: register one with SystemSharedMemoryRegister "
                           "and give its name")
    if shared is None:
        raise RequestError("image.frame.shared is not taken by this call: send the pixels as data")
    width, height = int(frame.width), int(frame.height)
    if width * height > MAX_PIXELS:
        raise RequestError(f"image.frame is {width}x{height} = {width * height} pixels, more than the limit of "
                           f"{MAX_PIXELS}")
    if int(span.byte_size) != stride * height:
        raise RequestError(f"image.frame.shared spans {span.byte_size} bytes; {width}x{height} with stride "
                           f"{stride} needs {stride * height}: set byte_size to stride x height")
    return shared(span.region, int(span.offset), int(span.byte_size), "image.frame.shared")


def tensor_array(tensor: pb.Tensor) -> np.ndarray:
    """A numpy array from a Tensor message (a read-only view on its bytes).

    Raises:
        RequestError: unknown dtype, or the byte count does not match dtype and shape.
    """
    try:
        dtype = np.dtype(tensor.dtype).newbyteorder("<")
    except TypeError:
        raise RequestError(f"tensor '{tensor.name}': unknown dtype {tensor.dtype!r} "
                           "(use numpy names such as uint8, int8, float32)") from None
    if dtype.kind not in "biuf":
        raise RequestError(f"tensor '{tensor.name}': dtype {tensor.dtype!r} is not a numeric tensor type")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise RequestError(f"tensor '{tensor.name}': negative dimension in shape {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize  # exact: numpy's int64 product wraps for huge shapes
    if len(tensor.data) != expected:
        raise RequestError(f"tensor '{tensor.name}': shape {list(shape)} of {dtype.name} needs "
                           f"{expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def tensor_inputs(tensors: Sequence[pb.Tensor], input_names: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Named input arrays; an unnamed tensor takes the name of the model input at its position.

    Raises:
        RequestError: see :func:`tensor_array`; or an unnamed tensor beyond the model's inputs.
    """
    arrays: Dict[str, np.ndarray] = {}
    for i, t in enumerate(tensors):
        name = t.name
        if not name:
            if i >= len(input_names):
                raise RequestError(f"unnamed input tensor #{i}: the model has {len(input_names)} input(s)")
            name = input_names[i]
        arrays[name] = tensor_array(t)
    return arrays


#: The most results a request may ask for: far more classes than any Edge TPU classifier has.
MAX_TOP_K = 10000


def check_result_options(top_k: Optional[int], threshold: Optional[float]) -> None:
    """Refuse a ``top_k`` or ``threshold`` outside what can mean anything (docs/api.md: INVALID_ARGUMENT).

    Raises:
        RequestError: top_k above MAX_TOP_K, or a threshold that is not a score in [0, 1].
    """
    if top_k is not None and not 0 <= top_k <= MAX_TOP_K:
        raise RequestError(f"top_k must be between 0 (the model's default) and {MAX_TOP_K}, not {top_k}")
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise RequestError(f"threshold is a minimum score, between 0 and 1, not {threshold:g}")


def inference_request(image: Optional[pb.Image] = None, tensors: Sequence[pb.Tensor] = (),
                      input_names: Sequence[str] = (), pixels: Optional[memoryview] = None,
                      shared: Optional[SharedReader] = None, **options: Any) -> "core.InferenceRequest":
    """An InferenceRequest; options equal to their proto default (0, False) are left out.

    ``pixels`` are the image's bytes when they were lifted out of the message (see lift.py).

    Raises:
        RequestError: see :func:`image_input` and :func:`tensor_array`.
    """
    check_result_options(options.get("top_k"), options.get("threshold"))
    kept = {k: v for k, v in options.items() if v}
    if tensors:
        return core.InferenceRequest(tensors=tensor_inputs(tensors, input_names), options=kept)
    if image is None:
        raise RequestError("the request has no input: send an image or input tensors")
    return core.InferenceRequest(image=image_input(image, pixels, shared), options=kept)


# ------------------------------------------------------------------ results

def served_by(result: "core.InferenceResult") -> pb.ServedBy:
    timing = result.timing
    return pb.ServedBy(
        model=str(result.model), version=str(result.version or ""), device=str(result.device or ""),
        timing=pb.Timing(queue_s=float(timing.get("queue_s", 0.0)),
                         preprocess_s=float(timing.get("preprocess_s", 0.0)),
                         invoke_s=float(timing.get("invoke_s", 0.0)),
                         postprocess_s=float(timing.get("postprocess_s", 0.0))),
    )


def classes(payload: Iterable[Class]) -> List[pb.Class]:
    out = []
    for c in payload:
        msg = pb.Class(id=int(c.id), score=float(c.score))
        if c.label is not None:
            msg.label = str(c.label)
        out.append(msg)
    return out


def objects(payload: Iterable[DetectedObject]) -> List[pb.DetectedObject]:
    out = []
    for o in payload:
        xmin, ymin, xmax, ymax = (float(v) for v in o.bbox)
        msg = pb.DetectedObject(id=int(o.id), score=float(o.score),
                                bbox=pb.BoundingBox(xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax))
        if o.label is not None:
            msg.label = str(o.label)
        if o.normalized is not None:
            nx0, ny0, nx1, ny1 = (float(v) for v in o.normalized)
            msg.normalized_bbox.CopyFrom(pb.BoundingBox(xmin=nx0, ymin=ny0, xmax=nx1, ymax=ny1))
        out.append(msg)
    return out


def output_tensors(payload: Mapping[str, np.ndarray]) -> List[pb.Tensor]:
    return [tensor(name, np.asarray(array)) for name, array in payload.items()]


# ------------------------------------------------------------------ devices and models

def _text(value: Optional[object]) -> str:
    """A field as text: an enum by its value (a ``str`` enum's ``str()`` is its name), None as ""."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def device(info: DeviceInfo) -> pb.Device:
    msg = pb.Device(id=_text(info.id), kind=_text(info.kind), index=int(info.index or 0),
                    path=_text(info.path), state=_text(info.state),
                    models=[str(m) for m in info.models or []], restarts=int(info.restarts or 0),
                    error=_text(info.error))
    if info.temperature_c is not None:
        msg.temperature_c = float(info.temperature_c)
    if info.throttle_level is not None:
        msg.throttle_level = int(info.throttle_level)
    return msg


def tensor_info(spec: TensorSpec) -> pb.TensorInfo:
    return pb.TensorInfo(name=_text(spec.name), dtype=np.dtype(spec.dtype).name,
                         shape=[int(x) for x in spec.shape or ()], scale=float(spec.scale or 0.0),
                         zero_point=int(spec.zero_point or 0))


def report(r: Optional[Mapping[str, Any]]) -> Optional[pb.CompatibilityReport]:
    """The checker's report, as ``CompatibilityReport.to_dict()`` gives it (what ``ModelState.report`` holds)."""
    if not r:
        return None
    summary = r.get("summary") or {}
    msg = pb.CompatibilityReport(verdict=_text(r.get("verdict")),
                                 tpu_ops=int(summary.get("tpu_ops", 0) or 0),
                                 cpu_ops=int(summary.get("cpu_ops", 0) or 0))
    for o in r.get("operators") or []:
        item = msg.operators.add(index=int(o.get("index") or 0), op=_text(o.get("op")), target=_text(o.get("target")))
        if o.get("reason") is not None:
            item.reason = str(o["reason"])
    return msg


def model_state_and_version(state: ModelState) -> Tuple[str, str]:
    """The ``state`` and ``version`` fields :func:`model` would give, without converting the rest
    (the compatibility report is most of that cost: 0.14 ms for a 31-operator model)."""
    return _text(state.state), _text(state.version)


def model(state: ModelState) -> pb.ModelInfo:
    m = state.to_dict()
    msg = pb.ModelInfo(
        name=_text(m["name"]), version=_text(m["version"]), task=_text(m["task"]),
        state=_text(m["state"]), path=_text(m["path"]),
        devices=[str(d) for d in m["devices"] or []],
        inputs=[tensor_info(s) for s in state.inputs or []],
        outputs=[tensor_info(s) for s in state.outputs or []],
        error=_text(m["error"]), edgetpu_compiled=bool(m["edgetpu_compiled"] or False),
        label_count=int(m["label_count"] or 0),
        versions=[_text(v) for v in m["versions"] or []], description=_text(m["description"]),
        problems=[str(p) for p in m["problems"] or []],
    )
    checked = report(state.report)
    if checked is not None:
        msg.report.CopyFrom(checked)
    return msg


def metrics_summary(summary: MetricsSummary) -> Dict[str, Any]:
    """StatusResponse's uptime_s, requests and usage fields."""
    return {
        "uptime_s": summary.uptime_s,
        "requests": [pb.RequestSummary(model=r.model, count=r.count, errors=r.errors, codes=r.codes, p50_s=r.p50_s,
                                       p90_s=r.p90_s, p99_s=r.p99_s) for r in summary.requests],
        "usage": [pb.DeviceUsage(device=u.device, invocations=u.invocations, busy_s=u.busy_s,
                                 utilization=u.utilization) for u in summary.usage],
    }
