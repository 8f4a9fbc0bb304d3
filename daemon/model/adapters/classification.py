"""Classification: the best-scoring classes of a score vector."""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np

from edgetpud.daemon.errors import ModelError
from edgetpud.daemon.results import Class
from edgetpud.hal.executor import TensorSpec

from .common import check_outputs, check_top_k, dequantize


def classify(
    outputs: Sequence[np.ndarray],
    specs: Sequence[TensorSpec],
    labels: Optional[Mapping[int, str]] = None,
    top_k: int = 3,
    threshold: float = 0.0,
) -> List[Class]:
    """The ``top_k`` classes scoring at least ``threshold``, best first (ties: lower id first).

    Scores are dequantized with the output's scale and zero point. The first output
    with more than one value is the score vector.

    Raises:
        ModelError: the model has no usable score output.
        ValueError: ``top_k`` < 1 or a non-finite threshold.
    """
    check_top_k(top_k, threshold)
    check_outputs(outputs, specs, "classify")
    for array, spec in zip(outputs, specs):
        if np.asarray(array).size > 1:
            scores = dequantize(array, spec).reshape(-1)
            break
    else:
        raise ModelError("classify: no output holds more than one score; is this a classification model?")
    order = np.lexsort((np.arange(scores.size), -scores))  # score descending, then id ascending
    results: List[Class] = []
    for idx in order:
        score = float(scores[idx])
        if score < threshold or len(results) >= top_k:
            break
        results.append(Class(int(idx), (labels or {}).get(int(idx)), score))
    return results
