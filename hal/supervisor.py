"""DevicePool: one supervised worker per device, the only thing the scheduler talks to.

The pool discovers devices, starts a worker for each (``spawn``, before any gRPC
server exists, so no gRPC threads are forked), restarts a dead worker with
exponential backoff and reloads the models it held, and follows hot-plug and
temperature from one monitor thread. A request that the dead worker held fails
with ``DeviceUnavailableError``; one it had not been sent yet is re-queued on the
restarted worker.

Threads: one reader per worker (resolves futures), one monitor (telemetry,
rescan, hang watchdog), and a short-lived life-cycle thread per device while it is
being (re)started. ``on_change`` callbacks run on those threads and must not block.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .backend import Backend, Found
from .device import DeviceEvent, DeviceInfo, DeviceState
from .discovery import BackendOptions, Discovery, parse_specs
from .errors import DeviceUnavailableError, HalError, ModelRuntimeError, RuntimeMissingError
from .executor import TensorSpec
from .handle import ReplyLoop, WorkerHandle, fail_future
from .options import PoolOptions
from .spare import SpareWorker
from .thermal import ThermalMonitor

log = logging.getLogger(__name__)

ChangeCallback = Callable[[DeviceInfo, str], None]


class _Device:
    """The pool's record of one device; guarded by ``lock``."""

    def __init__(self, found: Found) -> None:
        self.found = found
        self.lock = threading.RLock()
        self.state = DeviceState.FAILED
        self.handle: Optional[WorkerHandle] = None
        self.models: Dict[str, Tuple[str, Optional[str]]] = {}
        self.restarts = 0
        self.failures = 0
        self.error: Optional[str] = "not started"
        self.started_at = 0.0
        self.thermal = ThermalMonitor(found.id)
        self.trip_points: Optional[List[float]] = None
        self.lifecycle: Optional[threading.Thread] = None

    @property
    def id(self) -> str:
        return self.found.id


class DevicePool:
    """Every device the ``--device`` specs select, each behind its own worker process.

    Args:
        specs: ``auto`` or ``<backend>[:N]`` (``mock[:N]``, ``cpu``, ``usb[:N]``, ``pci[:N]``; several allowed).
        options: how workers are run, restarted and watched (None: the defaults).
        backend_options: keyword arguments of each backend, by name
            (``{"usb": {"firmware": path}, "pci": {"sysfs_root": tmp}}``); only the
            backends the specs choose are built, so options for others are ignored.

    Raises:
        DeviceSpecError: a spec cannot be parsed, or ``backend_options`` names no backend.
    """

    def __init__(self, specs: Sequence[str] = ("auto",), options: Optional[PoolOptions] = None,
                 backend_options: Optional[BackendOptions] = None) -> None:
        self.specs = parse_specs(specs)
        self.options = options if options is not None else PoolOptions()
        self.slots = self.options.slots
        self._backend_options = dict(backend_options or {})
        self._discovery = Discovery(self.specs, self._backend_options)  # refuses unknown names now
        self._spare: Optional[SpareWorker] = None
        self._spare_lock = threading.Lock()
        self._devices: Dict[str, _Device] = {}
        self._callbacks: List[ChangeCallback] = []
        self._lock = threading.RLock()
        self._discovery_lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: Optional[threading.Thread] = None
        self._started = False
        self._reply_loop: Optional[ReplyLoop] = None

    # -- life cycle ---------------------------------------------------------------
    def read_replies_on(self, loop: Optional[ReplyLoop]) -> None:
        """Have workers started from now on read their replies on ``loop`` (an asyncio loop).

        Without one, each worker has a reader thread, and futures resolve there. An
        asyncio caller that awaits the futures on ``loop`` saves that thread's wake-up
        and its hand-over to the loop on every inference. Then nothing may wait on the
        pool (``load``, ``stop``...) from the loop's own thread: use ``run_in_executor``.
        """
        self._reply_loop = loop

    def start(self) -> None:
        """Discover devices and start one worker each; returns when all have tried once.

        Devices that fail to start are reported (state ``failed``), not raised: the
        daemon serves with what it has.
        """
        if self._started:
            return
        self._started = True
        with self._discovery_lock:
            found = self._discovery.initial()
            present = dict(self._discovery.present)
        for f in found:
            dev = _Device(f)
            if not present.get(f.id):
                dev.state, dev.error = DeviceState.LOST, "not present"
            elif f.needs_firmware:
                dev.state = DeviceState.NEEDS_FIRMWARE
            self._devices[f.id] = dev
        for dev in self._devices.values():
            self._read_telemetry(dev, emit=False)
            if present.get(dev.id):
                self._launch(dev, DeviceEvent.ADDED, [])
        for dev in list(self._devices.values()):
            thread = dev.lifecycle
            if thread is not None:
                thread.join(self.options.start_timeout_s + 5.0)
        self._refill_spare()
        self._monitor = threading.Thread(target=self._monitor_loop, name="edgetpud-device-monitor", daemon=True)
        self._monitor.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the monitor and every worker; pending requests fail with DeviceUnavailableError."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout_s + self.options.poll_interval_s)
        devices = list(self._devices.values())
        for dev in devices:
            thread = dev.lifecycle
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout_s + self.options.start_timeout_s)
        for dev in devices:
            with dev.lock:
                handle, dev.handle = dev.handle, None
            if handle is not None:
                handle.stop(timeout_s, reason=f"{dev.id}: the device pool is stopping")
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()
        with self._discovery_lock:
            self._discovery.close()

    def __enter__(self) -> "DevicePool":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- queries ------------------------------------------------------------------
    def devices(self) -> List[DeviceInfo]:
        with self._lock:
            devices = list(self._devices.values())
        return [self._info(dev) for dev in devices]

    def device(self, device_id: str) -> DeviceInfo:
        return self._info(self._get(device_id))

    def _get(self, device_id: str) -> _Device:
        dev = self._devices.get(device_id)
        if dev is None:
            raise DeviceUnavailableError(f"no device {device_id}; devices are: {', '.join(self._devices) or 'none'}")
        return dev

    def _info(self, dev: _Device) -> DeviceInfo:
        with dev.lock:
            found, handle, state, level = dev.found, dev.handle, dev.state, dev.thermal.level
        # Outside dev.lock: the handle's lock is never taken under it (lock order).
        inflight = handle.inflight() if handle is not None else 0
        pid = handle.pid if handle is not None else None
        if state == DeviceState.READY:
            if level:
                state = DeviceState.THROTTLED
            elif handle is not None and inflight >= handle.slots:
                state = DeviceState.BUSY  # every slot in use: more requests would queue
        usb = found.usb
        with dev.lock:
            return DeviceInfo(
                id=dev.id, kind=found.kind, index=found.index, path=found.path or None, state=state.value,
                temperature_c=dev.thermal.temperature_c, throttle_level=dev.thermal.level,
                models=list(dev.models), restarts=dev.restarts,
                usb_bus=usb.bus if usb else None, usb_ports=usb.ports if usb else None,
                usb_address=usb.address if usb else None, vid_pid=usb.vid_pid if usb else None,
                usb_speed=usb.speed_name if usb else None, trip_points_c=dev.trip_points,
                error=dev.error, pid=pid, inflight=inflight,
            )

    def backend(self, kind: str) -> Optional[Backend]:
        """The backend serving devices of ``kind`` (None when the specs chose none)."""
        return self._discovery.backends.get(kind)

    @property
    def fault_control(self) -> Any:
        """The fault-injection interface of a simulated backend (None on real hardware)."""
        for backend in list(self._discovery.backends.values()):
            control = backend.fault_control()
            if control is not None:
                return control
        return None

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(info, event)`` on added / lost / failed / restarted / throttled / recovered."""
        self._callbacks.append(callback)

    def _emit(self, dev: _Device, event: DeviceEvent) -> None:
        info = self._info(dev)
        for callback in list(self._callbacks):
            try:
                callback(info, event.value)
            except Exception:
                log.exception("device change callback failed on %s %s", dev.id, event.value)

    # -- models and requests ---------------------------------------------------------
    def _handle(self, dev: _Device) -> WorkerHandle:
        with dev.lock:
            handle = dev.handle
            if handle is None or not handle.alive or not dev.state.in_service:
                raise DeviceUnavailableError(f"{dev.id} is {dev.state.value}: {dev.error or 'not serving'}")
            return handle

    def load(self, device_id: str, model_key: str, model_path: Union[str, Path],
             cpu_twin_path: Optional[Union[str, Path]] = None) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        """Open a model on a device; it is reloaded automatically after a worker restart.

        ``model_path`` is the compiled file (run on usb/pci); ``cpu_twin_path`` runs on cpu/mock.

        Raises:
            DeviceUnavailableError: the device is not in service or its worker died.
            ModelRuntimeError: the runtime refused the model.
        """
        dev = self._get(device_id)
        handle = self._handle(dev)
        paths = (str(model_path), str(cpu_twin_path) if cpu_twin_path else None)
        specs = handle.load(model_key, *paths)
        with dev.lock:
            dev.models[model_key] = paths
        return specs

    def unload(self, device_id: str, model_key: str) -> None:
        """Close a model on a device (no error when it was not loaded)."""
        dev = self._get(device_id)
        with dev.lock:
            dev.models.pop(model_key, None)
            handle = dev.handle
        if handle is not None and handle.alive:
            handle.unload(model_key)

    def submit(self, device_id: str, model_key: str, inputs: Sequence[np.ndarray]) -> "Future[List[np.ndarray]]":
        """Run one invocation; never raises: errors arrive through the future.

        The future fails with ``DeviceUnavailableError`` when the device is lost or its
        worker dies with the request in hand, ``ModelRuntimeError`` for bad inputs. A
        completed future carries ``invoke_s``: the seconds the worker spent in the
        executor, so callers can split device time from queueing and transport.
        """
        dev = self._devices.get(device_id)
        try:
            if dev is None:
                raise DeviceUnavailableError(f"no device {device_id}")
            handle = self._handle(dev)
        except HalError as exc:
            future: Future = Future()
            future.set_exception(exc)
            return future
        return handle.submit(model_key, inputs)

    def capacity(self, device_id: str) -> int:
        """How many more invocations the device takes now without queueing (0 when not in service)."""
        dev = self._devices.get(device_id)
        if dev is None:
            return 0
        with dev.lock:
            handle = dev.handle
            if handle is None or not dev.state.in_service:
                return 0
        return handle.capacity()

    # -- bringing workers up -----------------------------------------------------------
    def _backend_of(self, dev: _Device) -> Backend:
        return self._discovery.backends[dev.found.kind]

    def _launch(self, dev: _Device, event: DeviceEvent, queued: list) -> None:
        """Start the life-cycle thread that brings ``dev`` into service (one at a time per device)."""
        with dev.lock:
            if dev.lifecycle is not None and dev.lifecycle.is_alive():
                for r in queued:
                    fail_future(r.future, DeviceUnavailableError(f"{dev.id} is restarting"))
                return
            dev.lifecycle = threading.Thread(target=self._bring_up, args=(dev, event, queued),
                                             name=f"edgetpud-lifecycle-{dev.id}", daemon=True)
            dev.lifecycle.start()

    def _bring_up(self, dev: _Device, event: DeviceEvent, queued: list) -> None:
        """Life-cycle thread: (re)start the worker with backoff until it serves, is lost, or the pool stops."""
        while not self._stop.wait(self.options.restart_delay(dev.failures)):
            with self._discovery_lock:
                present = self._discovery.probe(dev.id)
            if not present:
                self._mark_lost(dev, "not on the bus", queued)
                return
            try:
                handle = self._start_worker(dev)
            except RuntimeMissingError as exc:
                self._give_up(dev, exc, queued)  # not retried: nothing will change
                return
            except HalError as exc:
                with dev.lock:
                    dev.failures += 1
                    dev.state, dev.error = DeviceState.FAILED, str(exc)
                log.warning("%s did not start (attempt %d): %s", dev.id, dev.failures, exc)
                continue
            if self._serve(dev, handle, event, queued):
                return
            handle.stop(1.0)
            break
        self._fail(queued, DeviceUnavailableError(f"{dev.id}: the device pool is stopping"))

    def _start_worker(self, dev: _Device) -> WorkerHandle:
        """A started worker for ``dev`` (a spare taken over if there is one) with its models loaded again.

        Raises:
            HalError: the device could not be prepared or opened; nothing is left running.
        """
        backend = self._backend_of(dev)
        with self._spare_lock:
            spare, self._spare = self._spare, None
        handle: Optional[WorkerHandle] = None
        try:
            dev.found = backend.prepare(dev.found)
            config = backend.worker_config(dev.found, self.options.num_threads,
                                           logging.getLogger("edgetpud").getEffectiveLevel())
            handle = WorkerHandle(config, on_death=self._on_worker_death, slots=self.options.slots,
                                  reply_loop=self._reply_loop)
            handle.start(self.options.start_timeout_s, spare=spare)
            self._reload_models(dev, handle)
        except HalError:
            if handle is not None:
                handle.stop(1.0)
            if spare is not None:
                spare.close()  # a no-op once the handle took it over
            raise
        return handle

    def _reload_models(self, dev: _Device, handle: WorkerHandle) -> None:
        """Open on a new worker what the device served before; a model whose file went is dropped."""
        with dev.lock:
            models = dict(dev.models)
        for key, (path, twin) in models.items():
            try:
                handle.load(key, path, twin)
            except ModelRuntimeError as exc:  # the file changed or vanished: not the device's fault
                log.error("%s: model %s could not be reloaded and was dropped: %s", dev.id, key, exc)
                with dev.lock:
                    dev.models.pop(key, None)

    def _serve(self, dev: _Device, handle: WorkerHandle, event: DeviceEvent, queued: list) -> bool:
        """Put a started worker in service; False when the pool began stopping meanwhile."""
        with dev.lock:
            if self._stop.is_set():
                return False
            dev.handle, dev.state, dev.error = handle, DeviceState.READY, None
            dev.started_at = time.monotonic()
            if event == DeviceEvent.RESTARTED:
                dev.restarts += 1
        handle.adopt(queued)
        log.info("%s in service (%s), worker pid %s", dev.id, event.value, handle.pid)
        self._emit(dev, event)
        self._refill_spare()
        return True

    def _give_up(self, dev: _Device, exc: HalError, queued: list) -> None:
        """The device cannot be used on this host (no runtime): say so once, fail what waited."""
        with dev.lock:
            dev.state, dev.error = DeviceState.FAILED, str(exc)
        log.error("%s cannot be used: %s", dev.id, exc)
        self._fail(queued, exc)
        self._emit(dev, DeviceEvent.FAILED)

    def _refill_spare(self) -> None:
        """Start a new spare worker when the pool keeps one and has none."""
        if not self.options.warm_spare:
            return
        with self._spare_lock:
            if self._spare is None and not self._stop.is_set():
                self._spare = SpareWorker()

    @staticmethod
    def _fail(queued: Sequence[Any], error: Exception) -> None:
        for r in queued:
            fail_future(r.future, error)

    def _on_worker_death(self, handle: WorkerHandle, exitcode: Optional[int], queued: list) -> None:
        dev = self._devices.get(handle.config.device_id)
        if dev is None:
            return
        with dev.lock:
            if dev.handle is not handle:
                self._fail(queued, DeviceUnavailableError(f"{dev.id} is not serving"))
                return
            dev.handle = None
            # Backoff doubles while a worker keeps dying soon after its start.
            dev.failures = 1 if time.monotonic() - dev.started_at > self.options.stable_s else dev.failures + 1
            dev.state, dev.error = DeviceState.FAILED, f"worker {handle.death_reason}; restarting"
        self._emit(dev, DeviceEvent.FAILED)
        if self._stop.is_set():
            self._fail(queued, DeviceUnavailableError(f"{dev.id}: the device pool is stopping"))
            return
        self._launch(dev, DeviceEvent.RESTARTED, queued)

    def _mark_lost(self, dev: _Device, why: str, queued: Sequence[Any] = ()) -> None:
        with dev.lock:
            if dev.state == DeviceState.LOST:
                self._fail(queued, DeviceUnavailableError(f"{dev.id} is lost ({why})"))
                return
            handle, dev.handle = dev.handle, None
            dev.state, dev.error = DeviceState.LOST, why
        log.error("%s lost: %s", dev.id, why)
        if handle is not None:
            handle.stop(2.0, reason=f"{dev.id} is lost ({why})")
        self._fail(queued, DeviceUnavailableError(f"{dev.id} is lost ({why})"))
        self._emit(dev, DeviceEvent.LOST)

    # -- the monitor thread -----------------------------------------------------------
    def _read_telemetry(self, dev: _Device, emit: bool = True) -> None:
        reading = self._backend_of(dev).telemetry(dev.found)
        if reading is None:
            return
        with dev.lock:
            dev.trip_points = reading.trip_points_c
            changed = dev.thermal.update(reading.temperature_c, reading.trip_points_c)
        if changed and emit:
            self._emit(dev, DeviceEvent.THROTTLED)

    def poll(self) -> None:
        """One monitor pass (telemetry, hot-plug rescan, hang watchdog); the monitor thread calls it."""
        self._rescan()
        self._check_devices()

    def poll_and_settle(self, timeout_s: float = 15.0) -> None:
        """One monitor pass, then wait (at most ``timeout_s``) for the bring-ups it started.

        So a caller that just replugged a device sees it in service, not still lost.
        """
        self.poll()
        end = time.monotonic() + timeout_s
        for dev in list(self._devices.values()):
            thread = dev.lifecycle
            if thread is not None:
                thread.join(max(0.0, end - time.monotonic()))

    def _check_devices(self) -> None:
        """Telemetry and hang watchdog of every device (each monitor pass; rescans are rarer)."""
        for dev in list(self._devices.values()):
            self._read_telemetry(dev)
            self._watchdog(dev)

    def _rescan(self) -> None:
        if not self._started:
            return
        with self._discovery_lock:
            result = self._discovery.rescan()
        for dev_id in result.lost:
            dev = self._devices.get(dev_id)
            if dev is not None:
                self._mark_lost(dev, "unplugged")
        for found in result.returned:
            dev = self._devices.get(found.id)
            if dev is not None:
                with dev.lock:
                    dev.found = found
        for found in result.added:
            dev = _Device(found)
            with self._lock:
                self._devices[found.id] = dev
            log.warning("new device %s at %s", found.id, found.path)
            self._read_telemetry(dev, emit=False)
            self._launch(dev, DeviceEvent.ADDED, [])
        # A lost device that is on the bus again (reported as returned now, or found
        # by a restart's probe to be absent only for a moment) is taken back.
        with self._discovery_lock:
            present = dict(self._discovery.present)
            known = dict(self._discovery.known)
        for dev in list(self._devices.values()):
            with dev.lock:
                back = dev.state == DeviceState.LOST and present.get(dev.id, False)
                if back:
                    dev.found = known[dev.id]
                    dev.failures = 0
            if back:
                log.warning("%s is back at %s", dev.id, dev.found.path)
                self._launch(dev, DeviceEvent.RECOVERED, [])

    def _watchdog(self, dev: _Device) -> None:
        with dev.lock:
            handle = dev.handle
        if handle is None:
            return
        oldest = handle.oldest_started()
        timeout_s = self.options.invoke_timeout_s
        if oldest is not None and time.monotonic() - oldest > timeout_s:
            log.error("%s: an invocation has run for more than %.1f s: killing the hung worker", dev.id, timeout_s)
            handle.kill(reason=f"hung for more than {timeout_s:.1f} s",
                        error=f"device {dev.id} did not answer within {timeout_s:g} s (invoke_timeout_s); its worker "
                              "is being restarted: retry in a moment")

    def _monitor_loop(self) -> None:
        next_rescan = time.monotonic() + self.options.rescan_interval_s
        while not self._stop.wait(self.options.poll_interval_s):
            try:
                if time.monotonic() >= next_rescan:
                    self._rescan()
                    next_rescan = time.monotonic() + self.options.rescan_interval_s
                self._check_devices()
            except Exception:
                log.exception("device monitor pass failed")
