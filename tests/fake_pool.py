"""One DevicePool stand-in, without processes, for the scheduler, registry and service tests.

It answers the calls those make of ``hal.DevicePool`` and records them. An
invocation either completes at once with ``outputs`` (the registry's warm-ups, a
service serving requests), or, with ``outputs=None``, stays pending until the test
ends it (``finish``, ``fail``), so the scheduler tests decide when work finishes.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edgetpud.hal.device import DeviceInfo
from edgetpud.hal.executor import TensorSpec

#: Invocations a device takes at once unless the test gives its own count.
DEFAULT_SLOTS = 2

Callback = Callable[[DeviceInfo, str], None]


class FakePool:
    """Devices by id (``{"mock:0": slots}``, or ids with ``DEFAULT_SLOTS`` each), all ready at first.

    ``refuse_load`` / ``refuse_submit``: per device, the exception ``load`` / ``submit`` raise.
    """

    def __init__(self, devices: Union[Sequence[str], Mapping[str, int]],
                 outputs: Optional[List[np.ndarray]] = None) -> None:
        self.slots: Dict[str, int] = (dict(devices) if isinstance(devices, Mapping)
                                      else dict.fromkeys(devices, DEFAULT_SLOTS))
        self.infos: Dict[str, DeviceInfo] = {d: DeviceInfo(id=d, kind="mock", index=i)
                                             for i, d in enumerate(self.slots)}
        self.outputs = outputs
        self.loaded: Dict[str, Set[str]] = {d: set() for d in self.slots}
        self.loads: List[Tuple[str, str, str]] = []
        self.submitted: List[Tuple[str, str, concurrent.futures.Future]] = []
        self.warmups: List[Tuple[str, str]] = []  # (device, key) of every invocation
        self.invoked: List[str] = []  # the device of every invocation
        self.refuse_load: Dict[str, Exception] = {}
        self.refuse_submit: Dict[str, Exception] = {}
        self.callbacks: List[Callback] = []

    # ---- what the daemon calls ----

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def devices(self) -> List[DeviceInfo]:
        return list(self.infos.values())

    def on_change(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def load(self, device: str, key: str, model_path: object, twin: object) -> Tuple[List[TensorSpec],
                                                                                     List[TensorSpec]]:
        if device in self.refuse_load:
            raise self.refuse_load[device]
        self.loads.append((device, key, str(model_path)))
        self.loaded.setdefault(device, set()).add(key)
        return [], []

    def unload(self, device: str, key: str) -> None:
        self.loaded.get(device, set()).discard(key)

    def submit(self, device: str, key: str, inputs: object) -> concurrent.futures.Future:
        if device in self.refuse_submit:
            raise self.refuse_submit[device]
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.submitted.append((device, key, future))
        self.warmups.append((device, key))
        self.invoked.append(device)
        if self.outputs is not None:
            future.set_result(list(self.outputs))
        return future

    def capacity(self, device: str) -> int:
        if not self.infos[device].in_service:
            return 0
        return self.slots.get(device, DEFAULT_SLOTS) - len(self.pending(device))

    # ---- what the test does ----

    def placements(self) -> Set[Tuple[str, str]]:
        """Every (device, key) loaded now."""
        return {(device, key) for device, keys in self.loaded.items() for key in keys}

    def pending(self, device: Optional[str] = None) -> List[Tuple[str, str, concurrent.futures.Future]]:
        return [(d, k, f) for d, k, f in self.submitted if not f.done() and (device is None or d == device)]

    def finish(self, index: int = 0, device: Optional[str] = None, value: float = 1.0) -> None:
        self.pending(device)[index][2].set_result([np.full((1,), value, np.float32)])

    def fail(self, exc: Exception, device: Optional[str] = None) -> None:
        for _, _, future in self.pending(device):
            future.set_exception(exc)

    def emit(self, device: str, event: str, state: str = "ready") -> None:
        """Tell the callbacks that ``device`` (added if new) had ``event``, from another thread as the HAL does."""
        info = self.infos.setdefault(device, DeviceInfo(id=device, kind="mock", index=len(self.infos)))
        self.slots.setdefault(device, DEFAULT_SLOTS)
        info.state = state
        thread = threading.Thread(target=lambda: [callback(info, event) for callback in self.callbacks])
        thread.start()
        thread.join()
