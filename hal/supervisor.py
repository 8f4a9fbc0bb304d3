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
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .device import DeviceEvent, DeviceInfo, DeviceState
from .discovery import Discovery, Found, parse_specs
from .errors import DeviceUnavailableError, HalError, ModelRuntimeError, RuntimeMissingError
from .executor import TensorSpec
from .pcie import read_telemetry
from .thermal import ThermalMonitor
from .worker import ReplyLoop, SpareWorker, WorkerConfig, WorkerHandle, fail_future

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
        specs: ``auto``, ``mock[:N]``, ``cpu``, ``usb[:N]``, ``pci[:N]`` (several allowed).
        sysfs_root: where ``class/apex`` is read; None is ``/sys``.
        usb_backend: a pyusb backend; None is pyusb's default (libusb).
        mock_latency_s: simulated invoke time of mock devices (None: CPU speed).
        mock_state_dir: the mock world's folder (None: a temporary one, removed on stop).
        slots: shared-memory slots per model = invocations in flight per device (>= 2).
        tpu_executor: "edgetpu" (libedgetpu delegate) or "mock" (CPU twin, for usb/pci test rigs).
        usb_firmware: a firmware image the pool pushes to DFU-mode accelerators itself.
        backoff_s: (first, longest) delay before restarting a dead worker; it doubles
            while workers keep dying within ``stable_s`` of their start.
        invoke_timeout_s: an invocation running longer is taken for a hang: the worker is killed.
        warm_spare: keep one idle worker process with the runtime imported, so a restart
            skips spawning Python (about 4x faster recovery, one more process's memory).

    Raises:
        DeviceSpecError: a spec cannot be parsed.
    """

    def __init__(
        self,
        specs: Sequence[str] = ("auto",),
        sysfs_root: Optional[Union[str, Path]] = None,
        usb_backend: Any = None,
        mock_latency_s: Optional[float] = None,
        mock_state_dir: Optional[Union[str, Path]] = None,
        slots: int = 4,
        poll_interval_s: float = 1.0,
        rescan_interval_s: float = 2.0,
        invoke_timeout_s: float = 30.0,
        backoff_s: Tuple[float, float] = (0.05, 10.0),
        stable_s: float = 60.0,
        tpu_executor: str = "edgetpu",
        delegate_options: Optional[Mapping[str, str]] = None,
        usb_firmware: Optional[Union[str, Path]] = None,
        num_threads: Optional[int] = None,
        start_timeout_s: float = 60.0,
        warm_spare: bool = False,
    ) -> None:
        self.specs = parse_specs(specs)
        self.sysfs_root = str(sysfs_root) if sysfs_root is not None else None
        self.usb_backend = usb_backend
        self.mock_latency_s = mock_latency_s
        self.slots = max(2, int(slots))
        self.poll_interval_s = poll_interval_s
        self.rescan_interval_s = rescan_interval_s
        self.invoke_timeout_s = invoke_timeout_s
        self.backoff_s = backoff_s
        self.stable_s = stable_s
        if tpu_executor not in ("edgetpu", "mock"):
            raise ValueError("tpu_executor is 'edgetpu' or 'mock'")
        self.tpu_executor = tpu_executor
        self.delegate_options = tuple(sorted((str(k), str(v)) for k, v in (delegate_options or {}).items()))
        self.usb_firmware = Path(usb_firmware) if usb_firmware else None
        self.num_threads = num_threads
        self.start_timeout_s = start_timeout_s
        self.warm_spare = warm_spare
        self._spare: Optional[SpareWorker] = None
        self._spare_lock = threading.Lock()
        self._mock = any(s.kind == "mock" for s in self.specs)
        self._mock_state_dir = str(mock_state_dir) if mock_state_dir else None
        self._own_state_dir = False
        self._devices: Dict[str, _Device] = {}
        self._callbacks: List[ChangeCallback] = []
        self._lock = threading.RLock()
        self._discovery_lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: Optional[threading.Thread] = None
        self._discovery: Optional[Discovery] = None
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
        mock_sysfs = None
        if self._mock:
            from edgetpud.mock_device.state import MockWorld
            from edgetpud.mock_device.usb_backend import MockUsbBackend

            if self._mock_state_dir is None:
                self._mock_state_dir = tempfile.mkdtemp(prefix="edgetpud-mock-")
                self._own_state_dir = True
            count = next(s.index or 1 for s in self.specs if s.kind == "mock")
            world = MockWorld.create(self._mock_state_dir, count)
            self.usb_backend = MockUsbBackend.from_world(world)
            mock_sysfs = str(world.sysfs_root)
            log.warning("running on %d MOCK device(s), state in %s", count, self._mock_state_dir)
        self._discovery = Discovery(self.specs, self.sysfs_root, self.usb_backend, mock_sysfs)
        with self._discovery_lock:
            found = self._discovery.initial()
            present = dict(self._discovery.present)
        for f in found:
            dev = _Device(f)
            if not present.get(f.id):
                dev.state, dev.error = DeviceState.LOST, "not present"
            elif f.usb is not None and f.usb.needs_firmware:
                dev.state = DeviceState.NEEDS_FIRMWARE
            self._devices[f.id] = dev
        for dev in self._devices.values():
            self._read_telemetry(dev, emit=False)
            if present.get(dev.id):
                self._launch(dev, DeviceEvent.ADDED, [])
        for dev in list(self._devices.values()):
            thread = dev.lifecycle
            if thread is not None:
                thread.join(self.start_timeout_s + 5.0)
        self._refill_spare()
        self._monitor = threading.Thread(target=self._monitor_loop, name="edgetpud-device-monitor", daemon=True)
        self._monitor.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the monitor and every worker; pending requests fail with DeviceUnavailableError."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout_s + self.poll_interval_s)
        devices = list(self._devices.values())
        for dev in devices:
            thread = dev.lifecycle
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout_s + self.start_timeout_s)
        for dev in devices:
            with dev.lock:
                handle, dev.handle = dev.handle, None
            if handle is not None:
                handle.stop(timeout_s, reason=f"{dev.id}: the device pool is stopping")
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()
        if self._own_state_dir and self._mock_state_dir:
            shutil.rmtree(self._mock_state_dir, ignore_errors=True)

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

    @property
    def mock_state_dir(self) -> Optional[str]:
        return self._mock_state_dir if self._mock else None

    @property
    def mock_control(self) -> Any:
        """The fault-injection interface of the mock world (None unless running on mock devices)."""
        if not self._mock or self._mock_state_dir is None:
            return None
        from edgetpud.mock_device.control import MockControl

        return MockControl(self._mock_state_dir)

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
    def _config(self, dev: _Device) -> WorkerConfig:
        return WorkerConfig(
            device_id=dev.id, kind=dev.found.kind, delegate_device=dev.found.delegate_device,
            delegate_options=self.delegate_options, tpu_executor=self.tpu_executor,
            mock_state_dir=self._mock_state_dir if self._mock else None, mock_latency_s=self.mock_latency_s,
            num_threads=self.num_threads, log_level=logging.getLogger("edgetpud").getEffectiveLevel(),
        )

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

    def _push_firmware_if_needed(self, dev: _Device) -> None:
        acc = dev.found.usb
        if acc is None or not acc.needs_firmware or self.usb_firmware is None:
            return
        from .usb import push_firmware, wait_for_runtime

        push_firmware(acc, self.usb_firmware.read_bytes(), backend=self.usb_backend)
        dev.found.usb = wait_for_runtime(acc, backend=self.usb_backend)

    def _bring_up(self, dev: _Device, event: DeviceEvent, queued: list) -> None:
        """Life-cycle thread: (re)start the worker with backoff until it serves, is lost, or the pool stops."""
        handle: Optional[WorkerHandle] = None
        while not self._stop.is_set():
            if dev.failures:
                delay = min(self.backoff_s[1], self.backoff_s[0] * (2 ** (dev.failures - 1)))
                if self._stop.wait(delay):
                    break
            with self._discovery_lock:
                present = self._discovery.probe(dev.id) if self._discovery else False
            if not present:
                self._mark_lost(dev, "not on the bus", queued)
                return
            handle = WorkerHandle(self._config(dev), on_death=self._on_worker_death, slots=self.slots,
                                  reply_loop=self._reply_loop)
            with self._spare_lock:
                spare, self._spare = self._spare, None
            try:
                self._push_firmware_if_needed(dev)
                handle.start(self.start_timeout_s, spare=spare)
                with dev.lock:
                    models = dict(dev.models)
                for key, (path, twin) in models.items():
                    try:
                        handle.load(key, path, twin)
                    except ModelRuntimeError as exc:  # the file changed or vanished: not the device's fault
                        log.error("%s: model %s could not be reloaded and was dropped: %s", dev.id, key, exc)
                        with dev.lock:
                            dev.models.pop(key, None)
            except HalError as exc:
                handle.stop(1.0)
                if spare is not None:
                    spare.close()  # a no-op once the handle took it over
                if isinstance(exc, RuntimeMissingError):
                    with dev.lock:
                        dev.state, dev.error = DeviceState.FAILED, str(exc)  # not retried: nothing will change
                    log.error("%s cannot be used: %s", dev.id, exc)
                    self._fail(queued, exc)
                    self._emit(dev, DeviceEvent.FAILED)
                    return
                with dev.lock:
                    dev.failures += 1
                    dev.state, dev.error = DeviceState.FAILED, str(exc)
                log.warning("%s did not start (attempt %d): %s", dev.id, dev.failures, exc)
                handle = None
                continue
            with dev.lock:
                if self._stop.is_set():
                    break
                dev.handle, dev.state, dev.error = handle, DeviceState.READY, None
                dev.started_at = time.monotonic()
                if event == DeviceEvent.RESTARTED:
                    dev.restarts += 1
            handle.adopt(queued)
            log.info("%s in service (%s), worker pid %s", dev.id, event.value, handle.pid)
            self._emit(dev, event)
            self._refill_spare()
            return
        if handle is not None:
            handle.stop(1.0)
        self._fail(queued, DeviceUnavailableError(f"{dev.id}: the device pool is stopping"))

    def _refill_spare(self) -> None:
        """Start a new spare worker when the pool keeps one and has none."""
        if not self.warm_spare:
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
            dev.failures = 1 if time.monotonic() - dev.started_at > self.stable_s else dev.failures + 1
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
        sysfs_dir = dev.found.sysfs_dir
        if sysfs_dir is None:
            return
        reading = read_telemetry(sysfs_dir)
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
        if self._discovery is None:
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
        if oldest is not None and time.monotonic() - oldest > self.invoke_timeout_s:
            log.error("%s: an invocation has run for more than %.1f s: killing the hung worker",
                      dev.id, self.invoke_timeout_s)
            handle.kill(reason=f"hung for more than {self.invoke_timeout_s:.1f} s")

    def _monitor_loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_interval_s
        while not self._stop.wait(self.poll_interval_s):
            try:
                if time.monotonic() >= next_rescan:
                    self._rescan()
                    next_rescan = time.monotonic() + self.rescan_interval_s
                self._check_devices()
            except Exception:
                log.exception("device monitor pass failed")
