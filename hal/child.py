"""The device worker's side: the child process that owns one device and runs its invocations.

Why a process: libedgetpu aborts the whole process on a USB transfer error and a
PCIe TPU may be opened by one process only, so the daemon keeps each device in a
child it can lose. The child asks the backend named in its ``WorkerConfig`` to
open the device, then serves the wire protocol (``wire.py``) until told to stop
or its pipe closes.
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import time
from multiprocessing import shared_memory
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .backend import WorkerConfig
from .backends import backend_class
from .errors import HalError
from .runtime import find_runtime
from .wire import INVOKE, OP_INVOKE, R_ERR, R_OK, REPLY, Slots, ctrl_reply, error_info


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
        self.executors = backend_class(config.backend).open_executors(config)
        self.models: Dict[int, _ChildModel] = {}

    def control(self, verb: str, args: tuple) -> Any:
        if verb == "load":
            model_id, model_path, cpu_twin_path = args
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
    logging.basicConfig(level=config.log_level, format=f"%(asctime)s worker[{config.device_id}] %(levelname)s %(name)s: %(message)s")
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
