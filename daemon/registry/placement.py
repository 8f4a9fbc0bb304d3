"""Put a version's base model on the pool's devices and take it off again.

This is the registry's only contact with the device pool and the scheduler's
placement table, so the version bookkeeping above it never touches a device.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, List

import numpy as np

from edgetpud.hal.errors import DeviceUnavailableError, HalError

from ..errors import ModelError
from .state import ModelVersion

log = logging.getLogger(__name__)

Run = Callable[..., Awaitable[Any]]


class Placement:
    """Loads and warms versions on devices (``pool.load`` then one invocation), and unloads them."""

    def __init__(self, pool: Any, scheduler: Any, run_blocking: Run) -> None:
        self._pool = pool
        self._scheduler = scheduler
        self._run = run_blocking

    def usable_devices(self) -> List[Any]:
        return [d for d in self._pool.devices() if d.in_service]

    async def everywhere(self, mv: ModelVersion) -> None:
        """Load and warm ``mv`` on every usable device; it must land on at least one if any is usable.

        Raises:
            ModelError: the runtime refused the model on every device.
            DeviceUnavailableError: every device failed.
        """
        devices = self.usable_devices()
        if not devices:
            mv.problems.append("no device was available at load time; it is loaded on first use")
            log.warning("model %s: no device available; it will be loaded on first use", mv.name)
            return
        results = await asyncio.gather(*(self.place(d.id, mv) for d in devices), return_exceptions=True)
        errors = [(d.id, r) for d, r in zip(devices, results) if isinstance(r, BaseException)]
        if len(errors) == len(devices):
            first = errors[0][1]
            for device, _ in errors:
                self.unload_quietly(device, mv.key)
            if isinstance(first, (ModelError, DeviceUnavailableError)):
                raise first
            raise ModelError(f"model {mv.name} could not be loaded: {first}") from first
        for device, exc in errors:
            mv.problems.append(f"not loaded on {device}: {exc}")
            log.warning("model %s not loaded on %s: %s", mv.name, device, exc)

    async def place(self, device: str, mv: ModelVersion) -> None:
        """Load ``mv``'s base on ``device`` under its pool key and warm it with one invocation.

        Raises:
            ModelError: the runtime refused the model. DeviceUnavailableError: the device is gone.
        """
        key = mv.key
        kind = next((d.kind for d in self._pool.devices() if d.id == device), device.split(":")[0])
        model_file = mv.bundle.file_for(kind)
        try:
            await self._run(self._pool.load, device, key, model_file, mv.bundle.model_path)
            zeros = [np.zeros(s.shape, dtype=s.dtype) for s in mv.bundle.inputs]
            await asyncio.wrap_future(self._pool.submit(device, key, zeros))
        except HalError as exc:
            if isinstance(exc, DeviceUnavailableError):
                raise
            raise ModelError(f"model {mv.name} cannot run on {device}: {exc}") from exc
        mv.devices.add(device)
        self._scheduler.placed(key, device)

    async def remove(self, mv: ModelVersion) -> None:
        """Take ``mv``'s base off every device it is on (no later version may share its key)."""
        self._scheduler.unplaced(mv.key)
        for device in sorted(mv.devices):
            await self._run(self.unload_quietly, device, mv.key)
        mv.devices.clear()

    def unload_quietly(self, device: str, key: str) -> None:
        try:
            self._pool.unload(device, key)
        except Exception as exc:  # a gone device has nothing to unload
            log.debug("unloading %s from %s: %s", key, device, exc)
