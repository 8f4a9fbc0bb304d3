"""Plain values the client returns: no protobuf leaks into camera apps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import grpc
import numpy as np

from edgetpud.daemon.results import Class, DetectedObject, DeviceUsage, RequestSummary


class ClientError(Exception):
    """A call failed; ``code`` is the gRPC status code and ``message`` says what to do."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        return self.code.name


class ImageTooLargeError(ClientError):
    """RESOURCE_EXHAUSTED for one image: its request is over a message size limit (the message says which
    image, its size, the limit and the ways out), so a caller with several images can go on with the others."""


@dataclass(frozen=True)
class Frame:
    """An uncompressed frame: ``height`` rows of ``stride`` bytes (0: tightly packed)."""

    data: bytes
    width: int
    height: int
    stride: int = 0
    pixel_format: str = "RGB"


@dataclass(frozen=True)
class SharedFrame:
    """An uncompressed frame whose pixels are in a registered shared-memory region (see SharedFrames):
    ``byte_size`` bytes at ``offset`` in region ``region``, ``height`` rows of ``stride`` bytes."""

    region: str
    offset: int
    byte_size: int
    width: int
    height: int
    stride: int = 0
    pixel_format: str = "RGB"
    #: Gives the slot back to its SharedFrames once the frame is answered (None: nothing to give back).
    release: Optional[Callable[[], None]] = field(default=None, compare=False, repr=False)

    @property
    def answered(self) -> bool:
        """Whether its slot was given back: it may hold another frame now, so this one cannot be sent again."""
        return bool(getattr(self.release, "done", False))


@dataclass(frozen=True)
class Timing:
    queue_s: float = 0.0
    preprocess_s: float = 0.0
    invoke_s: float = 0.0
    postprocess_s: float = 0.0


@dataclass(frozen=True)
class Result:
    """Who served a request and how the time split."""

    model: str
    version: str
    device: str
    timing: Timing


@dataclass(frozen=True)
class ClassifyResult(Result):
    classes: List[Class] = field(default_factory=list)


@dataclass(frozen=True)
class DetectResult(Result):
    objects: List[DetectedObject] = field(default_factory=list)


@dataclass(frozen=True)
class EmbedResult(Result):
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass(frozen=True)
class InvokeResult(Result):
    outputs: Dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamResult:
    """The answer for one streamed frame: ``status`` is "ok", "dropped" or "failed"."""

    frame_id: int
    status: str
    result: Optional[Result] = None
    error: Optional[ClientError] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    scale: float = 0.0
    zero_point: int = 0


@dataclass(frozen=True)
class Device:
    id: str
    kind: str
    index: int
    path: str
    state: str
    temperature_c: Optional[float]
    throttle_level: Optional[int]
    models: List[str]
    restarts: int
    error: str = ""


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    task: str
    state: str
    path: str
    devices: List[str]
    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    report: Optional[Dict[str, Any]]
    error: str
    edgetpu_compiled: bool
    label_count: int
    versions: List[str] = field(default_factory=list)
    description: str = ""
    problems: List[str] = field(default_factory=list)




@dataclass(frozen=True)
class Status:
    ready: bool
    devices: List[Device]
    models: List[Model]
    version: str
    uptime_s: float = 0.0
    requests: List[RequestSummary] = field(default_factory=list)
    usage: List[DeviceUsage] = field(default_factory=list)


# ---------------------------------------------------------------- learning


@dataclass(frozen=True)
class LearnedClass:
    """One class of a model's head; ``source`` is "imprinted", "pretrained" or "trained"."""

    id: int
    label: str
    samples: int
    source: str


@dataclass(frozen=True)
class LearnedModel:
    """A model's head as it serves now: ``version`` is the serving model version, ``head_version`` the store's."""

    model: str
    version: str
    head_version: int
    method: str
    classes: List[LearnedClass] = field(default_factory=list)


@dataclass(frozen=True)
class AddedSamples(LearnedModel):
    """What ``add_samples`` returns: the head after the call and how many samples it stored."""

    added: int = 0


@dataclass(frozen=True)
class TrainProgress:
    """One epoch of training; ``model`` is set on the last item only (the head now serving).

    ``validation_accuracy`` is None when no validation split was made (the daemon sends NaN,
    which JSON cannot carry).
    """

    epoch: int
    epochs: int
    loss: float
    train_accuracy: float
    validation_accuracy: Optional[float]
    model: Optional[LearnedModel] = None


@dataclass(frozen=True)
class HeadVersion:
    """One stored head version; ``created`` is seconds since the epoch."""

    head_version: int
    method: str
    created: float
    labels: List[str]
    current: bool


@dataclass(frozen=True)
class ExportResult:
    """An exported .tflite (the header's fields and the bytes); ``labels`` in class id order."""

    model: str
    head_version: int
    target: str
    size: int
    labels: List[str]
    data: bytes = field(repr=False, default=b"")
