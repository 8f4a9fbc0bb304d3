"""The shared-memory parameters of ModelInfer tensors (Triton's system shared-memory extension).

An input or requested output may carry ``shared_memory_region`` (string), ``shared_memory_byte_size``
and ``shared_memory_offset`` (int64); the bytes are then read from, or written to, that registered
region instead of travelling in ``raw_input_contents`` / ``raw_output_contents``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import grpc

from edgetpud.daemon.shm import Caller, SharedMemoryRegistry

from .peer import caller_of
from .status import RequestError

REGION, BYTE_SIZE, OFFSET = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"
PARAMETERS = (REGION, BYTE_SIZE, OFFSET)


@dataclass(frozen=True)
class Target:
    """Where one tensor's bytes are: ``byte_size`` bytes at ``offset`` in region ``region``."""

    region: str
    offset: int
    byte_size: int


def _int(kind: str, tensor: Any, key: str, default: Optional[int]) -> int:
    if key not in tensor.parameters:
        if default is None:
            raise RequestError(f"{kind} '{tensor.name}' names a shared memory region but no {key}: send the "
                               "tensor's size in bytes as an int64_param")
        return default
    value = tensor.parameters[key]
    which = value.WhichOneof("parameter_choice")
    if which not in ("int64_param", "uint64_param"):
        raise RequestError(f"{kind} '{tensor.name}': {key} must be an int64_param, got {which or 'nothing'}")
    number = int(getattr(value, which))
    if number < 0:
        raise RequestError(f"{kind} '{tensor.name}': {key} must be >= 0, got {number}")
    return number


def target_of(kind: str, tensor: Any) -> Optional[Target]:
    """The tensor's shared-memory target, or None when it names none.

    Raises:
        RequestError: offset or size without a region, a region that is not a string, a missing,
            negative or mistyped size or offset.
    """
    params = tensor.parameters
    if REGION not in params:
        stray = [key for key in (BYTE_SIZE, OFFSET) if key in params]
        if stray:
            raise RequestError(f"{kind} '{tensor.name}' sets {stray[0]} without {REGION}: name the region too")
        return None
    region = params[REGION]
    if region.WhichOneof("parameter_choice") != "string_param" or not region.string_param:
        raise RequestError(f"{kind} '{tensor.name}': {REGION} must be a string_param naming a registered region")
    return Target(region.string_param, _int(kind, tensor, OFFSET, 0), _int(kind, tensor, BYTE_SIZE, None))


class SharedTensors:
    """One request's access to the registry: the caller is looked up once, and only if needed."""

    def __init__(self, registry: SharedMemoryRegistry, context: grpc.aio.ServicerContext) -> None:
        self._registry = registry
        self._peer: Callable[[], str] = context.peer
        self._caller: Optional[Caller] = None

    @property
    def caller(self) -> Caller:
        if self._caller is None:
            self._caller = caller_of(self._peer())
        return self._caller

    def read(self, target: Target, label: str) -> Any:
        """The target's bytes (a private uint8 array). Raises: see ``Region.read``."""
        region = self._registry.region(target.region)
        return region.read(target.offset, target.byte_size, self.caller, label)

    def read_span(self, region: str, offset: int, byte_size: int, label: str) -> Any:
        """``read`` for a native frame's span (convert.SharedReader)."""
        return self.read(Target(region, offset, byte_size), label)

    def check_output(self, target: Target, needed: int, label: str) -> None:
        """Before running: the region exists, is writable and the target holds ``needed`` bytes.

        Raises:
            RequestError: the target is smaller than the output. NotFoundError: no such region.
        """
        region = self._registry.region(target.region)
        if target.byte_size < needed:
            raise RequestError(f"{label}: shared_memory_byte_size {target.byte_size} is too small, the output "
                               f"needs {needed} bytes")
        region.check(target.offset, target.byte_size, self.caller, label, write=True)

    def write(self, target: Target, data: memoryview, label: str) -> None:
        self._registry.region(target.region).write(target.offset, data, self.caller, label)


def span_reader(registry: Callable[[], SharedMemoryRegistry], context: grpc.aio.ServicerContext
                ) -> Callable[[str, int, int, str], Any]:
    """Reads native frames' shared spans for one call or stream (convert.SharedReader).

    The registry and the caller are looked up at the first shared frame only, so a call whose frames
    travel in the message pays nothing for it, and a stream looks its caller up once: its connection
    was among the ones connected then.
    """
    tensors: List[SharedTensors] = []

    def read(region: str, offset: int, byte_size: int, label: str) -> Any:
        if not tensors:
            tensors.append(SharedTensors(registry(), context))
        return tensors[0].read_span(region, offset, byte_size, label)
    return read
