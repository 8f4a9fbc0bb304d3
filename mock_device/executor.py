"""MockTpuExecutor: the CPU twin with accelerator-like timing and libedgetpu-like failures.

It runs in the device worker like the real executor does. Latency is simulated by
sleeping what is left of the target after the real CPU work, so a load test sees
TPU timing without burning the shared CPU. Faults come from the mock world (see
``state.py``) so a test in the main process can queue one for the next invocation.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edgetpud.hal.errors import DeviceIOError, DeviceTimeoutError
from edgetpud.hal.executor import TensorSpec, TfliteExecutor

from .state import EXECUTOR_FAULTS, MockWorld

log = logging.getLogger(__name__)

HANG_S = 3600.0


def abort_like_libedgetpu(reason: str) -> None:
    """Die the way libedgetpu does on a USB transfer error: SIGABRT, no clean-up, no core file."""
    log.critical("mock TPU: %s: aborting the process (as libedgetpu does)", reason)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, ValueError, OSError):  # pragma: no cover
        pass
    os.abort()


class MockTpuExecutor:
    """Runs ``model`` (the CPU twin) and pretends to be an Edge TPU.

    ``latency_s`` is the fixed time one invocation takes (None: as fast as the CPU);
    a latency set in the world for this device overrides it. Without ``state_dir``
    there is no world: no unplug, no queued faults.
    """

    def __init__(self, model: Union[str, Path, bytes], device_id: str = "mock:0",
                 state_dir: Optional[Union[str, Path]] = None, latency_s: Optional[float] = None,
                 num_threads: Optional[int] = None) -> None:
        """Raises:
            ModelRuntimeError: the twin cannot be run (for example a compiled model with no twin).
        """
        self.device_id = device_id
        self.latency_s = latency_s
        self.world = MockWorld(state_dir) if state_dir else None
        self._cpu = TfliteExecutor(model, num_threads=num_threads)

    @property
    def inputs(self) -> List[TensorSpec]:
        return self._cpu.inputs

    @property
    def outputs(self) -> List[TensorSpec]:
        return self._cpu.outputs

    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run the twin, sleep to the simulated latency, apply a queued fault.

        Raises:
            ModelRuntimeError: bad inputs.
            DeviceIOError: an injected "error" fault.
            DeviceTimeoutError: an injected "timeout" fault.
        """
        start = time.perf_counter()
        latency = self.latency_s
        fault: Optional[Dict[str, Any]] = None
        if self.world is not None:
            plugged, world_latency, fault = self.world.for_invoke(self.device_id, EXECUTOR_FAULTS)
            if not plugged:
                abort_like_libedgetpu(f"{self.device_id} is unplugged (transfer failed: LIBUSB_ERROR_NO_DEVICE)")
            latency = world_latency if world_latency is not None else latency
        fault = fault or {}
        kind = fault.get("fault")
        if kind == "error":
            raise DeviceIOError(fault.get("message") or f"{self.device_id}: injected invocation error")
        if kind == "hang":
            time.sleep(float(fault.get("seconds") or HANG_S))
        outputs = self._cpu.invoke(inputs)
        if kind == "abort":
            # Half-way through, as a transfer error would strike mid-invocation.
            time.sleep(float(fault.get("after_s") or (latency or 0.0) / 2))
            abort_like_libedgetpu(fault.get("message") or f"{self.device_id}: injected transfer error")
        if kind == "timeout":
            time.sleep(float(fault.get("seconds") or 0.0))
            raise DeviceTimeoutError(f"{self.device_id}: injected invocation timeout")
        if latency:
            remaining = latency - (time.perf_counter() - start)
            if remaining > 0:
                time.sleep(remaining)
        return outputs

    def close(self) -> None:
        self._cpu.close()
