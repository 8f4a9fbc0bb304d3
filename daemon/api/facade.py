"""What the gRPC layer needs of the service: one typed façade.

``daemon.service.Service`` meets it, and so does the tests' ``FakeService``; the
servicers are written against this protocol alone, so neither needs fallbacks for
the other (tests/test_facade.py checks both with mypy). Queries are plain calls,
and everything that waits on devices or files is a coroutine.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Protocol, Tuple, Union

from edgetpud.daemon.learning import Learning
from edgetpud.daemon.metrics import MetricsSummary
from edgetpud.daemon.registry import ModelState
from edgetpud.daemon.sequences import SequenceId, StateCarrier
from edgetpud.daemon.service import InferenceRequest, InferenceResult
from edgetpud.daemon.shm import SharedMemoryRegistry
from edgetpud.hal.device import DeviceInfo
from edgetpud.hal.executor import TensorSpec


class RequestMetrics(Protocol):
    """Where the servicers count every request (``daemon.metrics.Metrics``)."""

    def observe_request(self, model: str, device: str, code: str, seconds: float, /) -> None: ...

    def summary(self) -> MetricsSummary:
        """Requests per model and device utilisation since the start (the Status RPC's summary)."""


class FaultInjection(Protocol):
    """The mock devices' controls (``mock_device.control.MockControl``), named here so that the API
    layer does not import the mock.

    Raises (every method):
        KeyError: no such mock device. ValueError: an unknown fault or a bad value.
    """

    def inject(self, device_id: str, fault: str, count: int = 1, **params: object) -> None: ...

    def clear_faults(self, device_id: str) -> None: ...

    def unplug(self, device_id: str) -> None: ...

    def replug(self, device_id: str) -> None: ...

    def set_temperature(self, device_id: str, temperature_c: float) -> None: ...

    def set_latency(self, device_id: str, latency_s: Optional[float]) -> None: ...


class ServiceFacade(Protocol):
    """The service as the servicers see it (docs/architecture.md, "The service façade")."""

    @property
    def ready(self) -> bool:
        """Accepting requests with at least one device in service (health, Status, ServerReady)."""

    @property
    def metrics(self) -> RequestMetrics: ...

    @property
    def mock_control(self) -> Optional[FaultInjection]:
        """None unless the daemon runs on mock devices."""

    @property
    def shared_memory(self) -> SharedMemoryRegistry:
        """The shared-memory regions apps on this host registered (KServe and native frames)."""

    @property
    def learning(self) -> Learning:
        """Retraining. Raises: PreconditionError: not serving (yet, or any more)."""

    def devices(self) -> List[DeviceInfo]: ...

    def models(self) -> List[ModelState]: ...

    def model_info(self, name: str) -> ModelState:
        """Raises: NotFoundError: no such model."""

    def model_specs(self, name: str) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        """Input and output tensor specs of the served version. Raises: NotFoundError."""

    async def load_model(self, name: str, path: Union[str, Path, None] = None,
                         data: Optional[bytes] = None, labels: Optional[bytes] = None) -> ModelState:
        """``labels``: a labels file's bytes, replacing the bundle's own."""

    async def unload_model(self, name: str) -> None: ...

    async def rescan_devices(self) -> None:
        """One device monitor pass now, so a mock unplug or replug shows in the reply."""

    def sequence(self, model: str, sequence_id: SequenceId, start: bool) -> StateCarrier:
        """A KServe sequence's state (``start`` begins it). Raises: NotFoundError (no such model, or the
        sequence is not live), ResourceExhaustedError (too many live), InvalidArgumentError (id 0)."""

    def end_sequence(self, model: str, sequence_id: SequenceId) -> None: ...

    def state_inputs(self, name: str) -> List[str]:
        """The served version's recurrent state inputs (a request may leave them out). Raises: NotFoundError."""

    async def infer(self, model: str, task: Optional[str], request: InferenceRequest,
                    deadline: Optional[float] = None, version: Union[int, str, None] = None,
                    wait_for_room: bool = False) -> InferenceResult: ...
