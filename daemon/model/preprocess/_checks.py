"""Argument checks shared by the preprocessing modules."""
from __future__ import annotations

from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """A Python or numpy integer, but not a bool (``True`` is no pixel count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
