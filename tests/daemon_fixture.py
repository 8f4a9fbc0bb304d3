"""Shared fixtures for the API tests.

Two ways to stand up the gRPC layer:

- ``InProcessServer`` runs ``build_server`` on a ``FakeService`` in a background
  event loop: fast, deterministic, lets a test decide what the service does.
- ``RealDaemon`` starts the real ``edgetpud`` process with ``--device mock`` on a
  temporary unix socket and the Coral test models laid out as bundles.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pytest

from bundles import make_bundle
from edgetpud.daemon.errors import ImageError, NotFoundError, PreconditionError
from edgetpud.daemon.learning import Learning
from edgetpud.daemon.metrics import Metrics
from edgetpud.daemon.registry import ModelState
from edgetpud.daemon.results import Class, DetectedObject
from edgetpud.daemon.sequences import SequenceId, Sequences, StateCarrier
from edgetpud.daemon.service import InferenceRequest, InferenceResult
from edgetpud.daemon.shm import SharedMemoryRegistry
from edgetpud.hal.device import DeviceInfo
from edgetpud.hal.executor import TensorSpec

ROOT = Path(__file__).resolve().parent.parent
#: Set to a command (e.g. "edgetpud") to test an installed daemon instead of ``python -m edgetpud.daemon.main``.
DAEMON_COMMAND_ENV = "EDGETPUD_TEST_DAEMON"

# ----------------------------------------------------------------- fake service


def model_state(name: str, task: str = "classify", path: str = "", inputs: Sequence[TensorSpec] = (),
                outputs: Sequence[TensorSpec] = (), report: Optional[dict] = None) -> ModelState:
    """A served model as the registry would describe it: version 1, ready on mock:0, Edge TPU compiled."""
    return ModelState(name=name, version=1, task=task, state="ready", path=path, devices=["mock:0"],
                      inputs=list(inputs), outputs=list(outputs), label_count=0, edgetpu_compiled=True,
                      report=report, problems=[])


RAW_IN = TensorSpec("input", 0, (1, 4), np.dtype(np.uint8), 0.5, 3)
RAW_OUT = TensorSpec("output", 1, (1, 4), np.dtype(np.float32))
REPORT = {"verdict": "full", "operators": [{"index": 0, "op": "edgetpu-custom-op", "target": "tpu", "reason": None}],
          "summary": {"tpu_ops": 1, "cpu_ops": 0}}


class FakeMockControl:
    """Records what the MockControl servicer asked of the mock devices; knows one device, mock:0."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def inject(self, device_id: str, fault: str, count: int = 1, **params: object) -> None:
        if fault not in ("abort", "hang", "error", "timeout"):
            raise ValueError(f"unknown fault {fault!r}")
        if device_id != "mock:0":
            raise KeyError(f"no mock device {device_id!r}")
        self.calls.append(("inject", device_id, fault, count, params))

    def clear_faults(self, device_id: str) -> None:
        self.calls.append(("clear_faults", device_id))

    def unplug(self, device_id: str) -> None:
        self.calls.append(("unplug", device_id))

    def replug(self, device_id: str) -> None:
        self.calls.append(("replug", device_id))

    def set_temperature(self, device_id: str, temperature_c: float) -> None:
        self.calls.append(("set_temperature", device_id, temperature_c))

    def set_latency(self, device_id: str, latency_s: Optional[float]) -> None:
        self.calls.append(("set_latency", device_id, latency_s))


class FakeService:
    """Meets the API layer's façade (``daemon.api.facade.ServiceFacade``) with the real result
    types; a test steers it through its attributes. It has no retraining (``learning`` refuses).

    ``fail``: raise this from infer. ``gate``: an asyncio.Event infer waits on (open it
    with ``open_gate``). An encoded image ``b"delay:S"`` makes infer sleep S seconds and
    ``b"bad"`` raises ImageError.
    """

    metrics: Metrics
    mock_control: Optional[FakeMockControl]
    shared_memory: SharedMemoryRegistry

    def __init__(self) -> None:
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.requests: List[tuple] = []
        self.waited_for_room: List[bool] = []  # per infer call: whether it may wait for queue room
        self.fail: Optional[BaseException] = None
        self.gate: Optional[asyncio.Event] = None
        self.started = 0
        self.cancelled = 0
        self.device_list = [DeviceInfo(id="mock:0", kind="mock", index=0, state="ready", temperature_c=41.5,
                                       throttle_level=0, models=["cls"])]
        self.mock_control = FakeMockControl()
        self.metrics = Metrics(devices=self.devices)
        self.model_states = {
            "cls": model_state("cls", inputs=[TensorSpec("in", 0, (1, 8, 8, 3), np.dtype(np.uint8))],
                               report=REPORT),
            "raw": model_state("raw", task="raw", inputs=[RAW_IN], outputs=[RAW_OUT]),
        }
        self.loads: List[tuple] = []
        self.load_labels: List[Optional[bytes]] = []  # the labels each load was given
        self.unloads: List[str] = []
        self.rescans = 0
        self.shared_memory = SharedMemoryRegistry()
        self.sequences = Sequences(limit=4, idle_s=60.0)

    async def rescan_devices(self) -> None:
        self.rescans += 1

    # a test thread steers the server loop through these
    def close_gate(self) -> None:
        async def make() -> None:
            self.gate = asyncio.Event()
        asyncio.run_coroutine_threadsafe(make(), self.loop).result(5)

    def open_gate(self) -> None:
        gate = self.gate
        if gate is not None:
            self.loop.call_soon_threadsafe(gate.set)

    @property
    def learning(self) -> Learning:
        """Raises: PreconditionError: always (as the real service does before it starts)."""
        raise PreconditionError("the fake service has no retraining")

    def sequence(self, model: str, sequence_id: SequenceId, start: bool) -> StateCarrier:
        """Real sequence bookkeeping (limit 4, idle 60 s) for known models."""
        self.model_info(model)
        return self.sequences.carrier(model, sequence_id, start)

    def end_sequence(self, model: str, sequence_id: SequenceId) -> None:
        self.sequences.end(model, sequence_id)

    def state_inputs(self, name: str) -> List[str]:
        self.model_info(name)
        return []

    async def infer(self, model: str, task: Optional[str], request: InferenceRequest,
                    deadline: Optional[float] = None, version: Union[int, str, None] = None,
                    wait_for_room: bool = False) -> InferenceResult:
        self.requests.append((model, task, request, deadline, version))
        self.waited_for_room.append(wait_for_room)
        if self.fail is not None:
            raise self.fail
        if model not in self.model_states:
            raise NotFoundError(f"model '{model}' is not loaded; loaded models: {sorted(self.model_states)}")
        image = request.image
        if image is not None and image.data is not None:
            data = bytes(image.data)  # the daemon hands over a view into the request
            if data == b"bad":
                raise ImageError("cannot decode the image: not a JPEG, PNG or BMP file")
            if data.startswith(b"delay:"):
                await asyncio.sleep(float(data[6:]))
        self.started += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        timing = {"queue_s": 0.001, "preprocess_s": 0.002, "invoke_s": 0.003, "postprocess_s": 0.004}
        if task == "classify":
            payload = [Class(283, "tiger cat", 0.5), Class(7, None, 0.25)]
        elif task == "detect":
            payload = [DetectedObject(1, "person", 0.9, (1.0, 2.0, 30.0, 40.0))]
        elif task == "embed":
            payload = np.arange(4, dtype=np.float32)
        else:
            tensors = request.tensors or {}
            payload = {"output": np.asarray(next(iter(tensors.values()))).astype(np.float32) * 2}
        return InferenceResult(model, 1, "mock:0", timing, payload)

    @property
    def ready(self) -> bool:
        return any(d.state in ("ready", "busy", "throttled") for d in self.device_list)

    def devices(self) -> List[DeviceInfo]:
        return list(self.device_list)

    def models(self) -> List[ModelState]:
        return list(self.model_states.values())

    def model_info(self, name: str) -> ModelState:
        if name not in self.model_states:
            raise NotFoundError(f"model '{name}' is not loaded")
        return self.model_states[name]

    def model_specs(self, name: str) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        state = self.model_info(name)
        return state.inputs, state.outputs

    async def load_model(self, name: str, path: Union[str, Path, None] = None,
                         data: Optional[bytes] = None, labels: Optional[bytes] = None) -> ModelState:
        self.loads.append((name, path, data))
        self.load_labels.append(labels)
        self.model_states[name] = model_state(name, path=str(path or ""))
        return self.model_states[name]

    async def unload_model(self, name: str) -> None:
        self.model_info(name)
        self.unloads.append(name)
        del self.model_states[name]


class InProcessServer:
    """``build_server(service, config)`` served from a daemon thread's event loop."""

    def __init__(self, service: Any, config: Any) -> None:
        self.service = service
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-test-loop", daemon=True)
        self.server: Any = None

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "InProcessServer":
        from edgetpud.daemon.api.server import build_server

        self.thread.start()
        self.service.loop = self.loop

        async def start() -> None:
            self.server = build_server(self.service, self.config)
            await self.server.start()
        self.run(start())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds (a hang guard, not a timing check)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------- the real daemon

#: Bundles the end-to-end tests serve: name -> (CPU twin, compiled twin, labels, task).
BUNDLES = {
    "mobilenet_v1_0.25_128_quant": ("mobilenet_v1_0.25_128_quant.tflite",
                                    "mobilenet_v1_0.25_128_quant_edgetpu.tflite", "imagenet_labels.txt", None),
    "mobilenet_v1_0.5_160_quant": ("mobilenet_v1_0.5_160_quant.tflite",
                                   "mobilenet_v1_0.5_160_quant_edgetpu.tflite", "imagenet_labels.txt", None),
    "embedding_extractor": ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                            "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite", None, "embed"),
}


def lay_out_bundles(test_data: Path, models_dir: Path, names: Optional[List[str]] = None) -> Path:
    """Copy Coral test models into ``models_dir`` as bundle folders."""
    for name in names or list(BUNDLES):
        cpu, _, labels, task = BUNDLES[name]
        make_bundle(models_dir, test_data, name, cpu[:-len(".tflite")], compiled=True, labels=labels,
                    toml=f'task = "{task}"\n' if task else None)
    return models_dir


def ctl(*args: str, address: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run edgetpuctl as a user would (a separate process)."""
    return subprocess.run([sys.executable, "-m", "edgetpud.daemon.cli.main", "--address", address, *args],
                          capture_output=True, text=True, timeout=timeout)


class RealDaemon:
    """``python -m edgetpud.daemon.main`` with ``--device mock`` on a temporary unix socket."""

    def __init__(self, workdir: Path, test_data: Path, devices: str = "mock:1",
                 mock_latency_s: Optional[float] = None, extra_listen: Optional[str] = None,
                 bundles: Optional[List[str]] = None, config_lines: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.socket = workdir / "edgetpud.sock"
        self.address = f"unix:{self.socket}"
        self.models_dir = lay_out_bundles(test_data, workdir / "models", bundles)
        listen = [self.address] + ([extra_listen] if extra_listen else [])
        lines = [
            f"devices = [{devices!r}]".replace("'", '"'),
            f'models_dir = "{self.models_dir}"',
            f'state_dir = "{workdir / "state"}"',
            "listen = [" + ", ".join(f'"{a}"' for a in listen) + "]",
            "grace_s = 5.0",
            'log_level = "info"',
        ]
        if mock_latency_s is not None:
            lines.append(f"mock_latency_s = {mock_latency_s}")
        lines.extend(config_lines)  # more edgetpud.toml keys, as written there
        self.config = workdir / "edgetpud.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = workdir / "edgetpud.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 90.0) -> "RealDaemon":
        """Start and wait until its health service says SERVING.

        Raises:
            RuntimeError: the daemon exited or was not ready in time (with its log).
        """
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = os.environ.get(DAEMON_COMMAND_ENV, "").split() or [sys.executable, "-m", "edgetpud.daemon.main"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([*command, "--config", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"edgetpud exited with {self.process.returncode}:\n{self.log_text()}")
            if self.socket.exists() and self.serving():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"edgetpud not ready after {timeout} s:\n{self.log_text()}")

    def serving(self) -> bool:
        """Whether grpc.health.v1 says SERVING (what a load balancer or systemd check would ask)."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit; returns its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def real_daemon_fixture(name: str, bundles: List[str]) -> Callable[..., Iterator[RealDaemon]]:
    """A module-scoped ``daemon`` fixture serving ``bundles``.

    Start-up takes seconds, so each test module shares one daemon; ``name`` names its
    temporary folder so a failing module's log is easy to find.
    """
    @pytest.fixture(scope="module", name="daemon")
    def daemon(tmp_path_factory: Any, test_data: Path) -> Iterator[RealDaemon]:
        d = RealDaemon(tmp_path_factory.mktemp(name), test_data, bundles=bundles).start()
        yield d
        d.stop()
    return daemon


# ----------------------------------------------------------------- a fake systemd


class NotifyListener:
    """A fake systemd notify socket: collects the daemon's sd_notify datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: List[str] = []

    def wait_for(self, line: str, timeout: float, proc: Optional[subprocess.Popen] = None) -> List[str]:
        """The messages once one collected (since the last ``messages.clear()``) has ``line``.

        Fails on timeout, or when ``proc`` exits first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line in message.split("\n") for message in self.messages):
                return list(self.messages)
            self.sock.settimeout(0.2)
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except socket.timeout:
                if proc is not None and proc.poll() is not None:
                    pytest.fail(f"edgetpud exited with {proc.returncode} before {line}: {process_log(proc)[-3000:]}")
        pytest.fail(f"no {line} within {timeout} s; got {self.messages}")

    def drain(self) -> List[str]:
        """Everything collected, after reading what is already waiting on the socket."""
        self.sock.settimeout(0.0)
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except (BlockingIOError, socket.timeout):
                return list(self.messages)

    def close(self) -> None:
        self.sock.close()


def process_log(proc: subprocess.Popen) -> str:
    """What a daemon started with its output sent to ``proc.log_path`` wrote so far."""
    path = getattr(proc, "log_path", None)
    return Path(path).read_text(errors="replace") if path else ""
