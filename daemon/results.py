"""The answers of classify and detect, one definition for the model layer, the service and the client.

A module of its own, with no imports of grpc or of the model layer, so that the
model layer stays free of gRPC and a camera app's client does not load TFLite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

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
