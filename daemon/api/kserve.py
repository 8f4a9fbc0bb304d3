"""KServe v2 / Open Inference Protocol (``inference.GRPCInferenceService``).

Stock clients (tritonclient.grpc, KServe's own) send raw tensors; this maps
their datatypes and shapes to numpy, checks them against the model's input
tensors so a mistake comes back as INVALID_ARGUMENT naming the tensor, and runs
the model as a ``raw`` task.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgetpud.daemon import service as core
from edgetpud.daemon.errors import NotFoundError
from edgetpud.hal.executor import TensorSpec
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb_edgetpud
from edgetpud.protos.kserve import grpc_predict_v2_pb2 as pb
from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as pb_grpc

from . import convert
from .kserve_shm import SharedTensors, Target, target_of
from .calls import Servicer, deadline_of
from .management import daemon_version
from .peer import caller_of
from .status import RequestError

DATATYPES: Dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}
# Typed-contents field per datatype, for clients that do not send raw bytes.
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
}
PLATFORM = "edgetpu_tflite"
EXTENSIONS = ["model_repository", "system_shared_memory"]
#: ModelInfer parameters of Triton's sequence batcher: a recurrent model's state is carried per sequence id.
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
#: RepositoryModelLoad parameters naming a path on the daemon's host.
PATH_PARAMETERS = ("file:path", "path")


def same_version(asked: str, version: str) -> bool:
    """Whether the client's version string names ``version``, read as ModelInfer reads it ("01" is 1)."""
    try:
        number = core.parse_version("", asked)
    except NotFoundError:
        return False
    return number is not None and version.isdigit() and number == int(version)


def check_version(model: str, asked: str, versions: Sequence[str]) -> None:
    """Refuse a version the model does not have, worded as ModelInfer words it.

    Raises:
        NotFoundError: ``asked`` is set and names none of ``versions``.
    """
    if not asked or any(same_version(asked, v) for v in versions):
        return
    core.parse_version(model, asked)  # not a version at all: say so
    raise NotFoundError(f"model {model} has no version {asked} (live: [{', '.join(versions)}])")


def datatype(dtype: Any) -> str:
    """The OIP datatype name of a numpy dtype ("BYTES" for anything without one)."""
    return DATATYPE_OF.get(np.dtype(dtype), "BYTES")


@dataclass(frozen=True)
class TensorPlan:
    """What checking and decoding one model tensor takes, worked out once per tensor spec."""

    datatype: str
    shape: List[int]
    count: int
    nbytes: int
    dtype: np.dtype
    wire: np.dtype  # the dtype of the tensor's little-endian bytes, as the protocol sends them

    def decode(self, raw: Any) -> np.ndarray:
        """The array of ``raw`` bytes (little-endian), in the model's shape."""
        array = np.frombuffer(raw, dtype=self.wire)
        if self.wire != self.dtype:  # a big-endian host: swap to native order
            array = array.astype(self.dtype)
        return array.reshape(self.shape)


_plans: Dict[int, Tuple[TensorSpec, TensorPlan]] = {}


def tensor_plan(spec: TensorSpec) -> TensorPlan:
    """The spec's TensorPlan (kept per spec object, so a request pays a lookup, not the arithmetic)."""
    entry = _plans.get(id(spec))
    if entry is not None and entry[0] is spec:
        return entry[1]
    dtype = np.dtype(spec.dtype)
    shape = [int(d) for d in spec.shape]
    count = math.prod(shape)
    plan = TensorPlan(datatype(dtype), shape, count, count * dtype.itemsize, dtype, dtype.newbyteorder("<"))
    if len(_plans) > 4096:  # specs of models long unloaded
        _plans.clear()
    _plans[id(spec)] = (spec, plan)
    return plan


@dataclass(frozen=True)
class SequenceParameters:
    """Triton's sequence parameters of one ModelInfer request."""

    id: Union[int, str]
    start: bool
    end: bool


def sequence_parameters(request: pb.ModelInferRequest) -> Optional[SequenceParameters]:
    """The request's sequence (``sequence_id`` as int64 or string, ``sequence_start``, ``sequence_end``),
    or None when it names none (no id, or id 0 / "" as tritonclient sends for "no sequence").

    Raises:
        RequestError: a parameter of the wrong type, or start/end without an id.
    """
    params = request.parameters
    if not any(key in params for key in SEQUENCE_PARAMETERS):
        return None
    seq_id: Union[int, str] = 0
    if "sequence_id" in params:
        value = params["sequence_id"]
        kind = value.WhichOneof("parameter_choice")
        if kind == "int64_param":
            seq_id = int(value.int64_param)
        elif kind == "uint64_param":
            seq_id = int(value.uint64_param)
        elif kind == "string_param":
            seq_id = value.string_param
        else:
            raise RequestError("parameter 'sequence_id' must be an int64_param or a string_param")
    flags = []
    for key in ("sequence_start", "sequence_end"):
        value = params[key] if key in params else None
        if value is not None and value.WhichOneof("parameter_choice") != "bool_param":
            raise RequestError(f"parameter '{key}' must be a bool_param")
        flags.append(bool(value.bool_param) if value is not None else False)
    if seq_id in (0, ""):
        if any(flags):
            raise RequestError("sequence_start or sequence_end needs a sequence_id (a number from 1, or a string)")
        return None
    return SequenceParameters(seq_id, flags[0], flags[1])


def input_arrays(request: pb.ModelInferRequest, specs: Sequence[TensorSpec],
                 shared: Optional[SharedTensors] = None, optional: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Decode and check the request's inputs against the model's input tensors (``optional`` ones,
    a recurrent model's state, may be left out).

    An input in shared memory is read from its region (``shared``); ``raw_input_contents`` then
    holds one entry per other input, in order, as tritonclient sends them.

    Raises:
        RequestError: an unknown or missing input, a datatype or shape that differs from the
            model's, or contents whose size does not match the shape.
        NotFoundError, PermissionDeniedError: a shared-memory region that cannot be used.
    """
    by_name = {s.name: s for s in specs}
    targets = [target_of("input", tensor) for tensor in request.inputs]
    if targets.count(None) != len(targets) and shared is None:
        raise RequestError("shared memory inputs are not served on this path")
    plain = targets.count(None)
    raws = request.raw_input_contents
    if raws and len(raws) != plain:
        raise RequestError(f"{plain} input(s) not in shared memory described but {len(raws)} "
                           "raw_input_contents sent: send one raw entry per such input, in order")
    raw_index = 0
    arrays: Dict[str, np.ndarray] = {}
    for tensor, target in zip(request.inputs, targets):
        spec = by_name.get(tensor.name)
        if spec is None:
            raise RequestError(f"model '{request.model_name}' has no input '{tensor.name}'; "
                               f"its inputs are {sorted(by_name)}")
        if tensor.name in arrays:
            raise RequestError(f"input '{tensor.name}' is sent twice; send each input once")
        plan = tensor_plan(spec)
        if tensor.datatype != plan.datatype:
            raise RequestError(f"input '{tensor.name}' must have datatype {plan.datatype}, got {tensor.datatype}")
        if list(tensor.shape) != plan.shape:
            raise RequestError(f"input '{tensor.name}' must have shape {plan.shape}, got {list(tensor.shape)}")
        if target is not None:
            assert shared is not None
            label = f"input '{tensor.name}'"
            if target.byte_size != plan.nbytes:
                raise RequestError(f"{label}: shape {plan.shape} of {plan.datatype} needs {plan.nbytes} "
                                   f"bytes, but shared_memory_byte_size is {target.byte_size}")
            array = plan.decode(shared.read(target, label))
        elif raws:
            raw = raws[raw_index]
            raw_index += 1
            if len(raw) != plan.nbytes:
                raise RequestError(f"input '{tensor.name}': shape {plan.shape} of {plan.datatype} needs "
                                   f"{plan.nbytes} bytes, got {len(raw)}")
            array = plan.decode(raw)
        else:
            array = typed_values(tensor, plan.datatype, plan.count).reshape(plan.shape)
        arrays[tensor.name] = array
    missing = sorted(set(by_name) - set(arrays) - set(optional))
    if missing:
        raise RequestError(f"model '{request.model_name}' also needs input(s) {missing}")
    return arrays


def typed_values(tensor: Any, want_type: str, count: int) -> np.ndarray:
    """An input sent as typed contents (``contents.uint_contents`` and so on) as an array of ``want_type``.

    The typed fields are wider than most datatypes (UINT8 values travel as uint32), so
    every value is checked against the datatype's range instead of being wrapped.

    Raises:
        RequestError: the datatype has no typed field, the count differs from the shape, or a value is out of range.
    """
    field = CONTENTS_FIELD.get(want_type)
    if field is None:
        raise RequestError(f"input '{tensor.name}': {want_type} values have no typed contents field; "
                           "send them in raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise RequestError(f"input '{tensor.name}': {count} values expected in contents.{field} "
                           f"({want_type}), got {len(values)}")
    dtype = DATATYPES[want_type]
    if dtype.kind in "iu" and dtype.itemsize < 8:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            bad = int(wide[(wide < info.min) | (wide > info.max)][0])
            raise RequestError(f"input '{tensor.name}': value {bad} is out of range for {want_type} "
                               f"({info.min}..{info.max})")
        return wide.astype(dtype)
    return np.asarray(values, dtype=dtype)


def requested_outputs(request: pb.ModelInferRequest, specs: Sequence[TensorSpec]) -> List[str]:
    """The output names to return: the requested ones, or all of the model's.

    Raises:
        RequestError: an output was requested that the model does not have, or twice, or with a
            parameter edgetpud does not offer (classification).
    """
    names = [s.name for s in specs]
    if not request.outputs:
        return names
    for output in request.outputs:
        if "classification" in output.parameters:
            raise RequestError(f"output '{output.name}': edgetpud does not offer the classification extension "
                               "(ServerMetadata lists the extensions it serves); request the raw scores, or call "
                               "edgetpud.v1.Inference/Classify for the top classes with their labels")
    wanted = [o.name for o in request.outputs] or names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise RequestError(f"model '{request.model_name}' has no output(s) {unknown}; its outputs are {names}")
    twice = sorted({name for name in wanted if wanted.count(name) > 1})
    if twice:
        raise RequestError(f"output '{twice[0]}' is requested twice; request each output once")
    return wanted


def output_targets(request: pb.ModelInferRequest, specs: Sequence[TensorSpec],
                   shared: SharedTensors) -> Dict[str, Target]:
    """The requested outputs to write into shared memory, checked before the model runs.

    Raises:
        RequestError: a bad parameter, or a target too small for the output.
        NotFoundError, PermissionDeniedError: a region that cannot be used.
    """
    targets: Dict[str, Target] = {}
    if not request.outputs:
        return targets
    by_name = {s.name: s for s in specs}
    for output in request.outputs:
        target = target_of("output", output)
        if target is not None and output.name in by_name:
            shared.check_output(target, tensor_plan(by_name[output.name]).nbytes, f"output '{output.name}'")
            targets[output.name] = target
    return targets


def load_source(request: pb.RepositoryModelLoadRequest) -> Tuple[Optional[str], Optional[bytes]]:
    """What RepositoryModelLoad should load: a path on the daemon's host, uploaded .tflite bytes, or neither
    (the bundle ``models_dir/NAME``).

    Triton sends a model's files as ``file:VERSION/NAME`` bytes parameters, with a ``config`` JSON that
    overrides the model configuration; edgetpud takes one .tflite file, and its configuration lives in
    the bundle's model.toml, so only an empty config is accepted.

    Raises:
        RequestError: a parameter that cannot be honoured; the message says what is taken instead.
    """
    params = request.parameters
    path: Optional[str] = None
    files: List[Tuple[str, bytes]] = []
    for key in sorted(params):
        value = params[key]
        kind = value.WhichOneof("parameter_choice")
        if key in PATH_PARAMETERS:
            if kind != "string_param" or not value.string_param:
                raise RequestError(f"parameter '{key}' must be a string_param naming a bundle folder or a "
                                   "'.tflite' file on the daemon's host")
            path = value.string_param
        elif key.startswith("file:"):
            if kind != "bytes_param" or not key.endswith(".tflite"):
                raise RequestError(f"parameter '{key}': only a .tflite file can be sent, as bytes_param "
                                   "(e.g. 'file:1/model.tflite')")
            if not value.bytes_param:
                raise RequestError(f"parameter '{key}' is empty: send the .tflite file's bytes")
            files.append((key, value.bytes_param))
        elif key == "config":
            if not _empty_config(value.string_param if kind == "string_param" else None):
                raise RequestError("edgetpud has no model configuration to override: leave 'config' out (or "
                                   "send '{}') and set the task and preprocessing in the bundle's model.toml")
        else:
            raise RequestError(f"unknown parameter '{key}': RepositoryModelLoad takes 'path' (a bundle folder or "
                               "a .tflite file on the daemon's host) or one 'file:1/model.tflite' bytes_param")
    if len(files) > 1:
        raise RequestError(f"{len(files)} files sent ({', '.join(k for k, _ in files)}): send one file, the "
                           ".tflite model (a compiled model runs on the Edge TPU, its CPU twin anywhere)")
    if files and path is not None:
        raise RequestError("send either a 'path' or a file's bytes, not both")
    return path, (files[0][1] if files else None)


def _empty_config(text: Optional[str]) -> bool:
    """Whether a ``config`` parameter asks for nothing (tritonclient sends one along with files)."""
    if text is None:
        return False
    if not text.strip():
        return True
    try:
        return json.loads(text) == {}
    except ValueError:
        return False


def write_outputs(result: core.InferenceResult, targets: Mapping[str, Target], shared: SharedTensors) -> None:
    """Write the outputs that have shared-memory targets into their regions.

    Raises:
        InvalidArgumentError, NotFoundError, PermissionDeniedError: a target became unusable meanwhile.
    """
    for name, target in targets.items():
        array = np.ascontiguousarray(result.payload[name])
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        shared.write(target, memoryview(little).cast("B"), f"output '{name}'")


def infer_response(request: pb.ModelInferRequest, result: core.InferenceResult, wanted: Sequence[str],
                   targets: Optional[Mapping[str, Target]] = None) -> pb.ModelInferResponse:
    """The ``wanted`` outputs of ``result`` as raw_output_contents; those written to shared memory
    (``targets``) get an empty raw entry and name their region, as Triton answers."""
    outputs: Mapping[str, np.ndarray] = result.payload
    targets = targets or {}
    response = pb.ModelInferResponse(model_name=str(result.model), model_version=str(result.version or ""),
                                     id=request.id)
    for name in wanted:
        array = np.ascontiguousarray(outputs[name])
        wire = array.dtype.newbyteorder("<")
        little = array if wire == array.dtype else array.astype(wire)
        tensor = response.outputs.add(name=name, datatype=DATATYPE_OF.get(array.dtype, "BYTES"),
                                      shape=array.shape)
        target = targets.get(name)
        if target is None:
            response.raw_output_contents.append(little.tobytes())
            continue
        tensor.parameters["shared_memory_region"].string_param = target.region
        tensor.parameters["shared_memory_byte_size"].int64_param = little.nbytes
        if target.offset:
            tensor.parameters["shared_memory_offset"].int64_param = target.offset
        response.raw_output_contents.append(b"")
    return response


class KServeServicer(Servicer, pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        ready = await self._query(context, "", lambda: self._svc.ready)
        return pb.ServerReadyResponse(ready=bool(ready))

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        def ask() -> bool:
            try:
                state = self._svc.model_info(request.name)
            except NotFoundError:
                return False
            served, version = convert.model_state_and_version(state)
            return served == "ready" and (not request.version or same_version(request.version, version))
        return pb.ModelReadyResponse(ready=await self._query(context, request.name, ask))

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="edgetpud", version=daemon_version(), extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        def ask() -> Tuple[pb_edgetpud.ModelInfo, List[str], List[TensorSpec], List[TensorSpec]]:
            info = convert.model(self._svc.model_info(request.name))
            versions = list(info.versions) or ([info.version] if info.version else [])
            check_version(info.name or request.name, request.version, versions)
            inputs, outputs = self._svc.model_specs(request.name)
            return info, versions, inputs, outputs
        info, versions, inputs, outputs = await self._query(context, request.name, ask)

        def meta(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
            return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=datatype(spec.dtype),
                                                           shape=[int(d) for d in spec.shape])
        return pb.ModelMetadataResponse(name=info.name or request.name, versions=versions,
                                        platform=PLATFORM, inputs=[meta(s) for s in inputs],
                                        outputs=[meta(s) for s in outputs])

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        wanted: List[str] = []
        shared = SharedTensors(self._svc.shared_memory, context)
        targets: Dict[str, Target] = {}

        async def run() -> core.InferenceResult:
            model = request.model_name
            inputs, outputs = self._svc.model_specs(model)
            sequence = sequence_parameters(request)
            tensors = input_arrays(request, inputs, shared, self._svc.state_inputs(model))
            wanted.extend(requested_outputs(request, outputs))
            targets.update(output_targets(request, outputs, shared))
            state = self._svc.sequence(model, sequence.id, sequence.start) if sequence else None
            try:
                result = await self._svc.infer(model, "raw", core.InferenceRequest(tensors=tensors, state=state),
                                               deadline=deadline_of(context), version=request.model_version or None)
            finally:
                if sequence is not None and sequence.end:
                    self._svc.end_sequence(model, sequence.id)
            write_outputs(result, targets, shared)
            return result
        result = await self._call(context, request.model_name, run)
        return infer_response(request, result, wanted, targets)

    async def SystemSharedMemoryStatus(self, request: pb.SystemSharedMemoryStatusRequest,
                                       context) -> pb.SystemSharedMemoryStatusResponse:
        regions = await self._query(context, "", lambda: self._svc.shared_memory.status(request.name))
        response = pb.SystemSharedMemoryStatusResponse()
        for info in regions:
            entry = response.regions[info.name]
            entry.name, entry.key, entry.offset, entry.byte_size = info.name, info.key, info.offset, info.byte_size
        return response

    async def SystemSharedMemoryRegister(self, request: pb.SystemSharedMemoryRegisterRequest,
                                         context) -> pb.SystemSharedMemoryRegisterResponse:
        await self._query(context, "", lambda: self._svc.shared_memory.register(
            request.name, request.key, request.offset, request.byte_size, caller_of(context.peer())))
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: pb.SystemSharedMemoryUnregisterRequest,
                                           context) -> pb.SystemSharedMemoryUnregisterResponse:
        await self._query(context, "", lambda: self._svc.shared_memory.unregister(request.name))
        return pb.SystemSharedMemoryUnregisterResponse()

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context) -> pb.RepositoryIndexResponse:
        models = [convert.model(m) for m in await self._query(context, "", self._svc.models)]
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=m.name, version=m.version, state=m.state.upper(),
                                                  reason=m.error)
            for m in models if not request.ready or m.state == "ready"])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context):
        async def run() -> None:
            path, data = load_source(request)
            if data is not None:
                await self._svc.load_model(request.model_name, data=data)
            elif path is not None:
                await self._svc.load_model(request.model_name, path=path)
            else:
                await self._svc.load_model(request.model_name)
        await self._call(context, request.model_name, run)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context):
        await self._call(context, request.model_name,
                         lambda: self._svc.unload_model(request.model_name))
        return pb.RepositoryModelUnloadResponse()
