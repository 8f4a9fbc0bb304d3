"""The simulated hardware: a pyusb backend, a fake apex sysfs tree, a mock TPU executor.

One more device backend (``backend.py``), registered under the
``edgetpud.backends`` entry points: the HAL never imports it, its registry loads
it by name when ``--device mock`` selects it.
"""
from __future__ import annotations
