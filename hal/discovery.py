"""Which devices the ``--device`` specs select, and hot-plug bookkeeping across every backend.

Discovery only answers "what is plugged in right now, and which id does it
have"; the pool decides what to do about it. Identity is the physical path (USB
bus and port chain, ``/dev/apex_N``), not the enumeration index, so a device that
comes back on the same port gets its old id back. What is kind-specific (how to
scan, what N means, how ids are numbered) is asked of the backends.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from .backend import Backend, Found
from .backends import backend_class, backend_names, built_in_names
from .errors import DeviceSpecError
from .spec import AUTO, DeviceSpec, parse_specs
from .usb import slow_link, warn_slow_link

log = logging.getLogger(__name__)

BackendOptions = Mapping[str, Mapping[str, Any]]

__all__ = ["BackendOptions", "DeviceSpec", "Discovery", "Found", "RescanResult", "parse_specs"]


@dataclass
class RescanResult:
    added: List[Found] = field(default_factory=list)
    lost: List[str] = field(default_factory=list)
    returned: List[Found] = field(default_factory=list)


def _build(kind: str, options: BackendOptions) -> Backend:
    return backend_class(kind)(**dict(options.get(kind) or {}))


class Discovery:
    """Enumerates the devices the specs ask for and keeps ids stable across rescans.

    ``options`` maps a backend name to its constructor's keyword arguments
    (``{"pci": {"sysfs_root": tmp}, "usb": {"pyusb_backend": bus}}``); options for
    a backend the specs do not choose are ignored, an unknown name is refused.
    Only the chosen backends are imported and built.

    Raises:
        DeviceSpecError: ``options`` names no known backend.
        TypeError: a backend does not take one of its options.
    """

    def __init__(self, specs: Sequence[DeviceSpec], options: Optional[BackendOptions] = None) -> None:
        self.specs = list(specs)
        self.options: BackendOptions = dict(options or {})
        unknown = sorted(set(self.options) - set(backend_names()))
        if unknown:
            raise DeviceSpecError(f"options for unknown device backend(s) {unknown}; known: {', '.join(backend_names())}")
        self.known: Dict[str, Found] = {}
        self.present: Dict[str, bool] = {}
        self.fell_back_to_cpu = False
        self._slow_link_told: Set[str] = set()
        self._auto = any(s.kind == AUTO for s in self.specs)
        kinds = {s.kind for s in self.specs} - {AUTO}
        if self._auto:
            kinds |= {name for name in built_in_names() if backend_class(name).in_auto}
        self.backends: Dict[str, Backend] = {
            kind: _build(kind, self.options) for kind in sorted(kinds, key=lambda k: backend_class(k).order)}
        self._all = {k for k, b in self.backends.items() if self._auto and b.in_auto}
        self._all |= {s.kind for s in self.specs if s.index is None or backend_class(s.kind).spec_number == "count"}
        self._pinned = [s for s in self.specs
                        if s.kind != AUTO and s.index is not None and backend_class(s.kind).spec_number == "index"]
        self._started = False

    def close(self) -> None:
        """Stop every backend that was started (a simulator removes what it laid out)."""
        if self._started:
            self._started = False
            for backend in self.backends.values():
                backend.stop()

    # -- raw enumeration --------------------------------------------------
    def scan(self) -> List[Found]:
        """Everything relevant that is present right now (ids not yet assigned for ordered-id kinds)."""
        found: List[Found] = []
        for backend in self.backends.values():
            found += backend.scan()
        return found

    # -- id assignment ----------------------------------------------------
    def _next_index(self, kind: str) -> int:
        used = {f.index for f in self.known.values() if f.kind == kind}
        i = 0
        while i in used:
            i += 1
        return i

    def _accepts(self, dev: Found) -> bool:
        if dev.kind in self._all:
            return True
        return any(s.kind == dev.kind and s.index == dev.index for s in self._pinned)

    def _match(self, dev: Found) -> Optional[str]:
        for dev_id, known in self.known.items():
            if known.key == dev.key:
                return dev_id
        return None

    def _ordered(self, dev: Found) -> bool:
        return self.backends[dev.kind].ordered_ids

    def initial(self) -> List[Found]:
        """First scan: start the backends, assign ids, list absent promised devices, fall back where asked."""
        if not self._started:
            self._started = True
            for backend in self.backends.values():
                backend.start(self.specs)
        for dev in self.scan():
            if not self._accepts(dev):
                continue
            if self._ordered(dev):
                dev.id = f"{dev.kind}:{dev.index}"
            self._enter(dev)
        for spec in self.specs:
            if spec.kind == AUTO:
                continue
            for promised in self.backends[spec.kind].placeholders(spec):
                if promised.id not in self.known:
                    log.warning("device %s is not present; it will be taken into service when it appears",
                                promised.id)
                    self.known[promised.id] = promised
                    self.present[promised.id] = False
        if self._auto and all(self.backends[f.kind].auto_fallback for f in self.known.values()):
            self._fall_back()
        return [self.known[k] for k in self.known]

    def _fall_back(self) -> None:
        """``--device auto`` found no device: serve on the fallback backend, loudly."""
        self.fell_back_to_cpu = True
        log.warning("=" * 72)
        log.warning("NO EDGE TPU FOUND: --device auto falls back to the CPU. Inference runs the CPU "
                    "twins, 10-100x slower. Check the USB cable / 'lsusb | grep -e 1a6e -e 18d1' or "
                    "'ls /dev/apex_*'; a TPU plugged in later is taken into service.")
        log.warning("=" * 72)
        for name in built_in_names():
            if backend_class(name).auto_fallback and name not in self.backends:
                backend = self.backends[name] = _build(name, self.options)
                backend.start(self.specs)
                self._all.add(name)
                for dev in backend.scan():
                    self._enter(dev)

    def _enter(self, dev: Found) -> None:
        """Record ``dev`` as present under its id (first seen, appeared, or back)."""
        self.known[dev.id] = dev
        self.present[dev.id] = True
        self._slow_link_told.discard(dev.id)
        self._note_link(dev)

    def _note_link(self, dev: Found) -> None:
        """Warn of a USB 2 link once per stay on the bus, not at every rescan."""
        if dev.usb is not None and slow_link(dev.usb) and dev.id not in self._slow_link_told:
            warn_slow_link(dev.usb, dev.id)
            self._slow_link_told.add(dev.id)

    def _claim_id(self, dev: Found) -> Optional[str]:
        """The id a device at a path not known yet takes, or None when no spec wants it."""
        if self._ordered(dev):
            if dev.kind in self._all:
                return f"{dev.kind}:{self._next_index(dev.kind)}"
            # A pinned device not present at start takes the first of its kind that appears.
            for spec in self._pinned:
                sid = str(spec)
                if spec.kind == dev.kind and sid in self.known and not self.known[sid].path:
                    return sid
            return None
        # A pinned device not present at start claims the first match of its index.
        pending = f"{dev.kind}:{dev.index}"
        if pending in self.known and not self.known[pending].path:
            return pending
        return dev.id if self._accepts(dev) else None

    def rescan(self) -> RescanResult:
        """Compare what is present with what is known: new, vanished and returned devices."""
        result = RescanResult()
        seen = set()
        for dev in self.scan():
            dev_id = self._match(dev)
            if dev_id is None:
                dev_id = self._claim_id(dev)
                if dev_id is None:
                    continue
                dev.id = dev_id
                if self._ordered(dev):
                    dev.index = int(dev_id.split(":")[1])
                    dev.delegate_device = dev.delegate_device or dev_id
                was_known = dev_id in self.known
                self._enter(dev)
                seen.add(dev_id)
                (result.returned if was_known else result.added).append(dev)
                continue
            seen.add(dev_id)
            old = self.known[dev_id]
            dev.id, dev.index = dev_id, old.index
            dev.delegate_device = old.delegate_device or dev.delegate_device
            if self.present.get(dev_id):
                self.known[dev_id] = dev
                self._note_link(dev)  # e.g. firmware just loaded: now its real speed shows
            else:
                self._enter(dev)
                result.returned.append(dev)
        for dev_id in self.known:
            if dev_id not in seen and self.present.get(dev_id):
                self.present[dev_id] = False
                result.lost.append(dev_id)
        return result

    def probe(self, device_id: str) -> bool:
        """Is this device on its bus right now?"""
        known = self.known.get(device_id)
        if known is None:
            return False
        return any(dev.key == known.key for dev in self.backends[known.kind].scan())
