"""Imprinted classes beside a classifier's pretrained ones, on the pretrained logits' scale.

A pretrained logit ``z_k(e) = w_k·e + b_k`` is taken on the raw embedding, while
an imprinted class is a direction ``u_c`` (unit mean of the class's normalized
samples). The new class gets the column ``a_c·u_c`` and the bias ``β_c``, fitted
through two points, so that its logit is on the pretrained scale:

- on the class's own mean embedding ``ē`` it is ``m̄ + δ``, where ``m̄`` is the mean
  over the class's samples of the highest pretrained logit (the class wins there);
- on an embedding of the same norm whose cosine to ``u_c`` is only ``τ`` it is
  ``m̄ - δ`` (it loses on photos that merely look alike).

So ``a_c = 2δ / (|ē| (cos(u_c, ē) - τ))`` and ``β_c = m̄ + δ - a_c·(u_c·ē)``. It needs
only running sums: ``ClassSums`` (count, Σ e/|e|, Σ e) and ``PretrainedLogits``
(Σ max_k z_k(e)); no earlier sample is kept.

Why two points: MobileNet's embeddings are post-ReLU (non-negative), so unrelated
photos have cosines of 0.44 on average and up to 0.66 (the 11 test photos). The
first design tried, column ``g·κ·u`` with the mean pretrained bias (one point,
no threshold), gave every photo a high new-class logit: with ``δ = 2`` a
held-out sunflower crop lost by 1.5 while ``kite_and_cold`` kept its pretrained
answer by only 0.5, and no ``δ`` did both. Measured on ``mobilenet_v1_0.25_128_quant``
(3 new classes from 8 augmented crops each of sunflower, dragonfly and hot_dog,
4 held-out crops each; ``tests/test_learn_calibration.py``), with ``τ = 0.7`` and
``δ = 6``: the smallest held-out margin of a new class over every other class is
2.2 logits, and the smallest margin of the pretrained top-1 over the new classes
on the 8 other photos is 4.2 (τ = 0.75: 2.0 and 5.9; δ = 4: 0.4 and 3.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import numpy as np

from edgetpud.daemon.errors import InvalidArgumentError, PreconditionError

from .head import LinearHead
from .imprinting import ClassSums, check_embeddings

#: δ: logits by which a new class beats the best pretrained class on its own samples (on average).
DEFAULT_MARGIN = 6.0
#: τ: the cosine to a class's direction at which its logit is δ below the pretrained best.
DEFAULT_THRESHOLD_COSINE = 0.7
#: The cosine gap (own samples minus τ) is never taken below this: a class whose samples agree less
#: than that gets a gentler slope instead of an infinite one.
MIN_COSINE_GAP = 0.05


@dataclass
class PretrainedLogits:
    """Σ over a class's samples of the highest pretrained logit: what calibration needs beyond ``ClassSums``."""

    count: int = 0
    max_logit_sum: float = 0.0

    def add(self, pretrained: LinearHead, embeddings: np.ndarray) -> None:
        """Fold ``[N, D]`` checked embeddings in."""
        x = check_embeddings(embeddings, pretrained.dim)
        self.count += int(x.shape[0])
        self.max_logit_sum += float(pretrained.logits(x).max(axis=1).astype(np.float64).sum())

    @property
    def mean(self) -> float:
        return self.max_logit_sum / self.count if self.count else 0.0


def calibration_sums(pretrained: LinearHead, samples: Mapping[str, np.ndarray]
                     ) -> Tuple[Dict[str, ClassSums], Dict[str, PretrainedLogits]]:
    """Both running sums per label from ``label -> [N, D]`` raw embeddings.

    Raises:
        InvalidArgumentError: an embedding of the wrong size, NaN, infinite or all zero.
    """
    classes: Dict[str, ClassSums] = {}
    logits: Dict[str, PretrainedLogits] = {}
    for label, x in samples.items():
        checked = check_embeddings(x, pretrained.dim)
        classes[label] = ClassSums.empty(pretrained.dim)
        classes[label].add(checked)
        logits[label] = PretrainedLogits()
        logits[label].add(pretrained, checked)
    return classes, logits


def calibrated_column(sums: ClassSums, logits: PretrainedLogits, margin: float = DEFAULT_MARGIN,
                      threshold_cosine: float = DEFAULT_THRESHOLD_COSINE) -> Tuple[np.ndarray, float]:
    """The weight column ``[D]`` and bias of one imprinted class on the pretrained logits' scale.

    Raises:
        PreconditionError: the class has no samples, or its two sums disagree on the count.
    """
    if sums.count == 0 or logits.count != sums.count:
        raise PreconditionError(f"a class needs samples, counted alike in both sums (got {sums.count} and "
                                f"{logits.count})")
    u = sums.direction.astype(np.float64)
    mean = sums.raw_sum / sums.count
    norm = float(np.linalg.norm(mean))
    along = float(u @ mean)
    gap = max(along / norm - threshold_cosine, MIN_COSINE_GAP)
    slope = 2.0 * margin / (norm * gap)
    bias = logits.mean + margin - slope * along
    return (slope * u).astype(np.float32), float(bias)


def keep_pretrained(pretrained: LinearHead, classes: Mapping[str, ClassSums],
                    logits: Mapping[str, PretrainedLogits], margin: float = DEFAULT_MARGIN,
                    threshold_cosine: float = DEFAULT_THRESHOLD_COSINE) -> LinearHead:
    """The pretrained head with the imprinted ``classes`` added after its columns (``normalize=False``).

    Raises:
        InvalidArgumentError: a label is already a pretrained class, or a class has no logit sums.
        PreconditionError: the pretrained head normalizes its input, or a class has no samples.
    """
    if pretrained.normalize:
        raise PreconditionError("keep_pretrained needs a classifier's own head (raw embeddings, normalize=False)")
    taken = set(pretrained.labels)
    clash = sorted(set(classes) & taken)
    if clash:
        raise InvalidArgumentError(f"label(s) {clash} are already classes of the pretrained model: choose "
                                   "another label, or drop --keep-classes to replace the model's classes")
    missing = sorted(set(classes) - set(logits))
    if missing:
        raise InvalidArgumentError(f"class(es) {missing} have no pretrained-logit sums to calibrate with")
    columns = [pretrained.weights]
    biases = [pretrained.bias]
    for label in classes:
        column, bias = calibrated_column(classes[label], logits[label], margin, threshold_cosine)
        columns.append(column[:, None])
        biases.append(np.array([bias], np.float32))
    info = dict(pretrained.info)
    info.update({"method": "pretrained+imprinted", "margin": float(margin),
                 "threshold_cosine": float(threshold_cosine)})
    return LinearHead(np.concatenate(columns, axis=1), np.concatenate(biases),
                      pretrained.labels + tuple(classes), pretrained.sources + ("imprinted",) * len(classes),
                      normalize=False, info=info)


__all__ = ["DEFAULT_MARGIN", "DEFAULT_THRESHOLD_COSINE", "PretrainedLogits", "calibrated_column",
           "calibration_sums", "keep_pretrained"]
