"""The simulated hardware: a pyusb backend, a fake apex sysfs tree, a mock TPU executor.

Imported by production code only when ``--device mock`` selects it.
"""
from __future__ import annotations
