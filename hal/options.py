"""How the device pool runs its workers: one frozen value, so a typo in a name is a TypeError."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class PoolOptions:
    """The pool's knobs; the daemon fills them from ``edgetpud.toml`` (docs/daemon.md).

    Attributes:
        slots: shared-memory slots per model = invocations in flight per device (at least 2).
        poll_interval_s: how often the monitor reads telemetry and checks for hung workers.
        rescan_interval_s: how often the monitor looks for devices plugged in or pulled out.
        invoke_timeout_s: an invocation running longer is taken for a hang: the worker is killed.
        backoff_s: (first, longest) delay before restarting a dead worker; it doubles
            while workers keep dying within ``stable_s`` of their start.
        stable_s: a worker that served this long before it died restarts after the first delay again.
        start_timeout_s: how long a worker may take to open its device.
        warm_spare: keep one idle worker process with the runtime imported, so a restart
            skips spawning Python (about 4x faster recovery, one more process's memory).
        num_threads: CPU threads of each TFLite interpreter (None: the runtime's default).

    Raises:
        ValueError: a value out of range.
    """

    slots: int = 4
    poll_interval_s: float = 1.0
    rescan_interval_s: float = 2.0
    invoke_timeout_s: float = 30.0
    backoff_s: Tuple[float, float] = (0.05, 10.0)
    stable_s: float = 60.0
    start_timeout_s: float = 60.0
    warm_spare: bool = False
    num_threads: Optional[int] = None

    def __post_init__(self) -> None:
        # Fewer than two slots would leave the worker idle while a reply crosses.
        object.__setattr__(self, "slots", max(2, int(self.slots)))
        first, longest = (float(v) for v in self.backoff_s)
        object.__setattr__(self, "backoff_s", (first, longest))
        for name in ("poll_interval_s", "rescan_interval_s", "invoke_timeout_s", "start_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if not (math.isfinite(self.stable_s) and self.stable_s >= 0):
            raise ValueError(f"stable_s must be a finite number of seconds >= 0, got {self.stable_s!r}")
        if not (0 <= first <= longest and math.isfinite(longest)):
            raise ValueError(f"backoff_s must be (first, longest) with 0 <= first <= longest, got {self.backoff_s!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads!r}")

    def restart_delay(self, failures: int) -> float:
        """Seconds to wait before the next start after ``failures`` failed or short-lived ones."""
        if failures <= 0:
            return 0.0
        first, longest = self.backoff_s
        return min(longest, first * (2 ** min(failures - 1, 64)))
