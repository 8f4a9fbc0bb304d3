from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGB: _ClassVar[PixelFormat]
    PIXEL_FORMAT_BGR: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGBA: _ClassVar[PixelFormat]
    PIXEL_FORMAT_BGRA: _ClassVar[PixelFormat]
    PIXEL_FORMAT_GRAY: _ClassVar[PixelFormat]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_CLASSIFY: _ClassVar[Task]
    TASK_DETECT: _ClassVar[Task]
    TASK_EMBED: _ClassVar[Task]
    TASK_RAW: _ClassVar[Task]

class FramePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_POLICY_KEEP_ALL: _ClassVar[FramePolicy]
    FRAME_POLICY_LATEST_WINS: _ClassVar[FramePolicy]

class FrameStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_STATUS_OK: _ClassVar[FrameStatus]
    FRAME_STATUS_DROPPED: _ClassVar[FrameStatus]
    FRAME_STATUS_FAILED: _ClassVar[FrameStatus]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_RGB: PixelFormat
PIXEL_FORMAT_BGR: PixelFormat
PIXEL_FORMAT_RGBA: PixelFormat
PIXEL_FORMAT_BGRA: PixelFormat
PIXEL_FORMAT_GRAY: PixelFormat
TASK_UNSPECIFIED: Task
TASK_CLASSIFY: Task
TASK_DETECT: Task
TASK_EMBED: Task
TASK_RAW: Task
FRAME_POLICY_KEEP_ALL: FramePolicy
FRAME_POLICY_LATEST_WINS: FramePolicy
FRAME_STATUS_OK: FrameStatus
FRAME_STATUS_DROPPED: FrameStatus
FRAME_STATUS_FAILED: FrameStatus

class RawFrame(_message.Message):
    __slots__ = ("data", "width", "height", "stride", "pixel_format", "shared")
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    width: int
    height: int
    stride: int
    pixel_format: PixelFormat
    shared: SharedSpan
    def __init__(self, data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., stride: _Optional[int] = ..., pixel_format: _Optional[_Union[PixelFormat, str]] = ..., shared: _Optional[_Union[SharedSpan, _Mapping]] = ...) -> None: ...

class SharedSpan(_message.Message):
    __slots__ = ("region", "offset", "byte_size")
    REGION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    BYTE_SIZE_FIELD_NUMBER: _ClassVar[int]
    region: str
    offset: int
    byte_size: int
    def __init__(self, region: _Optional[str] = ..., offset: _Optional[int] = ..., byte_size: _Optional[int] = ...) -> None: ...

class Crop(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "frame", "crop")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    frame: RawFrame
    crop: Crop
    def __init__(self, encoded: _Optional[bytes] = ..., frame: _Optional[_Union[RawFrame, _Mapping]] = ..., crop: _Optional[_Union[Crop, _Mapping]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_s", "preprocess_s", "invoke_s", "postprocess_s")
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_S_FIELD_NUMBER: _ClassVar[int]
    INVOKE_S_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_S_FIELD_NUMBER: _ClassVar[int]
    queue_s: float
    preprocess_s: float
    invoke_s: float
    postprocess_s: float
    def __init__(self, queue_s: _Optional[float] = ..., preprocess_s: _Optional[float] = ..., invoke_s: _Optional[float] = ..., postprocess_s: _Optional[float] = ...) -> None: ...

class ServedBy(_message.Message):
    __slots__ = ("model", "version", "device", "timing")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    device: str
    timing: Timing
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., device: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class Class(_message.Message):
    __slots__ = ("id", "label", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: str
    score: float
    def __init__(self, id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("xmin", "ymin", "xmax", "ymax")
    XMIN_FIELD_NUMBER: _ClassVar[int]
    YMIN_FIELD_NUMBER: _ClassVar[int]
    XMAX_FIELD_NUMBER: _ClassVar[int]
    YMAX_FIELD_NUMBER: _ClassVar[int]
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    def __init__(self, xmin: _Optional[float] = ..., ymin: _Optional[float] = ..., xmax: _Optional[float] = ..., ymax: _Optional[float] = ...) -> None: ...

class DetectedObject(_message.Message):
    __slots__ = ("id", "label", "score", "bbox", "normalized_bbox")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_BBOX_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: str
    score: float
    bbox: BoundingBox
    normalized_bbox: BoundingBox
    def __init__(self, id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., bbox: _Optional[_Union[BoundingBox, _Mapping]] = ..., normalized_bbox: _Optional[_Union[BoundingBox, _Mapping]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "version", "image", "top_k", "threshold")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    image: Image
    top_k: int
    threshold: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., top_k: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("served_by", "classes")
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    served_by: ServedBy
    classes: _containers.RepeatedCompositeFieldContainer[Class]
    def __init__(self, served_by: _Optional[_Union[ServedBy, _Mapping]] = ..., classes: _Optional[_Iterable[_Union[Class, _Mapping]]] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("model", "version", "image", "top_k", "threshold")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    image: Image
    top_k: int
    threshold: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., top_k: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("served_by", "objects")
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    served_by: ServedBy
    objects: _containers.RepeatedCompositeFieldContainer[DetectedObject]
    def __init__(self, served_by: _Optional[_Union[ServedBy, _Mapping]] = ..., objects: _Optional[_Iterable[_Union[DetectedObject, _Mapping]]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "version", "image", "normalize")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    image: Image
    normalize: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., normalize: bool = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("served_by", "embedding")
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    served_by: ServedBy
    embedding: Tensor
    def __init__(self, served_by: _Optional[_Union[ServedBy, _Mapping]] = ..., embedding: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("model", "version", "inputs", "image")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    image: Image
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., image: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("served_by", "outputs")
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    served_by: ServedBy
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, served_by: _Optional[_Union[ServedBy, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("model", "version", "task", "top_k", "threshold", "normalize", "frame_policy", "max_in_flight", "frame_timeout_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    FRAME_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    task: Task
    top_k: int
    threshold: float
    normalize: bool
    frame_policy: FramePolicy
    max_in_flight: int
    frame_timeout_s: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., top_k: _Optional[int] = ..., threshold: _Optional[float] = ..., normalize: bool = ..., frame_policy: _Optional[_Union[FramePolicy, str]] = ..., max_in_flight: _Optional[int] = ..., frame_timeout_s: _Optional[float] = ...) -> None: ...

class StreamFrame(_message.Message):
    __slots__ = ("frame_id", "image", "inputs", "reset_state")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    RESET_STATE_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    image: Image
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    reset_state: bool
    def __init__(self, frame_id: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., reset_state: bool = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    frame: StreamFrame
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., frame: _Optional[_Union[StreamFrame, _Mapping]] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("frame_id", "status", "served_by", "classes", "objects", "embedding", "outputs", "error")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    status: FrameStatus
    served_by: ServedBy
    classes: _containers.RepeatedCompositeFieldContainer[Class]
    objects: _containers.RepeatedCompositeFieldContainer[DetectedObject]
    embedding: Tensor
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    error: FrameError
    def __init__(self, frame_id: _Optional[int] = ..., status: _Optional[_Union[FrameStatus, str]] = ..., served_by: _Optional[_Union[ServedBy, _Mapping]] = ..., classes: _Optional[_Iterable[_Union[Class, _Mapping]]] = ..., objects: _Optional[_Iterable[_Union[DetectedObject, _Mapping]]] = ..., embedding: _Optional[_Union[Tensor, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "dtype", "shape", "scale", "zero_point")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    scale: float
    zero_point: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ...) -> None: ...

class OperatorReport(_message.Message):
    __slots__ = ("index", "op", "target", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    op: str
    target: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., op: _Optional[str] = ..., target: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CompatibilityReport(_message.Message):
    __slots__ = ("verdict", "operators", "tpu_ops", "cpu_ops")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    TPU_OPS_FIELD_NUMBER: _ClassVar[int]
    CPU_OPS_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    operators: _containers.RepeatedCompositeFieldContainer[OperatorReport]
    tpu_ops: int
    cpu_ops: int
    def __init__(self, verdict: _Optional[str] = ..., operators: _Optional[_Iterable[_Union[OperatorReport, _Mapping]]] = ..., tpu_ops: _Optional[int] = ..., cpu_ops: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "task", "state", "path", "devices", "inputs", "outputs", "report", "error", "edgetpu_compiled", "label_count", "versions", "description", "problems")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EDGETPU_COMPILED_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    task: str
    state: str
    path: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    report: CompatibilityReport
    error: str
    edgetpu_compiled: bool
    label_count: int
    versions: _containers.RepeatedScalarFieldContainer[str]
    description: str
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[str] = ..., state: _Optional[str] = ..., path: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., report: _Optional[_Union[CompatibilityReport, _Mapping]] = ..., error: _Optional[str] = ..., edgetpu_compiled: bool = ..., label_count: _Optional[int] = ..., versions: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "path", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    labels: bytes
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., labels: _Optional[bytes] = ...) -> None: ...

class UploadModelChunk(_message.Message):
    __slots__ = ("name", "data", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    labels: bytes
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ..., labels: _Optional[bytes] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class AddSamplesRequest(_message.Message):
    __slots__ = ("model", "label", "keep_classes", "image", "embedding")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    KEEP_CLASSES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    model: str
    label: str
    keep_classes: bool
    image: Image
    embedding: Embedding
    def __init__(self, model: _Optional[str] = ..., label: _Optional[str] = ..., keep_classes: bool = ..., image: _Optional[_Union[Image, _Mapping]] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ...) -> None: ...

class LearnedClass(_message.Message):
    __slots__ = ("id", "label", "samples", "source")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: str
    samples: int
    source: str
    def __init__(self, id: _Optional[int] = ..., label: _Optional[str] = ..., samples: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class LearnedModel(_message.Message):
    __slots__ = ("model", "version", "head_version", "method", "classes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    head_version: int
    method: str
    classes: _containers.RepeatedCompositeFieldContainer[LearnedClass]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., head_version: _Optional[int] = ..., method: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[LearnedClass, _Mapping]]] = ...) -> None: ...

class AddSamplesResponse(_message.Message):
    __slots__ = ("model", "added")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    model: LearnedModel
    added: int
    def __init__(self, model: _Optional[_Union[LearnedModel, _Mapping]] = ..., added: _Optional[int] = ...) -> None: ...

class ListClassesRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListClassesResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: LearnedModel
    def __init__(self, model: _Optional[_Union[LearnedModel, _Mapping]] = ...) -> None: ...

class RemoveClassRequest(_message.Message):
    __slots__ = ("model", "label")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    label: str
    def __init__(self, model: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class RemoveClassResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: LearnedModel
    def __init__(self, model: _Optional[_Union[LearnedModel, _Mapping]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("model", "epochs", "learning_rate", "batch_size", "l2", "validation_fraction", "seed", "warm_start")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WARM_START_FIELD_NUMBER: _ClassVar[int]
    model: str
    epochs: int
    learning_rate: float
    batch_size: int
    l2: float
    validation_fraction: float
    seed: int
    warm_start: bool
    def __init__(self, model: _Optional[str] = ..., epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., l2: _Optional[float] = ..., validation_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., warm_start: bool = ...) -> None: ...

class TrainProgress(_message.Message):
    __slots__ = ("epoch", "epochs", "loss", "train_accuracy", "validation_accuracy", "model")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epochs: int
    loss: float
    train_accuracy: float
    validation_accuracy: float
    model: LearnedModel
    def __init__(self, epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., loss: _Optional[float] = ..., train_accuracy: _Optional[float] = ..., validation_accuracy: _Optional[float] = ..., model: _Optional[_Union[LearnedModel, _Mapping]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("model", "target")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    model: str
    target: str
    def __init__(self, model: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ExportHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ExportHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExportHeader(_message.Message):
    __slots__ = ("model", "head_version", "target", "size", "labels")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    model: str
    head_version: int
    target: str
    size: int
    labels: str
    def __init__(self, model: _Optional[str] = ..., head_version: _Optional[int] = ..., target: _Optional[str] = ..., size: _Optional[int] = ..., labels: _Optional[str] = ...) -> None: ...

class ListHeadsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class HeadVersion(_message.Message):
    __slots__ = ("head_version", "method", "created", "labels", "current")
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    head_version: int
    method: str
    created: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    current: bool
    def __init__(self, head_version: _Optional[int] = ..., method: _Optional[str] = ..., created: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., current: bool = ...) -> None: ...

class ListHeadsResponse(_message.Message):
    __slots__ = ("model", "heads")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    model: str
    heads: _containers.RepeatedCompositeFieldContainer[HeadVersion]
    def __init__(self, model: _Optional[str] = ..., heads: _Optional[_Iterable[_Union[HeadVersion, _Mapping]]] = ...) -> None: ...

class RestoreHeadRequest(_message.Message):
    __slots__ = ("model", "head_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    head_version: int
    def __init__(self, model: _Optional[str] = ..., head_version: _Optional[int] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("id", "kind", "index", "path", "state", "temperature_c", "throttle_level", "models", "restarts", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    index: int
    path: str
    state: str
    temperature_c: float
    throttle_level: int
    models: _containers.RepeatedScalarFieldContainer[str]
    restarts: int
    error: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., index: _Optional[int] = ..., path: _Optional[str] = ..., state: _Optional[str] = ..., temperature_c: _Optional[float] = ..., throttle_level: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., restarts: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("ready", "devices", "models", "version", "uptime_s", "requests", "usage")
    READY_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    version: str
    uptime_s: float
    requests: _containers.RepeatedCompositeFieldContainer[RequestSummary]
    usage: _containers.RepeatedCompositeFieldContainer[DeviceUsage]
    def __init__(self, ready: bool = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., requests: _Optional[_Iterable[_Union[RequestSummary, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[DeviceUsage, _Mapping]]] = ...) -> None: ...

class RequestSummary(_message.Message):
    __slots__ = ("model", "count", "errors", "codes", "p50_s", "p90_s", "p99_s")
    class CodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    P50_S_FIELD_NUMBER: _ClassVar[int]
    P90_S_FIELD_NUMBER: _ClassVar[int]
    P99_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    errors: int
    codes: _containers.ScalarMap[str, int]
    p50_s: float
    p90_s: float
    p99_s: float
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ..., errors: _Optional[int] = ..., codes: _Optional[_Mapping[str, int]] = ..., p50_s: _Optional[float] = ..., p90_s: _Optional[float] = ..., p99_s: _Optional[float] = ...) -> None: ...

class DeviceUsage(_message.Message):
    __slots__ = ("device", "invocations", "busy_s", "utilization")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    INVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    BUSY_S_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    device: str
    invocations: int
    busy_s: float
    utilization: float
    def __init__(self, device: _Optional[str] = ..., invocations: _Optional[int] = ..., busy_s: _Optional[float] = ..., utilization: _Optional[float] = ...) -> None: ...

class MockDeviceRequest(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: str
    def __init__(self, device: _Optional[str] = ...) -> None: ...

class InjectFaultRequest(_message.Message):
    __slots__ = ("device", "fault", "count", "seconds", "message", "after_s")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AFTER_S_FIELD_NUMBER: _ClassVar[int]
    device: str
    fault: str
    count: int
    seconds: float
    message: str
    after_s: float
    def __init__(self, device: _Optional[str] = ..., fault: _Optional[str] = ..., count: _Optional[int] = ..., seconds: _Optional[float] = ..., message: _Optional[str] = ..., after_s: _Optional[float] = ...) -> None: ...

class SetTemperatureRequest(_message.Message):
    __slots__ = ("device", "celsius")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CELSIUS_FIELD_NUMBER: _ClassVar[int]
    device: str
    celsius: float
    def __init__(self, device: _Optional[str] = ..., celsius: _Optional[float] = ...) -> None: ...

class SetLatencyRequest(_message.Message):
    __slots__ = ("device", "latency_s")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    device: str
    latency_s: float
    def __init__(self, device: _Optional[str] = ..., latency_s: _Optional[float] = ...) -> None: ...

class MockReply(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...
