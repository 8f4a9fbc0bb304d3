"""The device worker's side: the child process that owns one device and runs its invocations.

Why a process: libedgetpu aborts the whole process on a USB transfer error and a
PCIe TPU may be opened by one process only, so the daemon keeps each device in a
child it can lose. The child asks the backend named in its ``WorkerConfig`` to
open the device, then serves the wire protocol (``wire.py``) until told to stop
or its pipe closes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing import shared_memory
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .backend import WorkerConfig
from .backends import backend_class
from .errors import HalError
from .runtime import find_runtime
from .wire import INVOKE, OP_INVOKE, R_ERR, R_OK, REPLY, Slots, ctrl_reply, error_info


#: The TFLite C++ runtime (and libedgetpu) print on fd 2 with no time or device:
#: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." at each model load, interleaved
#: mid-line when two workers start at once. Caught while a device or model opens, their lines go
#: through this logger instead: "INFO:" ones at debug level, the rest at their own level.
runtime_log = logging.getLogger("edgetpud.hal.runtime")
_RUNTIME_LEVELS = {"INFO": logging.DEBUG, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


@contextlib.contextmanager
def _runtime_output_logged() -> Iterator[None]:
    """Route what native code writes on fd 2 during the block through ``runtime_log``.

    Only around opening a device or a model, where the runtime announces itself: an
    invocation that aborts the process (libedgetpu on a USB error) still prints its last
    words straight to the daemon's stderr. A thread drains the pipe, so the block
    cannot stall on a full pipe however much is printed.
    """
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    saved = os.dup(2)
    chunks: List[bytes] = []

    def drain() -> None:
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, name="runtime-stderr", daemon=True)
    reader.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees its end
        os.close(saved)
        reader.join(5.0)
        os.close(read_fd)
        for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
            level_name, _, text = line.partition(": ")
            if level_name in _RUNTIME_LEVELS:
                runtime_log.log(_RUNTIME_LEVELS[level_name], "%s", text)
            elif line.strip():
                runtime_log.warning("%s", line)


class _ChildModel(Slots):
    """One loaded model in the worker: its executor and the slots the main process created."""

    def __init__(self, executor: Any) -> None:
        super().__init__(executor.inputs, executor.outputs)
        self.executor = executor

    def attach(self, names: Sequence[str]) -> None:
        for name in names:
            # The main process owns and unlinks every block. Python >= 3.13 can skip
            # tracking here; before that the worker shares the parent's resource
            # tracker (spawn passes it on), where a second register is a no-op.
            try:
                shm = shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
            except TypeError:
                shm = shared_memory.SharedMemory(name=name)
            self.add(shm)

    def close(self) -> None:
        self.close_slots(unlink=False)
        self.executor.close()


class _ChildDevice:
    """The device as the worker owns it: what its backend holds open, and the executors."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        with _runtime_output_logged():
            self.executors = backend_class(config.backend).open_executors(config)
        self.models: Dict[int, _ChildModel] = {}

    def control(self, verb: str, args: tuple) -> Any:
        if verb == "load":
            model_id, model_path, cpu_twin_path = args
            with _runtime_output_logged():
                executor = self.executors.open(model_path, cpu_twin_path)
            self.models[model_id] = _ChildModel(executor)
            return executor.inputs, executor.outputs
        if verb == "attach":
            model_id, names = args
            self.models[model_id].attach(names)
            return True
        if verb == "unload":
            (model_id,) = args
            model = self.models.pop(model_id, None)
            if model is not None:
                model.close()
            return True
        if verb == "ping":
            return os.getpid()
        raise HalError(f"unknown worker command {verb!r}")

    def invoke(self, model_id: int, slot: int) -> None:
        model = self.models[model_id]
        outputs = model.executor.invoke(model.in_views[slot])
        for view, array in zip(model.out_views[slot], outputs):
            np.copyto(view, array, casting="no")

    def close(self) -> None:
        for model in self.models.values():
            model.close()
        self.models.clear()
        self.executors.close()


def worker_main(conn: Any, config: Optional[WorkerConfig]) -> None:
    """Entry point of the child process (``spawn``): serve until told to stop or the pipe closes.

    Without a config this is a spare: it imports the runtime now, then waits for
    the config of the device it is to serve (see ``SpareWorker``).
    """
    # The main process owns a worker's life: it drains requests, then sends "stop". A signal sent
    # to the whole process group (Ctrl-C, a closed terminal, `timeout`, a supervisor stopping the
    # group) is the main process's to handle, not a reason to drop requests it is still draining.
    # A worker whose main process died sees its pipe close and exits; SIGKILL still ends it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if config is None:
        try:
            find_runtime()
        except HalError:
            pass  # the real start reports it
        try:
            config = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        assert isinstance(config, WorkerConfig)
    # The log writes to its own copy of stderr, so that it is never caught with the runtime's output.
    log_stream = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
    logging.basicConfig(level=config.log_level, stream=log_stream,
                        format=f"%(asctime)s worker[{config.device_id}] %(levelname)s %(name)s: %(message)s")
    try:
        device = _ChildDevice(config)
    except BaseException as exc:  # report why the device cannot be opened, then exit
        conn.send_bytes(ctrl_reply(0, ("error",) + error_info(exc)))
        conn.close()
        return
    conn.send_bytes(ctrl_reply(0, ("ready", os.getpid())))
    recv, send = conn.recv_bytes, conn.send_bytes
    unpack, pack = INVOKE.unpack, REPLY.pack
    perf_ns = time.perf_counter_ns
    try:
        while True:
            try:
                msg = recv()
            except (EOFError, OSError):
                break
            if msg[0] == OP_INVOKE:
                _, req_id, model_id, slot = unpack(msg)
                start = perf_ns()
                try:
                    device.invoke(model_id, slot)
                    send(pack(R_OK, req_id, perf_ns() - start))
                except Exception as exc:
                    send(pack(R_ERR, req_id, perf_ns() - start) + pickle.dumps(error_info(exc)))
                continue
            req_id, verb, *args = pickle.loads(msg[1:])
            if verb == "stop":
                send(ctrl_reply(req_id, True))
                break
            try:
                result = device.control(verb, tuple(args))
                send(ctrl_reply(req_id, result))
            except Exception as exc:
                send(pack(R_ERR, req_id, 0) + pickle.dumps(error_info(exc)))
    finally:
        device.close()
        conn.close()
