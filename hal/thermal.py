"""Trip points to a throttle level, with a log line per crossing, not per request.

The apex driver slows the TPU clock one step for every trip point the die
temperature exceeds (85/90/95 °C by default), so the level is simply the count of
trip points exceeded. ``ThermalMonitor`` remembers the last level so that only a
change is logged and reported.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

log = logging.getLogger(__name__)

DEFAULT_TRIP_POINTS_C = (85.0, 90.0, 95.0)


def throttle_level(temperature_c: Optional[float], trip_points_c: Sequence[float]) -> Optional[int]:
    """Number of trip points the temperature exceeds; None when the temperature is unknown."""
    if temperature_c is None:
        return None
    return sum(1 for trip in trip_points_c if temperature_c > trip)


class ThermalMonitor:
    """Tracks one device's throttle level and logs each crossing once.

    ``update`` is called by the pool's telemetry poll, never on the request path.
    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.level: Optional[int] = None
        self.temperature_c: Optional[float] = None

    def update(self, temperature_c: Optional[float], trip_points_c: Sequence[float]) -> bool:
        """Record a reading; return True when the throttle level changed."""
        self.temperature_c = temperature_c
        level = throttle_level(temperature_c, trip_points_c)
        if level == self.level:
            return False
        previous, self.level = self.level, level
        if level is None:
            return previous is not None
        if previous is None and level == 0:
            return False
        if previous is None or level > previous:
            log.warning(
                "%s: %.1f °C exceeds %d of %d trip points %s: the clock is throttled to level %d",
                self.device_id, temperature_c, level, len(trip_points_c), list(trip_points_c), level,
            )
        else:
            log.info("%s: %.1f °C, throttle level back down to %d", self.device_id, temperature_c, level)
        return True
