"""edgetpud.v1 Learning: thin translations of the service's retraining calls."""
from __future__ import annotations

import asyncio
import math
from typing import Any, AsyncIterator, List

import grpc
import numpy as np

from edgetpud.daemon.learn.imprinting import MAX_SAMPLES_PER_CALL
from edgetpud.daemon.learning import Learning, LearnedView, SampleBatch, TrainParams
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

from . import convert
from .calls import Servicer, observe
from .kserve_shm import span_reader
from .status import RequestError, to_status

#: Bytes per ExportChunk: well under any message limit.
EXPORT_CHUNK_BYTES = 256 * 1024


def learned(view: LearnedView) -> pb.LearnedModel:
    return pb.LearnedModel(
        model=view.model, version=str(view.version), head_version=int(view.head_version or 0), method=view.method,
        classes=[pb.LearnedClass(id=c.id, label=c.label, samples=c.samples, source=c.source) for c in view.classes])


class LearningServicer(Servicer, pb_grpc.LearningServicer):
    """Samples, classes, training, export and head versions, through ``service.learning``."""

    @property
    def _learning(self) -> Learning:
        return self._svc.learning

    async def AddSamples(self, request_iterator: AsyncIterator[pb.AddSamplesRequest], context) -> pb.AddSamplesResponse:
        model = ""

        async def run() -> pb.AddSamplesResponse:
            nonlocal model
            batches: List[SampleBatch] = []
            keep = False
            count = 0
            shared = span_reader(lambda: self._svc.shared_memory, context)  # samples sent as shared frames
            async for message in request_iterator:
                if not batches:
                    model, keep = message.model, message.keep_classes
                    if not model:
                        raise RequestError("the first AddSamples message must name the model")
                elif message.model and message.model != model:
                    raise RequestError("one AddSamples call adds to one model; start another call for another")
                if not batches or (message.label and message.label != batches[-1].label):
                    batches.append(SampleBatch(message.label))
                kind = message.WhichOneof("sample")
                if kind is None:
                    continue
                count += 1
                if count > MAX_SAMPLES_PER_CALL:
                    raise RequestError(f"one AddSamples call adds at most {MAX_SAMPLES_PER_CALL} samples; "
                                       "split the samples over several calls")
                batch = batches[-1]
                if kind == "image":
                    image = convert.image_input(message.image, shared=shared)
                    batch.images.append(image)
                    batch.blobs.append(bytes(message.image.encoded) if image.data is not None else None)
                else:
                    batch.embeddings.append(np.asarray(message.embedding.values, dtype=np.float32))
            if context.cancelled():  # a cancelled client stream can end like a finished one: store nothing
                raise asyncio.CancelledError()
            if not batches:
                raise RequestError("AddSamples received no message: send the model and label, then samples")
            view, added = await self._learning.add_samples(model, batches, keep_classes=keep)
            return pb.AddSamplesResponse(model=learned(view), added=added)
        return await self._call(context, model, run)

    async def ListClasses(self, request: pb.ListClassesRequest, context) -> pb.ListClassesResponse:
        async def run() -> pb.ListClassesResponse:
            return pb.ListClassesResponse(model=learned(self._learning.view(request.model)))
        return await self._call(context, request.model, run)

    async def RemoveClass(self, request: pb.RemoveClassRequest, context) -> pb.RemoveClassResponse:
        async def run() -> pb.RemoveClassResponse:
            view = await self._learning.remove_class(request.model, request.label)
            return pb.RemoveClassResponse(model=learned(view))
        return await self._call(context, request.model, run)

    async def Train(self, request: pb.TrainRequest, context) -> AsyncIterator[pb.TrainProgress]:
        queue: "asyncio.Queue[Any]" = asyncio.Queue()
        params = TrainParams(
            epochs=request.epochs or None, learning_rate=request.learning_rate or None,
            batch_size=request.batch_size or None, l2=request.l2 or None,
            validation_fraction=request.validation_fraction or None,
            seed=request.seed if request.HasField("seed") else None, warm_start=request.warm_start)
        task = asyncio.ensure_future(self._learning.train(request.model, params, queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        # A client's cancel may land while this generator waits at a yield, where no CancelledError
        # reaches it: the end of the RPC, however it ends, stops the training.
        context.add_done_callback(lambda _: task.cancel())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield pb.TrainProgress(epoch=item.epoch, epochs=item.epochs, loss=item.loss,
                                       train_accuracy=item.train_accuracy,
                                       validation_accuracy=_nan_safe(item.validation_accuracy))
            view = await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - mapped like every RPC's errors
            await self._abort(context, request.model, exc)
            return
        observe(self._metrics, request.model, "", grpc.StatusCode.OK, 0.0)
        yield pb.TrainProgress(model=learned(view))

    async def Export(self, request: pb.ExportRequest, context) -> AsyncIterator[pb.ExportChunk]:
        try:
            data, view = await self._learning.export(request.model, request.target or "cpu")
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, request.model, exc)
            return
        labels = "".join(f"{c.label}\n" for c in view.classes)
        yield pb.ExportChunk(header=pb.ExportHeader(model=view.model, head_version=int(view.head_version or 0),
                                                    target=request.target or "cpu", size=len(data), labels=labels))
        for start in range(0, len(data), EXPORT_CHUNK_BYTES):
            yield pb.ExportChunk(data=data[start:start + EXPORT_CHUNK_BYTES])

    async def ListHeads(self, request: pb.ListHeadsRequest, context) -> pb.ListHeadsResponse:
        async def run() -> pb.ListHeadsResponse:
            heads = self._learning.heads(request.model)
            return pb.ListHeadsResponse(model=request.model, heads=[
                pb.HeadVersion(head_version=h.version, method=h.method, created=h.created,
                               labels=list(h.labels), current=h.current) for h in heads])
        return await self._call(context, request.model, run)

    async def RestoreHead(self, request: pb.RestoreHeadRequest, context) -> pb.LearnedModel:
        async def run() -> pb.LearnedModel:
            if not request.head_version:
                raise RequestError("RestoreHead needs a head_version (1, 2, ...; 'edgetpuctl heads list' shows them)")
            return learned(await self._learning.restore(request.model, int(request.head_version)))
        return await self._call(context, request.model, run)

    async def _abort(self, context: grpc.aio.ServicerContext, model: str, exc: BaseException) -> None:
        code, message = to_status(exc)
        observe(self._metrics, model, "", code, 0.0)
        await context.abort(code, message)


def _nan_safe(value: float) -> float:
    return float("nan") if value is None or not math.isfinite(value) else float(value)
