"""edgetpud.v1.Inference: classify, detect, embed, invoke and the camera stream."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, AsyncIterator, List, Optional, Sequence

import grpc

from edgetpud.daemon.sequences import StateCarrier
from edgetpud.daemon.service import InferenceResult
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

from . import convert, lift
from .calls import Servicer, deadline_of, observe
from .kserve_shm import span_reader
from .status import RequestError, to_status
from .stream import FramePipeline

#: Frames one stream runs at once when its config leaves max_in_flight at 0, and the most it may ask for
#: (more would only fill the device queues that other clients share).
DEFAULT_STREAM_IN_FLIGHT = 2
MAX_STREAM_IN_FLIGHT = 16


def _payload(task: str, result: InferenceResult) -> dict:
    """The StreamResponse / unary-response fields for one task's payload."""
    if task == "classify":
        return {"classes": convert.classes(result.payload)}
    if task == "detect":
        return {"objects": convert.objects(result.payload)}
    if task == "embed":
        return {"embedding": convert.tensor("embedding", result.payload)}
    return {"outputs": convert.output_tensors(result.payload)}


class InferenceServicer(Servicer, pb_grpc.InferenceServicer):
    """Translates Inference RPCs to ``service.infer``."""

    async def _infer(self, context: grpc.aio.ServicerContext, model: str, version: str, task: str,
                     image: Optional[pb.Image], tensors=(), pixels: Optional[memoryview] = None,
                     **options: Any) -> InferenceResult:
        async def run() -> InferenceResult:
            names = self._input_names(model, tensors)
            request = convert.inference_request(image, tensors, names, pixels=pixels,
                                                shared=self._shared_reader(context), **options)
            return await self._svc.infer(model, task, request, deadline=deadline_of(context),
                                         version=version or None)
        return await self._call(context, model, run)

    def _shared_reader(self, context: grpc.aio.ServicerContext) -> convert.SharedReader:
        return span_reader(lambda: self._svc.shared_memory, context)

    def _input_names(self, model: str, tensors: Sequence[pb.Tensor]) -> List[str]:
        """The model's input names, needed only when some tensor was sent without a name."""
        if not any(not t.name for t in tensors):
            return []
        inputs, _ = self._svc.model_specs(model)
        return [spec.name for spec in inputs]

    async def Classify(self, request: "pb.ClassifyRequest | lift.Lifted", context) -> pb.ClassifyResponse:
        request, pixels = lift.unwrap(request)
        result = await self._infer(context, request.model, request.version, "classify", request.image,
                                   pixels=pixels, top_k=request.top_k, threshold=request.threshold)
        return pb.ClassifyResponse(served_by=convert.served_by(result), **_payload("classify", result))

    async def Detect(self, request: "pb.DetectRequest | lift.Lifted", context) -> pb.DetectResponse:
        request, pixels = lift.unwrap(request)
        result = await self._infer(context, request.model, request.version, "detect", request.image,
                                   pixels=pixels, top_k=request.top_k, threshold=request.threshold)
        return pb.DetectResponse(served_by=convert.served_by(result), **_payload("detect", result))

    async def Embed(self, request: "pb.EmbedRequest | lift.Lifted", context) -> pb.EmbedResponse:
        request, pixels = lift.unwrap(request)
        result = await self._infer(context, request.model, request.version, "embed", request.image,
                                   pixels=pixels, normalize=request.normalize)
        return pb.EmbedResponse(served_by=convert.served_by(result), **_payload("embed", result))

    async def Invoke(self, request: "pb.InvokeRequest | lift.Lifted", context) -> pb.InvokeResponse:
        request, pixels = lift.unwrap(request)
        image = request.image if request.HasField("image") else None
        result = await self._infer(context, request.model, request.version, "raw", image, request.inputs,
                                   pixels=pixels)
        return pb.InvokeResponse(served_by=convert.served_by(result), **_payload("raw", result))

    async def Stream(self, request_iterator: AsyncIterator["pb.StreamRequest | lift.Lifted"],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResponse]:
        """One config message, then frames; one response per frame, in order.

        Raises:
            grpc.aio.AbortError: the first message is not a config, or a later one is.
        """
        messages = request_iterator.__aiter__()
        try:
            config = await self._first_config(messages)
            task = convert.TASKS.get(config.task)
            if task is None:
                raise RequestError(f"unknown task {config.task} in StreamConfig")
            # a stream for a model that is not there fails as a whole, not frame by frame
            self._svc.model_info(config.model)
        except Exception as exc:  # noqa: BLE001 - mapped like every other error
            await context.abort(*to_status(exc))
        options = {"top_k": config.top_k, "threshold": config.threshold, "normalize": config.normalize}
        state = StateCarrier()  # this camera's recurrent state, if the model has one
        shared = self._shared_reader(context)  # frames in shared memory; the caller is looked up once
        numbering = iter(range(1, 2 ** 63))

        async def frames() -> AsyncIterator[lift.Lifted]:
            async for received in messages:
                message, pixels = lift.unwrap(received)
                if message.WhichOneof("message") != "frame":
                    raise RequestError("a Stream takes one StreamConfig, first; later messages must be frames")
                frame = message.frame
                if not frame.frame_id:
                    frame.frame_id = next(numbering)
                yield lift.Lifted(frame, pixels)

        async def process(lifted: lift.Lifted) -> pb.StreamResponse:
            frame, pixels = lifted.message, lifted.pixels
            start = time.perf_counter()
            deadline = time.monotonic() + config.frame_timeout_s if config.frame_timeout_s > 0 else None
            stream_deadline = deadline_of(context)
            if stream_deadline is not None:
                deadline = stream_deadline if deadline is None else min(deadline, stream_deadline)
            try:
                image = frame.image if frame.HasField("image") else None
                names = self._input_names(config.model, frame.inputs)
                request = dataclasses.replace(
                    convert.inference_request(image, frame.inputs, names, pixels=pixels, shared=shared, **options),
                    state=state, reset_state=frame.reset_state)
                # a frame waits for room in a full device queue: the stream's reader pauses meanwhile,
                # and gRPC flow control slows the camera instead of its frames failing
                result = await self._svc.infer(config.model, task, request, deadline=deadline,
                                               version=config.version or None, wait_for_room=True)
            except Exception as exc:  # noqa: BLE001 - a failed frame is answered, the stream goes on
                code, message = to_status(exc)
                observe(self._metrics, config.model, "", code, time.perf_counter() - start)
                return pb.StreamResponse(frame_id=frame.frame_id, status=pb.FRAME_STATUS_FAILED,
                                         error=pb.FrameError(code=code.value[0], message=message))
            observe(self._metrics, config.model, str(result.device or ""), grpc.StatusCode.OK,
                    time.perf_counter() - start)
            return pb.StreamResponse(frame_id=frame.frame_id, status=pb.FRAME_STATUS_OK,
                                     served_by=convert.served_by(result), **_payload(task, result))

        def dropped(lifted: lift.Lifted) -> pb.StreamResponse:
            return pb.StreamResponse(frame_id=lifted.message.frame_id, status=pb.FRAME_STATUS_DROPPED)

        in_flight = min(config.max_in_flight or DEFAULT_STREAM_IN_FLIGHT, MAX_STREAM_IN_FLIGHT)
        pipeline = FramePipeline(process, dropped, in_flight,
                                 latest_wins=config.frame_policy == pb.FRAME_POLICY_LATEST_WINS)
        try:
            async for response in pipeline.run(frames()):
                yield response
        except RequestError as exc:
            await context.abort(*to_status(exc))

    @staticmethod
    async def _first_config(messages: AsyncIterator["pb.StreamRequest | lift.Lifted"]) -> pb.StreamConfig:
        """Raises: RequestError: the stream does not start with a StreamConfig."""
        try:
            message, _ = lift.unwrap(await messages.__anext__())
        except StopAsyncIteration:
            message = None
        if message is not None and message.WhichOneof("message") == "config":
            return message.config
        raise RequestError("a Stream must start with a StreamConfig message (model, task, frame policy)")


#: The requests whose image is parsed without copying its pixels (see lift.py), by method: the path of
#: message fields that leads to the Image.
LIFTED_IMAGES = {"Classify": ("image",), "Detect": ("image",), "Embed": ("image",), "Invoke": ("image",),
                 "Stream": ("frame", "image")}


def add_to_server(servicer: InferenceServicer, server: Any) -> None:
    """Register ``servicer`` as the generated ``add_InferenceServicer_to_server`` does, with image
    requests parsed by ``lift`` so that their pixels are not copied on the way in.

    Every method of the service in the .proto is registered, so a new one cannot be left out.
    """
    service = pb.DESCRIPTOR.services_by_name["Inference"]
    handlers = {}
    for method in service.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        path = LIFTED_IMAGES.get(method.name)
        parse = (lift.lifting_parser(request_type, lift.image_field_path(request_type, *path))
                 if path else request_type.FromString)
        kind = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(getattr(servicer, method.name), request_deserializer=parse,
                                     response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:  # grpcio >= 1.63 looks registered methods up without the generic handlers
        register(service.full_name, handlers)
