"""The HAL's exception tree, one class per life-cycle stage.

Every backend (USB, PCIe, CPU, mock) raises these and nothing else, so the API
layer can map them to gRPC status codes in one place.
"""
from __future__ import annotations


class HalError(Exception):
    """Base of every error the hardware abstraction layer raises."""


class RuntimeMissingError(HalError, ImportError):
    """No TFLite interpreter or no Edge TPU runtime library could be loaded."""


class DelegateLoadError(HalError):
    """``load_delegate`` failed: the library is missing or the device is absent or busy."""


class DeviceUnavailableError(HalError):
    """The device is gone (unplugged, lost, or its worker died)."""


class DeviceInitError(HalError):
    """The device was found but could not be brought into service."""


class DeviceIOError(HalError):
    """A transfer or an invocation failed on a device that is still present."""


class DeviceTimeoutError(DeviceIOError, TimeoutError):
    """A transfer or an invocation did not finish in time."""


class ModelRuntimeError(HalError, ValueError):
    """The runtime refused a model (unknown custom op, bad tensor, wrong input)."""


class DeviceSpecError(HalError, ValueError):
    """A ``--device`` spec cannot be parsed (``auto``, ``mock[:N]``, ``cpu``, ``usb[:N]``, ``pci[:N]``)."""
