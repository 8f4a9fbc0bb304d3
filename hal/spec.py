"""``--device`` values: ``auto`` or ``<backend>[:N]``, checked against what each backend says N means."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, List, Optional

from .backends import backend_class, backend_names
from .errors import DeviceSpecError

AUTO = "auto"
_SPEC_RE = re.compile(r"^([a-z][a-z0-9_]*)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """One parsed ``--device`` value. ``index`` is None for "all of that kind"."""

    kind: str
    index: Optional[int] = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def _form(name: str) -> str:
    """How a spec of this backend is written (``usb[:N]``, ``cpu``); it costs the backend's import."""
    try:
        return name if backend_class(name).spec_number == "none" else f"{name}[:N]"
    except DeviceSpecError:
        return name


def _unknown(raw: str) -> DeviceSpecError:
    """Only a wrong spec imports every backend: to show how each is written."""
    forms = [AUTO] + [_form(name) for name in backend_names()]
    return DeviceSpecError(f"unknown device spec {raw!r}: expected {', '.join(forms[:-1])} or {forms[-1]}")


def _parse_one(raw: str) -> DeviceSpec:
    match = _SPEC_RE.match(str(raw).strip().lower())
    if not match:
        raise _unknown(raw)
    kind, number = match.group(1), match.group(2)
    index = int(number) if number is not None else None
    if kind == AUTO:
        meaning = "none"
    elif kind in backend_names():
        meaning = backend_class(kind).spec_number
    else:
        raise _unknown(raw)
    if meaning == "none":
        if index not in (None, 0):
            raise DeviceSpecError(f"device spec {raw!r}: {kind} takes no index")
        index = None
    if meaning == "count" and index == 0:
        raise DeviceSpecError(f"device spec '{kind}:0': give the number of {kind} devices ({kind}:1, {kind}:3)")
    return DeviceSpec(kind, index)


def parse_specs(specs: Iterable[str]) -> List[DeviceSpec]:
    """Parse ``auto`` and ``<kind>[:N]`` (``mock[:N]``, ``cpu``, ``usb[:N]``, ``pci[:N]`` ...).

    N is an index (``usb:1``) or a count, as the backend says; a backend that
    replaces the bus cannot be mixed with others. Importing a backend's module is
    the cost of naming it here, and only of naming it.

    Raises:
        DeviceSpecError: an unknown or contradictory spec.
    """
    parsed = [_parse_one(raw) for raw in specs] or [DeviceSpec(AUTO)]
    kinds = {s.kind for s in parsed}
    for kind in sorted(kinds - {AUTO}):
        backend = backend_class(kind)
        if backend.exclusive and kinds != {kind}:
            raise DeviceSpecError(f"{kind} devices cannot be mixed with real ones: use --device {kind}[:N] alone")
        if backend.spec_number == "count" and len([s for s in parsed if s.kind == kind]) > 1:
            raise DeviceSpecError(f"give --device {kind}:N once")
    return list(dict.fromkeys(parsed))
