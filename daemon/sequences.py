"""Who keeps a recurrent model's state between frames: a stream, or a KServe sequence.

A ``StateCarrier`` holds one camera's state and runs its frames one at a time (each
frame needs the previous one's state outputs), in the order they asked. The state
lives in the main process, so whichever device runs the next frame gets it. Only a
frame that ran updates it: a dropped or failed frame leaves it as it was.

``Sequences`` are Triton's implicit state for KServe's ``sequence_id``: a carrier per
(model, id), at most ``limit`` live, each forgotten after ``idle_s`` without a request.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError

SequenceId = Union[int, str]
#: Ids of forgotten sequences remembered, so that a late request is told why its sequence is gone.
REMEMBERED_EXPIRED = 4096


class StateCarrier:
    """One stream's (or sequence's) state, for one model version at a time."""

    def __init__(self) -> None:
        self._lock: Optional[asyncio.Lock] = None
        self._key: Optional[str] = None
        self._values: Optional[List[np.ndarray]] = None
        self.frames = 0  # frames that ran and updated the state

    @property
    def lock(self) -> asyncio.Lock:
        """Made on first use, on the running loop (Python 3.9 binds a lock to the loop current when made)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @property
    def busy(self) -> bool:
        """A frame of this stream or sequence is running now."""
        return self._lock is not None and self._lock.locked()

    def values_for(self, key: str) -> Optional[List[np.ndarray]]:
        """The carried state for model version ``key``; None (start from the initial values) when
        none is carried yet or it was carried for another version (a hot swap restarts the state)."""
        return self._values if self._key == key else None

    def commit(self, key: str, values: List[np.ndarray]) -> None:
        """The state outputs of a frame that ran become the next frame's state inputs."""
        self._key, self._values = key, values
        self.frames += 1

    def reset(self) -> None:
        """The next frame starts from the initial values (a cut, a new scene)."""
        self._key, self._values = None, None


class Sequences:
    """Live KServe sequences: a carrier per (model, sequence id), bounded in number and idle time."""

    def __init__(self, limit: int, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.idle_s = idle_s
        self._clock = clock
        self._live: "OrderedDict[Tuple[str, SequenceId], Tuple[StateCarrier, float]]" = OrderedDict()
        self._expired: "OrderedDict[Tuple[str, SequenceId], None]" = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._live)

    def carrier(self, model: str, sequence_id: SequenceId, start: bool) -> StateCarrier:
        """The carrier of a request in a sequence; ``start`` begins (or restarts) it from the initial state.

        Raises:
            InvalidArgumentError: an empty or zero id (Triton's "no sequence").
            NotFoundError: not ``start`` and the sequence was never started, has ended or was idle too long.
            ResourceExhaustedError: ``start`` with ``limit`` sequences live.
        """
        if sequence_id in (0, ""):
            raise InvalidArgumentError("sequence_id 0 or '' means no sequence; number sequences from 1")
        self._expire()
        key = (model, sequence_id)
        now = self._clock()
        if start:
            if key not in self._live and len(self._live) >= self.limit:
                raise ResourceExhaustedError(
                    f"{self.limit} sequences are live (sequence_limit): end one (sequence_end=true) or wait for "
                    f"one to go idle for {self.idle_s:g} s (sequence_idle_s), then start sequence {sequence_id}")
            carrier = StateCarrier()
            self._expired.pop(key, None)
        else:
            entry = self._live.get(key)
            if entry is None:
                why = (f"it was idle for more than {self.idle_s:g} s (sequence_idle_s) and was forgotten"
                       if key in self._expired else "it was never started or has ended")
                raise NotFoundError(f"sequence {sequence_id} of model {model} is not live: {why}; send "
                                    "sequence_start=true on its first request")
            carrier = entry[0]
        self._live[key] = (carrier, now)
        self._live.move_to_end(key)
        return carrier

    def end(self, model: str, sequence_id: SequenceId) -> None:
        """Forget a sequence after its last request (``sequence_end``)."""
        self._live.pop((model, sequence_id), None)

    def _expire(self) -> None:
        now = self._clock()
        while self._live:
            key, (carrier, used) = next(iter(self._live.items()))
            # the oldest first; one whose request is running now is not idle
            if now - used <= self.idle_s or carrier.busy:
                break
            del self._live[key]
            self._expired[key] = None
            while len(self._expired) > REMEMBERED_EXPIRED:
                self._expired.popitem(last=False)

    def live(self) -> Dict[str, int]:
        """Live sequences per model (status)."""
        self._expire()
        counts: Dict[str, int] = {}
        for model, _ in self._live:
            counts[model] = counts.get(model, 0) + 1
        return counts
