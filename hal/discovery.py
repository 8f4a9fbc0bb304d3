"""``--device`` specs, enumeration of every transport, and hot-plug bookkeeping.

Discovery only answers "what is plugged in right now, and which id does it
have"; the pool decides what to do about it. Identity is the physical path (USB
bus and port chain, ``/dev/apex_N``), not the enumeration index, so a device that
comes back on the same port gets its old id back.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .device import DeviceKind
from .errors import DeviceSpecError
from .pcie import apex_node_dir, find_apex_devices
from .usb import UsbAccelerator, find_usb_accelerators, slow_link, warn_slow_link

log = logging.getLogger(__name__)

_SPEC_RE = re.compile(r"^(auto|mock|cpu|usb|pci)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """One parsed ``--device`` value. ``index`` is None for "all of that kind"."""

    kind: str
    index: Optional[int] = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_specs(specs: Iterable[str]) -> List[DeviceSpec]:
    """Parse ``auto``, ``mock[:N]``, ``cpu``, ``usb[:N]``, ``pci[:N]``.

    ``mock:N`` means N mock devices; ``usb:N``/``pci:N`` mean the device with that
    index. Mock and real devices cannot be mixed: the mock replaces the bus.

    Raises:
        DeviceSpecError: an unknown or contradictory spec.
    """
    parsed: List[DeviceSpec] = []
    for raw in specs:
        match = _SPEC_RE.match(str(raw).strip().lower())
        if not match:
            raise DeviceSpecError(f"unknown device spec {raw!r}: expected auto, mock[:N], cpu, usb[:N] or pci[:N]")
        kind, number = match.group(1), match.group(2)
        index = int(number) if number is not None else None
        if kind in ("auto", "cpu") and index not in (None, 0):
            raise DeviceSpecError(f"device spec {raw!r}: {kind} takes no index")
        if kind == "mock" and index == 0:
            raise DeviceSpecError("device spec 'mock:0': give the number of mock devices (mock:1, mock:3)")
        parsed.append(DeviceSpec(kind, None if kind in ("auto", "cpu") else index))
    if not parsed:
        parsed = [DeviceSpec("auto")]
    kinds = {s.kind for s in parsed}
    if "mock" in kinds and kinds != {"mock"}:
        raise DeviceSpecError("mock devices cannot be mixed with real ones: use --device mock[:N] alone")
    if len([s for s in parsed if s.kind == "mock"]) > 1:
        raise DeviceSpecError("give --device mock:N once")
    return list(dict.fromkeys(parsed))


@dataclass
class Found:
    """A device present on the host, with the id the pool knows it by."""

    id: str
    kind: str
    index: int
    path: str
    usb: Optional[UsbAccelerator] = None
    sysfs_dir: Optional[Path] = None
    delegate_device: str = ""

    @property
    def key(self) -> Tuple[str, str]:
        return (self.kind, self.path)


@dataclass
class RescanResult:
    added: List[Found] = field(default_factory=list)
    lost: List[str] = field(default_factory=list)
    returned: List[Found] = field(default_factory=list)


class Discovery:
    """Enumerates the devices the specs ask for and keeps ids stable across rescans.

    ``usb_backend`` is handed to pyusb (None: its libusb default); ``sysfs_root``
    is where ``class/apex`` is read (None: ``/sys``). For mock specs the pool
    passes the mock world's backend and sysfs tree: the same lines run.
    """

    def __init__(
        self,
        specs: Sequence[DeviceSpec],
        sysfs_root: Optional[str] = None,
        usb_backend: Any = None,
        mock_sysfs_root: Optional[str] = None,
    ) -> None:
        self.specs = list(specs)
        self.sysfs_root = sysfs_root
        self.usb_backend = usb_backend
        self.mock_sysfs_root = mock_sysfs_root
        self.known: Dict[str, Found] = {}
        self.present: Dict[str, bool] = {}
        self.fell_back_to_cpu = False
        self._slow_link_told: Set[str] = set()
        kinds = {s.kind for s in self.specs}
        self._auto = "auto" in kinds
        self._all_usb = self._auto or DeviceSpec("usb") in self.specs
        self._all_pci = self._auto or DeviceSpec("pci") in self.specs
        self._mock = "mock" in kinds
        self._pinned = [s for s in self.specs if s.kind in ("usb", "pci") and s.index is not None]

    # -- raw enumeration --------------------------------------------------
    def _scan_usb(self, kind: str) -> List[Found]:
        found = []
        for i, acc in enumerate(find_usb_accelerators(self.usb_backend)):
            if kind == DeviceKind.MOCK.value:
                # The mock bus puts mock:i on port i+1 of bus 1 (see mock_device.usb_backend).
                index = acc.ports[0] - 1 if acc.ports else i
                sysfs = apex_node_dir(index, self.mock_sysfs_root) if self.mock_sysfs_root else None
                found.append(Found(f"mock:{index}", kind, index, acc.path, usb=acc, sysfs_dir=sysfs))
            else:
                found.append(Found("", kind, i, acc.path, usb=acc, delegate_device=f"usb:{i}"))
        return found

    def _scan_pci(self) -> List[Found]:
        return [
            Found(f"pci:{apex.index}", "pci", apex.index, apex.dev_path, sysfs_dir=apex.sysfs_dir,
                  delegate_device=f"pci:{apex.index}")
            for apex in find_apex_devices(self.sysfs_root)
        ]

    def scan(self) -> List[Found]:
        """Everything relevant that is present right now (ids not yet assigned for new USB devices)."""
        if self._mock:
            return self._scan_usb(DeviceKind.MOCK.value)
        found: List[Found] = []
        wants_usb = self._all_usb or any(s.kind == "usb" for s in self._pinned)
        wants_pci = self._all_pci or any(s.kind == "pci" for s in self._pinned)
        if wants_usb:
            found += self._scan_usb(DeviceKind.USB.value)
        if wants_pci:
            found += self._scan_pci()
        return found

    # -- id assignment ----------------------------------------------------
    def _next_usb_index(self) -> int:
        used = {f.index for f in self.known.values() if f.kind == "usb"}
        i = 0
        while i in used:
            i += 1
        return i

    def _accepts(self, dev: Found) -> bool:
        if dev.kind == "mock":
            return True
        if dev.kind == "usb" and self._all_usb:
            return True
        if dev.kind == "pci" and self._all_pci:
            return True
        return any(s.kind == dev.kind and s.index == dev.index for s in self._pinned)

    def _match(self, dev: Found) -> Optional[str]:
        for dev_id, known in self.known.items():
            if known.key == dev.key:
                return dev_id
        return None

    def initial(self) -> List[Found]:
        """First scan: assign ids, add the CPU device where asked or as the auto fallback."""
        kinds = {s.kind for s in self.specs}
        for dev in self.scan():
            if not self._accepts(dev):
                continue
            if dev.kind == "usb":
                dev.id = f"usb:{dev.index}"
            self._enter(dev)
        for spec in self._pinned:
            dev_id = str(spec)
            if dev_id not in self.known:
                log.warning("device %s is not present; it will be taken into service when it appears", dev_id)
                self.known[dev_id] = Found(dev_id, spec.kind, spec.index or 0, "")
                self.present[dev_id] = False
        if "mock" in kinds:
            for spec in self.specs:
                count = spec.index or 1
                for i in range(count):
                    dev_id = f"mock:{i}"
                    if dev_id not in self.known:
                        log.warning("mock device %s is unplugged at start", dev_id)
                        self.known[dev_id] = Found(dev_id, "mock", i, f"1-{i + 1}")
                        self.present[dev_id] = False
        tpus = [f for f in self.known.values() if f.kind in ("usb", "pci", "mock")]
        if "cpu" in kinds or (self._auto and not tpus):
            if self._auto and not tpus:
                self.fell_back_to_cpu = True
                log.warning("=" * 72)
                log.warning("NO EDGE TPU FOUND: --device auto falls back to the CPU. Inference runs the CPU "
                            "twins, 10-100x slower. Check the USB cable / 'lsusb | grep -e 1a6e -e 18d1' or "
                            "'ls /dev/apex_*'; a TPU plugged in later is taken into service.")
                log.warning("=" * 72)
            self.known["cpu:0"] = Found("cpu:0", "cpu", 0, "cpu")
            self.present["cpu:0"] = True
        return [self.known[k] for k in self.known]

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
        if dev.kind == "usb":
            if self._all_usb:
                return f"usb:{self._next_usb_index()}"
            # A pinned USB device not present at start takes the first accelerator that appears.
            for spec in self._pinned:
                sid = str(spec)
                if spec.kind == "usb" and sid in self.known and not self.known[sid].path:
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
                if dev.kind == "usb":
                    dev.index = int(dev_id.split(":")[1])
                    dev.delegate_device = dev.delegate_device or f"usb:{dev.index}"
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
        for dev_id, known in self.known.items():
            if known.kind == "cpu":
                continue
            if dev_id not in seen and self.present.get(dev_id):
                self.present[dev_id] = False
                result.lost.append(dev_id)
        return result

    def probe(self, device_id: str) -> bool:
        """Is this device on the bus right now? (The CPU always is.)"""
        known = self.known.get(device_id)
        if known is None:
            return False
        if known.kind == "cpu":
            return True
        return any(dev.key == known.key for dev in self.scan())
