"""Executors run a model's tensors on one device: the thing a worker owns.

An executor knows nothing of images or labels: it takes input arrays in the
model's own dtype and returns output arrays. ``TfliteExecutor`` serves both the
CPU and a real Edge TPU (with the delegate); a backend may bring its own (see
``Backend.open_executor``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from .errors import ModelRuntimeError
from .runtime import EDGETPU_CUSTOM_OP, find_runtime

log = logging.getLogger(__name__)

ModelSource = Union[str, Path, bytes]


@dataclass(frozen=True)
class TensorSpec:
    """What a caller needs to feed or read one tensor."""

    name: str
    index: int
    shape: Tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


class Executor(Protocol):
    """The interface every device backend implements for one loaded model."""

    @property
    def inputs(self) -> List[TensorSpec]: ...

    @property
    def outputs(self) -> List[TensorSpec]: ...

    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run the model once.

        Raises:
            ModelRuntimeError: an input does not match its tensor.
            DeviceIOError: the device failed during the invocation.
        """
        ...

    def close(self) -> None: ...


def _spec_from_details(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=str(detail["name"]),
        index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _explain_runtime_error(exc: Exception, origin: str) -> str:
    text = str(exc)
    if EDGETPU_CUSTOM_OP in text:
        return (
            f"{origin} is compiled for the Edge TPU ({EDGETPU_CUSTOM_OP}) and this device has no Edge TPU "
            "delegate: run its CPU twin (the same model without '_edgetpu') or attach an Edge TPU"
        )
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{origin} cannot be run by the TFLite runtime: {first_line}"


class TfliteExecutor:
    """One TFLite interpreter, with an optional delegate (the Edge TPU), for one model.

    Invocations are serialised: a TFLite interpreter is not re-entrant.
    """

    def __init__(
        self,
        model: ModelSource,
        delegates: Optional[Sequence[Any]] = None,
        num_threads: Optional[int] = None,
    ) -> None:
        """Create and allocate the interpreter.

        Raises:
            RuntimeMissingError: no TFLite runtime is installed.
            ModelRuntimeError: the runtime rejects the model (with a message saying what to do).
        """
        runtime = find_runtime()
        kwargs: dict = {"experimental_delegates": list(delegates or []) or None, "num_threads": num_threads}
        if isinstance(model, (bytes, bytearray, memoryview)):
            kwargs["model_content"] = bytes(model)
            origin = "the model"
        else:
            kwargs["model_path"] = str(model)
            origin = f"model {Path(model).name}"
        self._lock = threading.Lock()
        try:
            self._interpreter = runtime.interpreter_class(**kwargs)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelRuntimeError(_explain_runtime_error(exc, origin)) from exc
        self._inputs = [_spec_from_details(d) for d in self._interpreter.get_input_details()]
        self._outputs = [_spec_from_details(d) for d in self._interpreter.get_output_details()]

    @property
    def inputs(self) -> List[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> List[TensorSpec]:
        return list(self._outputs)

    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run the model once and return copies of its outputs.

        Raises:
            ModelRuntimeError: wrong number, shape or dtype of inputs, or the runtime failed.
        """
        check_inputs(self._inputs, inputs)
        with self._lock:
            try:
                for spec, array in zip(self._inputs, inputs):
                    self._interpreter.set_tensor(spec.index, array)
                self._interpreter.invoke()
            except (RuntimeError, ValueError) as exc:
                raise ModelRuntimeError(_explain_runtime_error(exc, "the model")) from exc
            return [np.array(self._interpreter.get_tensor(spec.index), copy=True) for spec in self._outputs]

    def close(self) -> None:
        self._interpreter = None


def check_inputs(specs: Sequence[TensorSpec], inputs: Sequence[np.ndarray]) -> None:
    """Reject inputs that do not match the model's input tensors, naming the tensor.

    Raises:
        ModelRuntimeError: count, shape or dtype differs.
    """
    if len(inputs) != len(specs):
        raise ModelRuntimeError(f"the model takes {len(specs)} input tensor(s), got {len(inputs)}")
    for spec, array in zip(specs, inputs):
        if not isinstance(array, np.ndarray):
            raise ModelRuntimeError(f"input '{spec.name}' must be a numpy array, got {type(array).__name__}")
        if array.dtype != spec.dtype:
            raise ModelRuntimeError(
                f"input '{spec.name}' must have dtype {np.dtype(spec.dtype).name}, got {array.dtype.name}"
            )
        if tuple(array.shape) != tuple(spec.shape):
            raise ModelRuntimeError(
                f"input '{spec.name}' must have shape {list(spec.shape)}, got {list(array.shape)}"
            )


def open_executor(
    kind: str,
    model_path: ModelSource,
    cpu_twin_path: Optional[ModelSource] = None,
    *,
    delegate: Any = None,
    device_id: str = "",
    num_threads: Optional[int] = None,
    **options: Any,
) -> Executor:
    """The executor that runs a model on a device of ``kind``: the backend of that name decides.

    ``model_path`` is what an Edge TPU runs (the compiled file when there is one),
    ``cpu_twin_path`` the fully quantized CPU twin (default: ``model_path``);
    ``delegate`` is the libedgetpu delegate the caller loaded for an Edge TPU
    device, and ``options`` are the backend's own (see its ``open_executor``).

    Raises:
        DeviceSpecError: no backend of that name.
        ModelRuntimeError: the runtime refuses the model.
        DeviceInitError: an Edge TPU kind without a delegate.
    """
    from .backends import backend_class

    return backend_class(kind).open_executor(model_path, cpu_twin_path, delegate=delegate, device_id=device_id,
                                             num_threads=num_threads, **options)
