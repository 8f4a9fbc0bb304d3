"""The service core under the gRPC layer: devices, models and inference behind one façade.

``Service`` owns the DevicePool (workers start before any gRPC server exists), the
Registry and the Scheduler. ``infer`` preprocesses in the main process (on the loop
when that is cheaper than a thread switch, else on a small thread pool so the loop
stays responsive), runs the invocation on a device through the scheduler, and
postprocesses. Nothing accepted is dropped: ``stop``
refuses new requests, waits for accepted ones within the grace period, and only
then stops the workers.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from edgetpud.hal.device import DeviceInfo
from edgetpud.hal.executor import TensorSpec

from .config import Config
from .learn.store import Store, store_path
from .learning import Learning
from .errors import ImageError, InvalidArgumentError, ModelError, NotFoundError, PreconditionError, ShuttingDownError
from .metrics import Metrics
from .model.bundle import TASKS
from .model.preprocess import frame_to_rgb, input_size
from .model.session import DEFAULTS, PREPROCESS_OPTIONS
from .registry import ModelState, ModelVersion, Registry, check_name
from .model.state import initial_state, next_state
from .scheduler import DeadlineExceededError, Scheduler
from .sequences import SequenceId, Sequences, StateCarrier
from .shm import SharedMemoryRegistry

if TYPE_CHECKING:  # the mock is imported only when --device mock selects it
    from edgetpud.mock_device.control import MockControl

log = logging.getLogger(__name__)

CPU_THREADS = 2
#: Postprocessing that takes tens of microseconds (top-k of ~1000 scores, a norm, a dict):
#: cheaper on the loop than a thread hop.
INLINE_POSTPROCESS = frozenset({"classify", "embed", "raw"})
#: Raw frames for inputs up to this many pixels are preprocessed on the loop: with cached resize
#: tables that costs about 0.3 ms at 128x128 and 1 ms at 224x224 here, less than the two thread
#: switches (and GIL hand-offs) of a trip through the CPU pool, which on a busy 2-core host cost
#: 0.3-0.4 ms. Larger inputs go to the pool.
INLINE_FRAME_MAX_PIXELS = 224 * 224
#: An encoded image up to this size (a camera JPEG of a megapixel or two; parrot.jpg, 0.5 MP in
#: 597 KB, decodes in 5 ms here, with the GIL released) is decoded on the loop when it is the only request in flight:
#: nothing else is waiting for the loop, so the trip through the pool would only add its
#: switches. With other requests in flight, or a bigger file (a long decode would keep new
#: requests from being read), it goes to the pool, so two decodes can also run in parallel.
INLINE_ENCODED_MAX_BYTES = 1024 * 1024
#: Configuration keys a reload (SIGHUP) applies; every other key takes effect after a restart.
RELOADABLE_KEYS = ("models_dir", "grace_s", "log_level")
#: The mock devices' world, under state_dir (only with --device mock).
MOCK_STATE_FOLDER = "mock-devices"


class InvalidRequestError(InvalidArgumentError):
    """A request lacks what its task needs, or has an option that does not apply."""


@dataclass(frozen=True)
class RawFrame:
    """One uncompressed camera frame: rows of ``stride`` bytes (a read-only view is as good as bytes)."""

    data: Union[bytes, memoryview]
    width: int
    height: int
    stride: int
    pixel_format: str = "RGB"


@dataclass(frozen=True)
class ImageInput:
    """An encoded image or a raw frame, with an optional crop (x, y, w, h) applied first."""

    data: Optional[Union[bytes, memoryview]] = None
    frame: Optional[RawFrame] = None
    crop: Optional[Tuple[int, int, int, int]] = None


@dataclass(frozen=True)
class InferenceRequest:
    """What to infer on: an image (classify/detect/embed) or named tensors (raw); options such as top_k."""

    image: Optional[ImageInput] = None
    tensors: Optional[Dict[str, np.ndarray]] = None
    options: Dict[str, Any] = field(default_factory=dict)
    #: A recurrent model's state carried from the previous frame (a stream's or a sequence's); None:
    #: the request starts from the initial state and leaves nothing behind.
    state: Optional[StateCarrier] = None
    #: Start this frame from the initial state (a new scene), then carry on from it.
    reset_state: bool = False


@dataclass(frozen=True)
class InferenceResult:
    """The answer, which version and device served it, and where the time went."""

    model: str
    version: int
    device: str
    timing: Dict[str, float]
    payload: Any


class Service:
    """DevicePool + Registry + Scheduler, and the façade the API layer calls (``api.facade.ServiceFacade``)."""

    metrics: Metrics

    def __init__(self, config: Config, pool: Any = None) -> None:
        self.config = config
        self._shared_memory = SharedMemoryRegistry()
        if pool is None:
            from edgetpud.hal import DevicePool, PoolOptions

            options = PoolOptions(
                slots=config.device_slots, poll_interval_s=config.device_poll_s,
                rescan_interval_s=config.device_rescan_s, invoke_timeout_s=config.invoke_timeout_s,
                backoff_s=(config.restart_backoff_s[0], config.restart_backoff_s[1]),
                stable_s=config.restart_stable_s, start_timeout_s=config.device_start_timeout_s,
                warm_spare=config.warm_spare, num_threads=config.cpu_threads)
            # The mock world lives in the state folder, not /tmp: a daemon killed with SIGKILL cannot
            # remove it, and the next start replaces it (MockWorld.create).
            backends = {"usb": {"firmware": config.usb_firmware},
                        "mock": {"latency_s": config.mock_latency_s,
                                 "state_dir": Path(config.state_dir) / MOCK_STATE_FOLDER}}
            pool = DevicePool(list(config.devices), options, backends)
        self.pool = pool
        self._cpu: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.scheduler = Scheduler(pool, queue_depth=config.queue_depth, loader=self._place,
                                   invoke_timeout_s=config.invoke_timeout_s)
        self.registry = Registry(pool, self.scheduler, config.state_dir, self._blocking)
        self._learning: Optional[Learning] = None
        self.metrics = Metrics(devices=self._devices_quietly, queue_depths=self.scheduler.queue_depths)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._started = False
        self._pool_started = False
        self._accepting = False
        self._draining = False
        self._stopped = False
        self._active = 0
        self._idle = asyncio.Event()
        self._device_tasks: "set[asyncio.Task[Any]]" = set()
        self.sequences = Sequences(config.sequence_limit, config.sequence_idle_s)
        self.metrics_port: Optional[int] = None

    # ---- life cycle ----

    async def start(self) -> None:
        """Start the device workers, then load every bundle under ``models_dir``.

        Raises:
            PreconditionError: the metrics endpoint cannot be bound.
        """
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._cpu = concurrent.futures.ThreadPoolExecutor(CPU_THREADS, thread_name_prefix="edgetpud-cpu")
        started = time.monotonic()
        self._pool_started = True  # stop() must stop whatever part of the pool came up
        read_replies_on = getattr(self.pool, "read_replies_on", None)
        if read_replies_on is not None:  # completions then wake the loop itself, not a thread that wakes it
            read_replies_on(self._loop)
        await self._blocking(self.pool.start)
        self.pool.on_change(self._on_device_change)
        devices = self.pool.devices()
        self.scheduler.set_devices(d.id for d in devices if d.in_service)
        log.info("devices up in %.2f s: %s", time.monotonic() - started,
                 ", ".join(f"{d.id}={d.state}" for d in devices) or "none")
        self._learning = await self._blocking(self._open_learning)
        self.registry.adapt = self._learning.adapt
        self._started = True
        self._accepting = True
        if not Path(self.config.models_dir).is_dir():
            log.warning("the models folder %s does not exist or is not a folder: no bundles are served from it; "
                        "create it (or pass --models DIR / set models_dir), then reload (SIGHUP, systemctl reload "
                        "edgetpud)", self.config.models_dir)
        # Uploads first: one that replaced a folder bundle of its name before the restart still does.
        restored = await self.registry.restore_uploads()
        outcome = await self.registry.load_folder(self.config.models_dir)
        failed = {n: p for n, p in outcome.items() if p}
        log.info("serving %d model(s) from %s%s%s", len(self.registry.names()), self.config.models_dir,
                 f" and {sum(1 for p in restored.values() if p is None)} uploaded one(s)" if restored else "",
                 f"; {len(failed)} bundle(s) skipped" if failed else "")
        if self.config.metrics_listen:
            self.metrics_port = self.metrics.serve(self.config.metrics_listen)
        if self._learning.stale:
            self._background(self._learning.refresh_stale())

    def _open_learning(self) -> Learning:
        """Open (or create) the store of samples and heads under the state folder.

        Raises:
            StoreError: the store file is damaged or from a newer edgetpud (it is left as it is).
        """
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        store = Store(store_path(self.config.state_dir),
                      max_bytes_per_model=self.config.learn_max_bytes_per_model)
        return Learning(store, self.registry, self.config.state_dir, self._blocking, self._embed)

    @property
    def learning(self) -> Learning:
        """Retraining: samples, heads and their versions.

        Raises:
            PreconditionError: the daemon has not started yet.
        """
        if self._learning is None:
            raise PreconditionError("the daemon is not serving yet (starting)")
        self._check_accepting()
        return self._learning

    async def _embed(self, model: str, image: Any) -> np.ndarray:
        """The raw embedding of one image by ``model``'s base, run on a device like any request."""
        if not isinstance(image, ImageInput):
            image = ImageInput(data=bytes(image))
        result = await self.infer(model, "embed", InferenceRequest(image=image, options={"normalize": False}),
                                  wait_for_room=True)
        return np.asarray(result.payload, np.float32)

    def _background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._device_tasks.add(task)
        task.add_done_callback(self._device_tasks.discard)

    async def drain(self, grace_s: Optional[float] = None) -> None:
        """Refuse new requests (UNAVAILABLE: shutting down) and wait up to ``grace_s`` for the accepted ones.

        The daemon does this while its gRPC server still runs, so that a request arriving
        now reaches a handler and is told to retry: a server that stops first cancels the
        calls it has read but not yet handed to a handler (CANCELLED, which a client takes
        for its own doing).
        """
        self._accepting = False
        self._draining = True
        grace = self.config.grace_s if grace_s is None else grace_s
        if self._active:
            log.info("draining %d in-flight request(s) (up to %.1f s)", self._active, grace)
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("%d request(s) still running after the %.1f s grace period", self._active, grace)

    async def stop(self, grace_s: Optional[float] = None) -> None:
        """Refuse new requests, let accepted ones finish within ``grace_s``, then stop the workers."""
        if self._stopped:
            return
        self._stopped = True
        await self.drain(grace_s)
        self.scheduler.close()
        for task in list(self._device_tasks):
            task.cancel()
        self.metrics.close()
        if self._pool_started:
            await self._blocking(self.pool.stop)
        if self._cpu is not None:
            self._cpu.shutdown(wait=True)
        if self._learning is not None:
            self._learning.close()
        self._shared_memory.close()
        log.info("service stopped")

    async def reload(self, config: Config) -> Dict[str, Optional[str]]:
        """Apply a new configuration (SIGHUP): rescan the models folder; some keys need a restart."""
        needs_restart = [f.name for f in dataclasses.fields(Config)
                         if f.name not in RELOADABLE_KEYS and getattr(config, f.name) != getattr(self.config, f.name)]
        if needs_restart:
            log.warning("configuration changes that take effect after a restart: %s", ", ".join(needs_restart))
        self.config = self.config.replace(**{k: getattr(config, k) for k in RELOADABLE_KEYS})
        outcome = await self.registry.load_folder(self.config.models_dir)
        if self._learning is not None and self._learning.stale:
            self._background(self._learning.refresh_stale())
        return outcome

    @property
    def shared_memory(self) -> SharedMemoryRegistry:
        return self._shared_memory

    @property
    def ready(self) -> bool:
        """Accepting requests with at least one device in service."""
        return self._ready(self._devices_quietly())

    def _ready(self, devices: List[DeviceInfo]) -> bool:
        return self._accepting and any(d.in_service for d in devices)

    def healthy(self) -> bool:
        """Whether the systemd watchdog should be fed: started, not stopping, pool answering."""
        if not self._accepting:
            return False
        try:
            self.pool.devices()
        except Exception:
            return False
        return True

    # ---- queries ----

    def status(self) -> Dict[str, Any]:
        devices = self._devices_quietly()
        return {
            "ready": self._ready(devices),
            "devices": [d.to_dict() for d in devices],
            "models": [m.to_dict() for m in self.registry.states()],
            "in_flight": self._active,
            "queue_depth": self.scheduler.queue_depths(),
        }

    def devices(self) -> List[DeviceInfo]:
        return self._devices_quietly()

    def models(self) -> List[ModelState]:
        return self.registry.states()

    def model_info(self, name: str) -> ModelState:
        """Raises: NotFoundError: no such model."""
        return self.registry.state(name)

    def model_specs(self, name: str) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        """Input and output tensor specs of the served version (KServe metadata).

        Raises:
            NotFoundError: no such model.
        """
        mv = self.registry.current(name)
        return list(mv.session.inputs), list(mv.session.outputs)

    @property
    def mock_control(self) -> Optional["MockControl"]:
        """Fault injection into the mock devices (None unless running on --device mock)."""
        return getattr(self.pool, "fault_control", None)

    async def rescan_devices(self) -> None:
        """One device monitor pass now (and the restarts it starts), so a mock unplug or replug shows
        in the reply.

        Without it the change is seen at the monitor's next rescan, after the reply went out.
        """
        settle = getattr(self.pool, "poll_and_settle", None)
        if settle is not None:
            await asyncio.get_running_loop().run_in_executor(None, settle)

    # ---- model management ----

    async def load_model(self, name: str, path: Union[str, Path, None] = None,
                         data: Optional[bytes] = None, labels: Optional[bytes] = None) -> ModelState:
        """Load (or replace, availability-preserving) a model from a path or uploaded bytes.

        With neither, the bundle ``models_dir/name`` is (re)loaded; a relative path is
        taken inside ``models_dir`` (clients send absolute paths for anything else).
        ``labels``, a labels file's bytes, replace the bundle's own.

        Raises:
            ModelNameError: bad name. ModelError: bad bundle. NotFoundError: the path does not exist.
            PreconditionError: the daemon is stopping.
        """
        self._check_accepting()
        check_name(name)  # before the name becomes a path: "../x" must not probe outside models_dir
        if path is None and data is None:
            path = self.config.models_dir / name
        if path is not None and not data:
            path = Path(path)
            if not path.is_absolute():  # relative paths name bundles in the models folder
                path = self.config.models_dir / path
            if not path.exists():
                raise NotFoundError(f"model path {path} does not exist")
        return await self.registry.load(name, path=None if data else path, data=data or None, labels=labels)

    async def unload_model(self, name: str) -> None:
        """Raises: NotFoundError: no such model."""
        await self.registry.unload(name)

    # ---- inference ----

    def sequence(self, model: str, sequence_id: SequenceId, start: bool) -> StateCarrier:
        """The state of a KServe sequence (Triton's implicit state); ``start`` begins it afresh.

        Raises:
            NotFoundError: no such model, or the sequence is not live (never started, ended, or idle
                longer than ``sequence_idle_s``). ResourceExhaustedError: ``sequence_limit`` sequences live.
            InvalidArgumentError: sequence id 0 or "".
        """
        self.registry.state(model)
        return self.sequences.carrier(model, sequence_id, start)

    def end_sequence(self, model: str, sequence_id: SequenceId) -> None:
        """Forget a sequence after its last request."""
        self.sequences.end(model, sequence_id)

    def state_inputs(self, name: str) -> List[str]:
        """The served version's recurrent state inputs (``[[state]]``), which a request may leave out.

        Raises:
            NotFoundError: no such model.
        """
        return [p.input for p in self.registry.current(name).bundle.state]

    async def infer(self, model: str, task: Optional[str], request: InferenceRequest,
                    deadline: Optional[float] = None, version: Union[int, str, None] = None,
                    wait_for_room: bool = False) -> InferenceResult:
        """Run one inference request end to end.

        ``deadline`` is an absolute ``time.monotonic()``; ``task`` is classify, detect,
        embed or raw (None: the model's own task). A full device queue refuses the
        request at once, or with ``wait_for_room`` (a stream's frames) makes it wait
        for room until its deadline.

        Raises:
            NotFoundError: unknown model or version. ImageError: bad image, frame, tensors or options.
            InvalidRequestError: the task does not fit the model. DeadlineExceededError, ResourceExhaustedError,
            DeviceUnavailableError, PreconditionError (stopping): from scheduling.
        """
        self._check_accepting()
        self._enter()
        try:
            mv = self.registry.acquire(model, parse_version(model, version))
            try:
                return await self._infer(mv, task, request, deadline, wait_for_room)
            finally:
                self.registry.release(mv)
        finally:
            self._leave()

    async def _infer(self, mv: ModelVersion, task: Optional[str], request: InferenceRequest,
                     deadline: Optional[float], wait_for_room: bool = False) -> InferenceResult:
        task = task or mv.default_task
        if task not in TASKS:
            raise InvalidRequestError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if task not in mv.tasks:
            raise InvalidRequestError(
                f"model {mv.name} serves {' and '.join(t for t in mv.tasks if t != 'raw')}, not {task} "
                "(raw tensors work for any model)"
            )
        pre, post = _split_options(task, request.options)
        t0 = time.monotonic()
        if deadline is not None and t0 >= deadline:
            raise DeadlineExceededError("the deadline had passed when the request arrived; it was not run")
        carrier = request.state if mv.bundle.state else None
        if carrier is None:
            inputs, context = await self._prepare(mv, task, request, pre, None)
            t1 = time.monotonic()
            result = await self.scheduler.run(mv.key, inputs, deadline, wait_for_room)
        else:
            # one frame at a time, in order: each needs the state the previous one left
            async with carrier.lock:
                if request.reset_state:
                    carrier.reset()
                carried = carrier.values_for(mv.key)
                if carried is None:
                    carried = initial_state(mv.bundle.state)
                inputs, context = await self._prepare(mv, task, request, pre, carried)
                t1 = time.monotonic()
                result = await self.scheduler.run(mv.key, inputs, deadline, wait_for_room)
                carrier.commit(mv.key, next_state(mv.bundle.state, result.outputs))
        self.metrics.observe_invocation(result.device, result.invoke_s)
        t2 = time.monotonic()
        if task in INLINE_POSTPROCESS:
            payload = _postprocess(mv, task, result.outputs, context, post)
        else:
            payload = await self._blocking(_postprocess, mv, task, result.outputs, context, post)
        t3 = time.monotonic()
        timing = {"queue_s": result.queue_s, "preprocess_s": t1 - t0, "invoke_s": result.invoke_s,
                  "postprocess_s": t3 - t2, "transfer_s": max(0.0, result.round_trip_s - result.invoke_s),
                  "total_s": t3 - t0}
        return InferenceResult(model=mv.name, version=mv.version, device=result.device, timing=timing,
                               payload=payload)

    # ---- helpers ----

    async def _prepare(self, mv: ModelVersion, task: str, request: InferenceRequest, pre: Dict[str, Any],
                       state: Optional[List[np.ndarray]]) -> Any:
        """Preprocess on the loop or on the CPU pool (see ``_preprocess_inline``)."""
        if self._preprocess_inline(mv, task, request):
            return _preprocess(mv, task, request, pre, state)
        return await self._blocking(_preprocess, mv, task, request, pre, state)

    def _check_accepting(self) -> None:
        if self._draining:
            raise ShuttingDownError("the daemon is shutting down; retry in a moment or on another daemon")
        if not self._accepting:
            raise PreconditionError("the daemon is not serving yet (starting)")

    def _preprocess_inline(self, mv: ModelVersion, task: str, request: InferenceRequest) -> bool:
        """Whether preprocessing costs less on the loop than a trip through the CPU pool (see the constants)."""
        image = request.image
        if task == "raw" or image is None or (image.data is None) == (image.frame is None):
            return True  # tensors are only checked; a malformed request fails at once
        if image.frame is not None:
            try:
                height, width = input_size(mv.bundle.inputs[0])
            except Exception:  # noqa: BLE001 - not an image input: preprocessing reports it
                return True
            return height * width <= INLINE_FRAME_MAX_PIXELS
        return self._active == 1 and len(image.data) <= INLINE_ENCODED_MAX_BYTES

    def _enter(self) -> None:
        self._active += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        """Run CPU-heavy or blocking work (pre/postprocessing, file reads, pool calls) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._cpu, functools.partial(fn, *args))

    async def _place(self, device: str, key: str) -> None:
        await self.registry.place(device, key)

    def _devices_quietly(self) -> List[DeviceInfo]:
        try:
            return list(self.pool.devices())
        except Exception as exc:
            log.warning("cannot read devices: %s", exc)
            return []

    def _on_device_change(self, info: DeviceInfo, event: str) -> None:
        """Pool callback (on a HAL thread): hand over to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._device_changed, info, event)
        except RuntimeError:
            pass

    def _device_changed(self, info: DeviceInfo, event: str) -> None:
        log.info("device %s %s (state %s)", info.id, event, info.state)
        usable = {d.id for d in self._devices_quietly() if d.in_service}
        if event in ("lost", "failed"):
            usable.discard(info.id)
            self.scheduler.device_lost(info.id, permanent=(event == "lost"))
        self.scheduler.set_devices(usable)
        if event == "added" and info.id in usable and self._accepting:
            task = asyncio.ensure_future(self.registry.place_all(info.id))
            self._device_tasks.add(task)
            task.add_done_callback(self._device_tasks.discard)


def parse_version(model: str, version: Union[int, str, None]) -> Optional[int]:
    """The version a request names, or None for the current one (``None`` or ``""``).

    Versions are whole numbers from 1, in ASCII digits ("01" is 1). Python's ``int`` would
    also take " 1", "1_0" and other scripts' digits, which name no version here.

    Raises:
        NotFoundError: ``version`` is not such a number, or is 0.
    """
    if version is None or version == "":
        return None
    if isinstance(version, int) and not isinstance(version, bool):
        number = version
    elif isinstance(version, str) and version.isascii() and version.isdigit():
        number = int(version)
    else:
        raise NotFoundError(f"model {model} has no version {version!r} (versions are numbers)")
    if number < 1:
        raise NotFoundError(f"model {model} has no version {number} (versions start at 1)")
    return number


def _split_options(task: str, options: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Preprocess and postprocess options; unset ones (None, False, 0) meant for another task are ignored.

    Raises:
        InvalidRequestError: an option no task knows, or one set for a task that does not take it.
    """
    pre: Dict[str, Any] = {}
    post: Dict[str, Any] = {}
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key in PREPROCESS_OPTIONS:
            pre[key] = value
        elif key in DEFAULTS[task]:
            post[key] = value
        elif any(key in opts for opts in DEFAULTS.values()):
            if value:
                raise InvalidRequestError(f"option {key!r} does not apply to task {task}")
        else:
            raise InvalidRequestError(f"unknown option {key!r}")
    return pre, post


def _image_of(request: InferenceRequest) -> Any:
    image = request.image
    if image is None:
        raise InvalidRequestError("the request has no image")
    if (image.data is None) == (image.frame is None):
        raise InvalidRequestError("an image is either encoded bytes or a raw frame")
    if image.frame is not None:
        f = image.frame
        return frame_to_rgb(f.data, f.width, f.height, f.stride or None, f.pixel_format or "RGB")
    if not image.data:
        raise ImageError("the image is empty")
    return image.data


def _request_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The documented errors pass; any other ValueError from the model layer becomes an InvalidRequestError."""
    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except (ImageError, ModelError, InvalidArgumentError):
            raise
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
    return wrapped


@_request_errors
def _preprocess(mv: ModelVersion, task: str, request: InferenceRequest, options: Dict[str, Any],
                state: Optional[List[np.ndarray]] = None) -> Any:
    """Image or tensors -> input tensors (on the loop or the CPU pool).

    A recurrent model's state inputs get ``state``, the values a stream or sequence carries;
    without one (a unary call) they start from their initial values, or raw tensors may send them.
    """
    if mv.bundle.state:
        options = {**options, "state": state}
    if task == "raw":
        if request.tensors is None:
            raise InvalidRequestError("task raw needs input tensors")
        return mv.session.preprocess(request.tensors, "raw", **options)
    if request.image is not None and request.image.crop is not None:
        options = {**options, "roi": tuple(int(v) for v in request.image.crop)}
    return mv.session.preprocess(_image_of(request), task, **options)


@_request_errors
def _postprocess(mv: ModelVersion, task: str, outputs: List[np.ndarray], context: Any, options: Dict[str, Any]) -> Any:
    """Output tensors -> the task's answer (on the loop or the CPU pool)."""
    return mv.session.postprocess(task, outputs, context, **options)
