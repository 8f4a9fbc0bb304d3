"""edgetpud.v1 Models, Devices and Daemon services: thin translations of the façade."""
from __future__ import annotations

from typing import AsyncIterator, Callable, List, Optional, Tuple

from edgetpud.daemon.errors import NotFoundError, PreconditionError, ResourceExhaustedError
from edgetpud.daemon.metrics import MetricsSummary
from edgetpud.daemon.registry import ModelState, check_name
from edgetpud.hal.device import DeviceInfo
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

from . import convert
from .calls import Servicer
from .facade import FaultInjection
from .status import RequestError

#: Largest model accepted through Upload; a compiled Edge TPU model is at most a few tens of MB.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def daemon_version() -> str:
    """The installed edgetpud distribution's version, for Status and KServe ServerMetadata."""
    try:
        from importlib.metadata import version
        return version("edgetpud")
    except Exception:  # noqa: BLE001 - not installed as a distribution (running from a tree)
        return "unknown"


class ModelsServicer(Servicer, pb_grpc.ModelsServicer):
    async def List(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        models = await self._query(context, "", self._svc.models)
        return pb.ListModelsResponse(models=[convert.model(m) for m in models])

    async def Info(self, request: pb.ModelInfoRequest, context) -> pb.ModelInfo:
        state = await self._query(context, request.name, lambda: self._svc.model_info(request.name))
        return convert.model(state)

    async def Load(self, request: pb.LoadModelRequest, context) -> pb.ModelInfo:
        async def run() -> ModelState:
            if not request.name or not request.path:
                raise RequestError("Load needs a model name and a path (a bundle folder or a .tflite file)")
            labels = request.labels if request.HasField("labels") else None
            await self._svc.load_model(request.name, path=request.path, labels=labels)
            return self._svc.model_info(request.name)
        return convert.model(await self._call(context, request.name, run))

    async def Upload(self, request_iterator: AsyncIterator[pb.UploadModelChunk], context) -> pb.ModelInfo:
        name = ""

        async def run() -> ModelState:
            nonlocal name
            data = bytearray()
            labels: Optional[bytes] = None
            async for chunk in request_iterator:
                kind = chunk.WhichOneof("chunk")
                if kind == "name" and not name and not data:
                    name = check_name(chunk.name)  # before the data arrive: a bad name wastes no transfer
                elif kind == "labels" and name and not data and labels is None:
                    labels = chunk.labels
                elif kind == "data" and name:
                    if len(data) + len(chunk.data) > MAX_UPLOAD_BYTES:
                        raise ResourceExhaustedError(
                            f"upload of model {name} is larger than the {MAX_UPLOAD_BYTES} bytes the daemon takes "
                            "in one upload; an Edge TPU model is a few MB, so check the file, or copy it to the "
                            "daemon's host and load it from its path")
                    data += chunk.data
                else:
                    raise RequestError("Upload takes one chunk with the model name, optionally one with its labels, "
                                       "then its data chunks")
            if not name or not data:
                raise RequestError("Upload needs a model name and at least one data chunk")
            await self._svc.load_model(name, data=bytes(data), labels=labels)
            return self._svc.model_info(name)
        return convert.model(await self._call(context, name, run))

    async def Unload(self, request: pb.UnloadModelRequest, context) -> pb.UnloadModelResponse:
        await self._call(context, request.name, lambda: self._svc.unload_model(request.name))
        return pb.UnloadModelResponse()


class DevicesServicer(Servicer, pb_grpc.DevicesServicer):
    async def List(self, request: pb.ListDevicesRequest, context) -> pb.ListDevicesResponse:
        devices = await self._query(context, "", self._svc.devices)
        return pb.ListDevicesResponse(devices=[convert.device(d) for d in devices])


class DaemonServicer(Servicer, pb_grpc.DaemonServicer):
    async def Status(self, request: pb.StatusRequest, context) -> pb.StatusResponse:
        def ask() -> Tuple[bool, List[DeviceInfo], List[ModelState], MetricsSummary]:
            return self._svc.ready, self._svc.devices(), self._svc.models(), self._svc.metrics.summary()
        ready, devices, models, summary = await self._query(context, "", ask)
        return pb.StatusResponse(ready=bool(ready), devices=[convert.device(d) for d in devices],
                                 models=[convert.model(m) for m in models], version=daemon_version(),
                                 **convert.metrics_summary(summary))


class MockControlServicer(Servicer, pb_grpc.MockControlServicer):
    """Fault injection: forwards to ``service.mock_control`` (mock_device.control.MockControl)."""

    async def _control(self, context, device: str, act: Callable[[FaultInjection], None],
                       rescan: bool = False) -> pb.MockReply:
        """Apply ``act`` to the mock devices' controls; reply with the devices as they are after it
        (``rescan``: after one device monitor pass, which an unplug or replug needs to show)."""
        async def run() -> List[DeviceInfo]:
            control = self._svc.mock_control
            if control is None:
                raise PreconditionError("fault injection needs the daemon to run with --device mock")
            try:
                act(control)
            except KeyError as exc:
                raise NotFoundError(str(exc.args[0]) if exc.args else f"no mock device {device!r}") from None
            except ValueError as exc:
                raise RequestError(str(exc)) from None
            if rescan:
                await self._svc.rescan_devices()
            return self._svc.devices()
        devices = await self._call(context, "", run)
        return pb.MockReply(devices=[convert.device(d) for d in devices])

    async def InjectFault(self, request: pb.InjectFaultRequest, context) -> pb.MockReply:
        params = {k: v for k, v in (("seconds", request.seconds), ("message", request.message),
                                    ("after_s", request.after_s)) if v}
        return await self._control(context, request.device, lambda control: control.inject(
            request.device, request.fault, request.count or 1, **params))

    async def ClearFaults(self, request: pb.MockDeviceRequest, context) -> pb.MockReply:
        return await self._control(context, request.device, lambda control: control.clear_faults(request.device))

    async def Unplug(self, request: pb.MockDeviceRequest, context) -> pb.MockReply:
        return await self._control(context, request.device, lambda control: control.unplug(request.device),
                                   rescan=True)

    async def Replug(self, request: pb.MockDeviceRequest, context) -> pb.MockReply:
        return await self._control(context, request.device, lambda control: control.replug(request.device),
                                   rescan=True)

    async def SetTemperature(self, request: pb.SetTemperatureRequest, context) -> pb.MockReply:
        return await self._control(context, request.device,
                                   lambda control: control.set_temperature(request.device, request.celsius))

    async def SetLatency(self, request: pb.SetLatencyRequest, context) -> pb.MockReply:
        latency = request.latency_s if request.HasField("latency_s") else None
        return await self._control(context, request.device,
                                   lambda control: control.set_latency(request.device, latency))
