"""Answers to Frigate's requests, through the service like any other client.

Frigate's tensor requests do not name their model: the handshake on a connection
does. So the handler remembers, per connection (ZMQ routing id), the model it was
told; a connection that never said (the daemon restarted under a running Frigate,
whose socket reconnected by itself) gets the one ready detector that takes its
tensor's shape and dtype, if there is exactly one.

Inference goes through ``Service.infer`` with task ``raw``: Frigate already sends
the model's input tensor, so the daemon's image preprocessing is skipped, and the
scheduler shares the devices with every other client.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgetpud.hal.errors import HalError
from edgetpud.hal.executor import TensorSpec

from ..api.facade import ServiceFacade
from ..errors import EdgetpudError, NotFoundError
from ..model.adapters.common import check_outputs, dequantize
from ..model.adapters.detection import DetectionLayout, detection_layout, named_layout
from ..service import InferenceRequest
from . import protocol
from .protocol import ModelQuery, ModelUpload, ProtocolError, TensorRequest

log = logging.getLogger(__name__)

#: Frigate's default request_timeout_ms: an answer later than this is read by nobody,
#: so a request still queued then is not run.
DEADLINE_S = 0.2
#: How long a handshake waits for a model that is still loading (Frigate waits 30 s for it).
LOADING_WAIT_S = 20.0
#: Connections remembered; Frigate opens a new one after every timeout, so the oldest are forgotten.
MAX_PEERS = 4096


class FrigateHandler:
    """One answer (a list of frames) per request; never raises for anything a client sent."""

    def __init__(self, service: ServiceFacade, deadline_s: float = DEADLINE_S) -> None:
        self._service = service
        self._deadline_s = deadline_s
        self._peers: "collections.OrderedDict[bytes, str]" = collections.OrderedDict()
        self._plans: Dict[str, _DetectorPlan] = {}

    async def handle(self, peer: bytes, frames: Sequence[bytes]) -> List[bytes]:
        """The reply to one request from connection ``peer``."""
        try:
            request = protocol.parse_request(frames)
            if isinstance(request, ModelQuery):
                return await self._query(peer, request)
            if isinstance(request, ModelUpload):
                return await self._upload(peer, request)
            return await self._detect(peer, request)
        except ProtocolError as exc:
            log.warning("frigate: refused a request: %s", exc)
            if exc.kind == "query":
                return protocol.status_reply(model_available=False, model_loaded=False, error=str(exc))
            if exc.kind == "upload":
                return protocol.status_reply(model_saved=False, model_loaded=False, error=str(exc))
            return protocol.error_detections(str(exc))
        except (EdgetpudError, HalError) as exc:
            return protocol.error_detections(str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must never stop the endpoint
            log.exception("frigate: unexpected failure")
            return protocol.error_detections(f"internal error: {type(exc).__name__}: {exc}")

    # ---- the handshake ----

    async def _query(self, peer: bytes, query: ModelQuery) -> List[bytes]:
        name = protocol.model_bundle_name(query.model_name, "query")
        state = await self._settled_state(name)
        if state is None:
            log.info("frigate: model %s is not loaded; asking for the file", name)
            return protocol.status_reply(model_available=False, model_loaded=False)
        if state.state != "ready":
            problem = "; ".join(state.problems) or f"it is {state.state}"
            return protocol.status_reply(model_available=True, model_loaded=False,
                                         error=f"model {name} is not serving: {problem}")
        problem = _not_a_detector(name, state.outputs)
        if problem:
            return protocol.status_reply(model_available=True, model_loaded=False, error=problem)
        self._remember(peer, name)
        return protocol.status_reply(model_available=True, model_loaded=True)

    async def _upload(self, peer: bytes, upload: ModelUpload) -> List[bytes]:
        name = protocol.model_bundle_name(upload.model_name, "upload")
        try:
            state = await self._service.load_model(name, data=upload.data)
        except (EdgetpudError, HalError) as exc:
            log.warning("frigate: the upload of %s failed: %s", upload.model_name, exc)
            return protocol.status_reply(model_saved=False, model_loaded=False,
                                         error=f"{upload.model_name}: {exc}")
        problem = _not_a_detector(name, state.outputs)
        if problem:
            return protocol.status_reply(model_saved=True, model_loaded=False, error=problem)
        log.info("frigate: loaded the uploaded model %s (%d bytes)", name, len(upload.data))
        self._remember(peer, name)
        return protocol.status_reply(model_saved=True, model_loaded=True)

    async def _settled_state(self, name: str) -> Optional[object]:
        """The model's state once it is no longer loading (within LOADING_WAIT_S), None if unknown."""
        end = time.monotonic() + LOADING_WAIT_S
        while True:
            try:
                state = self._service.model_info(name)
            except NotFoundError:
                return None
            if state.state != "loading" or time.monotonic() >= end:
                return state
            await asyncio.sleep(0.1)

    # ---- detection ----

    async def _detect(self, peer: bytes, request: TensorRequest) -> List[bytes]:
        deadline = time.monotonic() + self._deadline_s
        tensor = request.array()
        name = self._peers.get(peer) or self._model_for(request)
        plan = self._plan_for(name)
        if plan.shape != request.shape or plan.dtype != request.dtype:
            raise ProtocolError(f"model {name} takes {plan.dtype.name} {list(plan.shape)}; the request is "
                                f"{request.dtype.name} {list(request.shape)} (check Frigate's model width, "
                                "height, input_tensor and input_dtype)")
        tensors = dict(plan.extra_inputs)
        tensors[plan.input_name] = tensor
        result = await self._service.infer(name, "raw", InferenceRequest(tensors=tensors), deadline=deadline)
        return protocol.detections_reply(plan.rows(result.payload))

    def _plan_for(self, name: str) -> "_DetectorPlan":
        """The served version's plan, made again only when the version changed (a hot swap)."""
        inputs, outputs = self._service.model_specs(name)
        plan = self._plans.get(name)
        if plan is None or not plan.made_from(inputs, outputs):
            plan = _DetectorPlan(inputs, outputs)
            self._plans[name] = plan
        return plan

    def _model_for(self, request: TensorRequest) -> str:
        """The one ready detector taking this tensor, for a connection that skipped the handshake.

        Raises:
            ProtocolError: none or several fit.
        """
        fits = [m.name for m in self._service.models()
                if m.state == "ready" and m.inputs and tuple(m.inputs[0].shape) == request.shape
                and np.dtype(m.inputs[0].dtype) == request.dtype and not _not_a_detector(m.name, m.outputs)]
        if len(fits) != 1:
            which = "no ready detector takes" if not fits else f"several detectors ({', '.join(sorted(fits))}) take"
            raise ProtocolError(f"{which} {request.dtype.name} {list(request.shape)}: send the model_request "
                                "handshake first (Frigate does at start and after every timeout)")
        return fits[0]

    def _remember(self, peer: bytes, name: str) -> None:
        self._peers[peer] = name
        self._peers.move_to_end(peer)
        while len(self._peers) > MAX_PEERS:
            self._peers.popitem(last=False)


class _DetectorPlan:
    """What every frame of one model version needs, worked out once: the input it fills,
    zeros for the other inputs, and which outputs are boxes, classes, scores and count."""

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self._inputs, self._outputs = list(inputs), list(outputs)
        first = inputs[0]
        self.input_name = first.name
        self.shape, self.dtype = tuple(first.shape), np.dtype(first.dtype)
        # a recurrent state's inputs start from zeros; read-only, so one array serves every frame
        self.extra_inputs: Dict[str, np.ndarray] = {}
        for spec in inputs[1:]:
            zeros = np.zeros(tuple(spec.shape), np.dtype(spec.dtype))
            zeros.flags.writeable = False
            self.extra_inputs[spec.name] = zeros
        self._picked = [outputs[i] for i in _detection_outputs(outputs)]
        self._specs: Optional[List[TensorSpec]] = None  # the picked outputs with the runtime's shapes
        self._layout: Optional[DetectionLayout] = None

    def made_from(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
        return (len(inputs) == len(self._inputs) and len(outputs) == len(self._outputs)
                and all(a is b for a, b in zip(inputs, self._inputs))
                and all(a is b for a, b in zip(outputs, self._outputs)))

    def rows(self, payload: Mapping[str, Any]) -> np.ndarray:
        """Frigate's ``[20, 6]`` rows from one raw result."""
        arrays = [np.asarray(payload[s.name]) for s in self._picked]
        specs = self._specs
        if specs is None or any(a.shape != s.shape for a, s in zip(arrays, specs)):
            # The file declares no shapes for the postprocess outputs: the runtime's arrays have them.
            specs = [dataclasses.replace(s, shape=tuple(a.shape)) for s, a in zip(self._picked, arrays)]
            check_outputs(arrays, specs, "detect")
            self._specs = specs
            self._layout = named_layout(specs, [s.name for s in specs])  # when the names decide, for every frame
        real = [dequantize(a, s) for a, s in zip(arrays, specs)]
        layout = self._layout or detection_layout(specs, [s.name for s in specs], real)
        boxes = real[layout.boxes].reshape(-1, 4)
        count = int(np.clip(real[layout.count].reshape(-1)[0], 0, boxes.shape[0]))
        return protocol.detection_rows(boxes, real[layout.classes].reshape(-1), real[layout.scores].reshape(-1),
                                       count)


def _detection_outputs(outputs: Sequence[TensorSpec]) -> Tuple[int, ...]:
    """The four outputs of TFLite_Detection_PostProcess: the float32 ones (a state is quantized), else the first 4."""
    floats = tuple(i for i, s in enumerate(outputs) if np.dtype(s.dtype) == np.float32)
    return floats if len(floats) == 4 else tuple(range(min(4, len(outputs))))


def _not_a_detector(name: str, outputs: Sequence[TensorSpec]) -> Optional[str]:
    """Why Frigate cannot use this model (None: it can), from what the file declares.

    The postprocess outputs have no shapes in the file (the runtime gives them), so the
    check is theirs: four float32 outputs. A model that passes and is still no SSD
    detector gets its error with each answer.
    """
    picked = _detection_outputs(outputs)
    if len(picked) != 4 or any(np.dtype(outputs[i].dtype) != np.float32 for i in picked):
        kinds = ", ".join(f"{np.dtype(s.dtype).name} {list(s.shape)}" for s in outputs)
        return (f"model {name} is not an SSD detector Frigate can use: it needs the four float32 outputs of "
                f"TFLite_Detection_PostProcess (boxes, classes, scores, count), it has {kinds}")
    return None
