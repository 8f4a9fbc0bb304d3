"""The one place where errors become gRPC status codes.

Servicers never pick codes themselves: whatever the service core, the model
layer or the HAL raises passes through :func:`to_status`, so a given failure
gets the same code and wording on every RPC.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Tuple, Type

import grpc

from edgetpud.daemon import errors
from edgetpud.daemon.scheduler import DeadlineExceededError
from edgetpud.hal import errors as hal_errors

log = logging.getLogger(__name__)


class RequestError(errors.InvalidArgumentError):
    """The request message itself is malformed (a field missing, an unknown enum, bad tensor bytes)."""


# Most specific first: the first isinstance match wins.
_CODES: Tuple[Tuple[Type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ImageError, grpc.StatusCode.INVALID_ARGUMENT),
    (hal_errors.ModelRuntimeError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ModelError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (hal_errors.DeviceUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (hal_errors.DeviceIOError, grpc.StatusCode.UNAVAILABLE),
    (hal_errors.DeviceInitError, grpc.StatusCode.UNAVAILABLE),
    (hal_errors.DelegateLoadError, grpc.StatusCode.UNAVAILABLE),
    (hal_errors.RuntimeMissingError, grpc.StatusCode.FAILED_PRECONDITION),
    (asyncio.TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)

# What to add when an error carries no message, so the caller still learns what to do.
_HINTS = {
    grpc.StatusCode.INVALID_ARGUMENT: "the request is malformed; check the image, frame or tensors sent",
    grpc.StatusCode.NOT_FOUND: "no such model or device; 'edgetpuctl models list' shows what is loaded",
    grpc.StatusCode.FAILED_PRECONDITION: "the daemon cannot serve this now; 'edgetpuctl status' says why",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the daemon is at capacity; retry after a short wait",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the deadline passed before a device could serve the request",
    grpc.StatusCode.UNAVAILABLE: "no device can serve the request now; 'edgetpuctl devices' shows their state",
}


def to_status(exc: BaseException) -> Tuple[grpc.StatusCode, str]:
    """The gRPC code and an actionable message for ``exc``.

    Unknown exceptions become INTERNAL and are logged with their traceback: they
    are bugs, and the caller is told where to look.
    """
    for cls, code in _CODES:
        if isinstance(exc, cls):
            message = str(exc).strip() or _HINTS.get(code, code.name.lower())
            return code, message
    log.error("internal error while serving a request", exc_info=exc)
    return grpc.StatusCode.INTERNAL, (
        f"internal error ({type(exc).__name__}: {exc}); the daemon log has the details"
    )
