"""Device backends by name, imported only when chosen (python-can's interfaces, gpiozero's pin factories).

Two sources, one lookup:

* every module of this package whose name does not start with ``_`` is the
  built-in backend of that name (``usb``, ``pci``, ``cpu``) and says which class
  it is in ``BACKEND``: adding a kind is adding a file here;
* other packages register under the ``edgetpud.backends`` entry-point group
  (``name = "package.module:Class"``), as the simulated devices of
  ``edgetpud.mock_device`` do.

Names are listed without importing anything, so validating a ``--device`` spec
costs no import of a backend that is not used.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from importlib import metadata
from typing import Dict, List, Type

from ..backend import Backend
from ..errors import DeviceSpecError

ENTRY_POINT_GROUP = "edgetpud.backends"


@lru_cache(maxsize=1)
def _entry_points() -> Dict[str, metadata.EntryPoint]:
    found = metadata.entry_points()
    if hasattr(found, "select"):
        group = found.select(group=ENTRY_POINT_GROUP)
    else:  # pragma: no cover - Python 3.9: a dict of groups
        group = found.get(ENTRY_POINT_GROUP, ())  # type: ignore[attr-defined]
    return {ep.name: ep for ep in group}


def built_in_names() -> List[str]:
    """The backends of this package: the only ones ``--device auto`` looks at (nothing else is imported for it)."""
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def backend_names() -> List[str]:
    """Every backend name known, sorted: built-ins first win over an entry point of the same name."""
    return sorted(set(built_in_names()) | set(_entry_points()))


@lru_cache(maxsize=None)
def backend_class(name: str) -> Type[Backend]:
    """The backend class registered as ``name``, importing its module now.

    Raises:
        DeviceSpecError: no backend has that name, or its module cannot be imported.
    """
    try:
        if name in built_in_names():
            cls = importlib.import_module(f"{__name__}.{name}").BACKEND
        elif name in _entry_points():
            cls = _entry_points()[name].load()
        else:
            raise DeviceSpecError(f"no device backend {name!r}; known: {', '.join(backend_names())} "
                                  f"(other packages add one under the {ENTRY_POINT_GROUP!r} entry points; "
                                  "reinstall edgetpud if one is missing)")
    except ImportError as exc:
        raise DeviceSpecError(f"device backend {name!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend) and cls.name == name):
        raise DeviceSpecError(f"device backend {name!r} does not name a Backend subclass called {name!r}")
    return cls
