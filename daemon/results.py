"""The answers the service gives (classify, detect, the request and device summary): one definition for the model layer, the service and the client.

A module of its own, with no imports of grpc or of the model layer, so that the
model layer stays free of gRPC and a camera app's client does not load TFLite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: A box in source-image pixels: xmin, ymin, xmax, ymax.
BBox = Tuple[float, float, float, float]


@dataclass(frozen=True)
class Class:
    """One classification result; ``label`` is None when the model has no label for ``id``."""

    id: int
    label: Optional[str]
    score: float


@dataclass(frozen=True)
class DetectedObject:
    """One detection; ``bbox`` is (xmin, ymin, xmax, ymax) in source-image pixels, ``normalized`` the
    same box as fractions of the source image's width and height (None when the source size is unknown)."""

    id: int
    label: Optional[str]
    score: float
    bbox: BBox
    normalized: Optional[BBox] = None


@dataclass(frozen=True)
class RequestSummary:
    """One model's requests since the daemon started: counts by status code, latency percentiles in seconds (estimated from histogram buckets)."""

    model: str
    count: int
    errors: int
    codes: Dict[str, int]
    p50_s: float
    p90_s: float
    p99_s: float


@dataclass(frozen=True)
class DeviceUsage:
    """How busy a device has been since the daemon started (``busy_s``: time in its invoke)."""

    device: str
    invocations: int
    busy_s: float
    utilization: float
