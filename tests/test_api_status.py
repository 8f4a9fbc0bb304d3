"""One mapping from errors to gRPC status codes, with messages kept."""
from __future__ import annotations

import grpc
import pytest

from edgetpud.daemon.api.status import RequestError, to_status
from edgetpud.daemon.errors import (ImageError, InvalidArgumentError, ModelError, NotFoundError, PreconditionError,
                                    ResourceExhaustedError)
from edgetpud.daemon.scheduler import DeadlineExceededError
from edgetpud.hal import errors as hal

Code = grpc.StatusCode


@pytest.mark.parametrize("error, code", [
    (RequestError("no image"), Code.INVALID_ARGUMENT),
    (InvalidArgumentError("top_k must be >= 1"), Code.INVALID_ARGUMENT),
    (ImageError("frame of 10 bytes does not match stride 12 x height 2"), Code.INVALID_ARGUMENT),
    (hal.ModelRuntimeError("bad input"), Code.INVALID_ARGUMENT),
    (NotFoundError("model 'x' is not loaded"), Code.NOT_FOUND),
    (ModelError("not a tflite file"), Code.FAILED_PRECONDITION),
    (PreconditionError("no device"), Code.FAILED_PRECONDITION),
    (hal.RuntimeMissingError("no tflite runtime"), Code.FAILED_PRECONDITION),
    (ResourceExhaustedError("queue full"), Code.RESOURCE_EXHAUSTED),
    (DeadlineExceededError("too late"), Code.DEADLINE_EXCEEDED),
    (TimeoutError("too late"), Code.DEADLINE_EXCEEDED),
    (hal.DeviceUnavailableError("unplugged"), Code.UNAVAILABLE),
    (hal.DeviceTimeoutError("usb transfer timed out"), Code.UNAVAILABLE),
    (hal.DeviceIOError("transfer failed"), Code.UNAVAILABLE),
])
def test_each_error_class_has_its_code_and_keeps_its_message(error, code):
    assert to_status(error) == (code, str(error))


def test_an_empty_message_gets_a_hint_and_unknown_errors_are_internal():
    code, message = to_status(NotFoundError())
    assert code == Code.NOT_FOUND and "edgetpuctl models list" in message
    code, message = to_status(KeyError("oops"))
    assert code == Code.INTERNAL and "KeyError" in message and "log" in message
