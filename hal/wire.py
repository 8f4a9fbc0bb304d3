"""The wire between the main process and a device worker: messages, and the shared-memory slots.

Why this transport: a 224x224x3 input must cross in well under 100 µs, so arrays
are never pickled. Each loaded model gets ``slots`` shared-memory blocks (inputs
then outputs, 64-byte aligned) created by the main process; a request is "copy
inputs into a free slot, send 9 bytes", a reply is "13 bytes, copy outputs out".
The blocks are unlinked as soon as the worker has mapped them, so whatever kills
the daemon leaves nothing in /dev/shm. Both ends import this module, so the
format is written down once.

Wire format (``Connection.send_bytes``; first byte is the opcode):
    main -> worker  OP_INVOKE  struct <BIHH (op, request id, model id, slot)
                    OP_CTRL    op + pickle((request id, verb, *args))
    worker -> main  R_OK       struct <BIQ  (op, request id, ns spent in invoke)
                    R_ERR      struct <BIQ + pickle((error class name, message))
                    R_CTRL     op + pickle((request id, result))
"""
from __future__ import annotations

import pickle
import struct
from multiprocessing import shared_memory
from typing import Any, List, Sequence, Tuple

import numpy as np

from . import errors as hal_errors
from .errors import HalError
from .executor import TensorSpec

OP_INVOKE, OP_CTRL = 1, 2
R_OK, R_CTRL, R_ERR = 1, 2, 3
INVOKE = struct.Struct("<BIHH")
REPLY = struct.Struct("<BIQ")
ALIGN = 64


def slot_layout(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> Tuple[List[int], List[int], int]:
    """Byte offsets of each input and output inside one slot, and the slot size."""
    offset = 0
    offsets = []
    for spec in list(inputs) + list(outputs):
        offsets.append(offset)
        offset += (spec.nbytes + ALIGN - 1) // ALIGN * ALIGN
    return offsets[:len(inputs)], offsets[len(inputs):], max(offset, ALIGN)


def views(buf: Any, specs: Sequence[TensorSpec], offsets: Sequence[int]) -> List[np.ndarray]:
    """Arrays over one slot's bytes: no copy, so a request writes its inputs straight into shared memory."""
    return [np.ndarray(s.shape, dtype=s.dtype, buffer=buf, offset=o) for s, o in zip(specs, offsets)]


def error_info(exc: BaseException) -> Tuple[str, str]:
    """(HAL error class name, message): what crosses the pipe for an exception."""
    if isinstance(exc, HalError):
        return type(exc).__name__, str(exc)
    return "ModelRuntimeError", f"{type(exc).__name__}: {exc}"


def ctrl_reply(req_id: int, result: Any) -> bytes:
    return bytes([R_CTRL]) + pickle.dumps((req_id, result))


def rebuild_error(name: str, message: str) -> HalError:
    """Turn a worker's (class name, message) back into the HAL exception."""
    cls = getattr(hal_errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, HalError)):
        cls = HalError
    return cls(message)


class Slots:
    """One model's shared-memory blocks and the array views into them; both processes keep one."""

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.inputs: List[TensorSpec] = list(inputs)
        self.outputs: List[TensorSpec] = list(outputs)
        self.in_offsets, self.out_offsets, self.size = slot_layout(self.inputs, self.outputs)
        self.shms: List[shared_memory.SharedMemory] = []
        self.in_views: List[List[np.ndarray]] = []
        self.out_views: List[List[np.ndarray]] = []
        self.named = False  # the blocks still have names in /dev/shm (see unlink_names)

    def add(self, shm: shared_memory.SharedMemory) -> None:
        """Map one more slot: ``in_views[i]`` and ``out_views[i]`` view ``shms[i]``."""
        self.shms.append(shm)
        self.named = True
        self.in_views.append(views(shm.buf, self.inputs, self.in_offsets))
        self.out_views.append(views(shm.buf, self.outputs, self.out_offsets))

    def unlink_names(self) -> None:
        """Remove the blocks' names; the memory stays mapped in every process that attached it.

        The owner does this as soon as the worker has attached: the kernel then frees
        the memory when the last process unmaps it, even if every process of the
        daemon is killed at once (``systemctl kill -s KILL``, a cgroup OOM kill),
        which would otherwise leave the blocks in /dev/shm, in RAM, until reboot.
        """
        if self.named:
            self.named = False
            for shm in self.shms:
                try:
                    shm.unlink()
                except FileNotFoundError:  # pragma: no cover - someone else removed it
                    pass

    def close_slots(self, unlink: bool) -> None:
        """Drop the views and close every block; ``unlink`` (the owner, the main process) also removes it."""
        self.in_views.clear()
        self.out_views.clear()
        if unlink:
            self.unlink_names()  # first: the names must go even if a view keeps the mapping alive
        for shm in self.shms:
            try:
                shm.close()
            except BufferError:  # pragma: no cover - a caller still holds a view; GC unmaps it
                pass
        self.shms.clear()
