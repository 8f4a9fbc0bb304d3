"""The service's documented exception types.

Library users catch ``EdgetpudError``; the API layer maps each subclass to one
gRPC status code. Errors from the HAL keep their own tree (``edgetpud.hal.errors``)
so the HAL never depends on the service.
"""
from __future__ import annotations


class EdgetpudError(Exception):
    """Base of every error edgetpud's service and model layer raise on purpose."""


class ModelError(EdgetpudError, ValueError):
    """A model file or bundle is unreadable, malformed, or not runnable here."""


class ImageError(EdgetpudError, ValueError):
    """An image or raw frame cannot be decoded or does not fit the model's input."""


class InvalidArgumentError(EdgetpudError, ValueError):
    """A request option is unknown or out of range (top_k, threshold, task, ...)."""


class ModelNameError(ModelError, InvalidArgumentError):
    """A model name that cannot be used: the caller's input, so INVALID_ARGUMENT, and still a ModelError."""


class NotFoundError(EdgetpudError, LookupError):
    """A named model, version, device or class does not exist."""


class PreconditionError(EdgetpudError):
    """The request is valid but the daemon is not in a state to serve it."""


class ShuttingDownError(EdgetpudError):
    """The daemon is stopping and takes no new work; retry in a moment, or on another daemon."""


class ResourceExhaustedError(EdgetpudError):
    """A queue or a limit is full; retry later."""


class AlreadyExistsError(EdgetpudError):
    """A name the caller wants to register is taken (a shared-memory region)."""


class PermissionDeniedError(EdgetpudError):
    """The caller may not use what it names (a shared-memory object it could not open itself)."""
