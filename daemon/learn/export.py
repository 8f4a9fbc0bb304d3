"""Append a ``LinearHead`` to its base model as quantized TFLite ops, and write a bundle that runs without edgetpud.

The ops, after the base's uint8 embedding (a compiled base's ``edgetpu-custom-op``
output alike, so the head runs on the CPU after the Edge TPU op):

- ``normalize=True``: DEQUANTIZE -> L2_NORMALIZATION (float32) -> QUANTIZE to uint8
  on the observed range of the normalized values. TFLite's quantized L2Norm is
  fixed at scale 1/128, zero point 128 (128 levels for a non-negative [0, 1]).
- FULLY_CONNECTED per run of columns of one source: uint8 weights (per tensor;
  pretrained weights keep their own uint8 grid, so they are exact), int32 bias at
  input scale x weight scale, **int16** logits (zero point 0) on the observed logit
  range; CONCATENATION joins the runs.
- DEQUANTIZE -> SOFTMAX (float32) -> QUANTIZE to uint8 scores ``[1, K]`` (scale 1/256,
  zero point 0), what Coral's classifiers output.

Measured on every test photo against the float head (``tests/test_learn_export.py``),
largest score difference: imprinted head on the 1024-d extractor 0.55/256 (uint8
L2Norm instead: 1.43/256), least-squares normalize=True head 0.14/256, pretrained +
3 imprinted on mobilenet_v1_0.25_128_quant 0.51/256 (uint8 logits instead: 4.27/256,
over the 2/256 budget). Why not the quantized SOFTMAX: uint8 SOFTMAX needs uint8
logits (too coarse over a 1000-class head's ~35-logit range), and int16 SOFTMAX
clamps each logit at 10 below the top, so 1000 small classes held ~6% of the mass
(15/256 off on sunflower.bmp). A float softmax over K values costs microseconds.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from edgetpud.daemon.errors import InvalidArgumentError, PreconditionError

from ..model._schema import schema
from ..model.bundle import CONFIG_FILE, EDGETPU_FILE, LABELS_FILE, MODEL_FILE
from ..model.tflite import TfliteModel
from .head import LinearHead, l2_normalize
from .split import ModelLike, embedding_output

#: The softmax scores' quantization (what Coral's classifiers output).
SCORE_SCALE = 1.0 / 256
#: Headroom over the observed logit (or normalized-value) range, for embeddings not seen at export.
HEADROOM = 1.25
_INT16_MAX = 32767
_LABEL_BREAK = re.compile(r"[\r\n]")


def _quantize(values: np.ndarray, scale: float, zero_point: int, dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _asymmetric(values: np.ndarray) -> Tuple[float, int]:
    """uint8 scale and zero point covering ``values`` and 0."""
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if hi - lo <= 0:
        return 1.0, 0
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def _uint8_grid(values: np.ndarray) -> Optional[Tuple[float, int]]:
    """The scale and zero point ``values`` already lie on, when they were dequantized from uint8 (pretrained
    weights): quantizing them again on that grid is exact, on any other it costs each weight up to half a step."""
    levels = np.unique(values.astype(np.float64))
    if levels.size < 2 or levels.size > 256:
        return None
    lo, hi = float(levels[0]), float(levels[-1])
    steps = round((hi - lo) / float(np.diff(levels).min()))
    if not 1 <= steps <= 255:
        return None
    scale = (hi - lo) / steps
    zero = round(-lo / scale)
    q = values.astype(np.float64) / scale + zero
    if not (0 <= zero <= 255 and np.abs(q - np.round(q)).max() < 1e-3 and q.min() > -0.5 and q.max() < 255.5):
        return None
    return scale, int(zero)


def _logit_bound(head: LinearHead, x_scale: float, x_zero: int, embeddings: Optional[np.ndarray],
                 logit_range: Optional[Tuple[float, float]]) -> float:
    """The largest |logit| the int16 tensor must hold."""
    if logit_range is not None:
        lo, hi = (float(v) for v in logit_range)
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
            raise InvalidArgumentError(f"logit_range must be two finite numbers, low <= high; got {logit_range}")
        return max(abs(lo), abs(hi), 1e-3) * HEADROOM
    if embeddings is not None:
        z = head.logits(np.asarray(embeddings, np.float32).reshape(-1, head.dim))
        return max(float(np.abs(z).max()), 1e-3) * HEADROOM
    # no samples: what any input the uint8 tensor can hold could reach
    reach = max(abs(0 - x_zero), abs(255 - x_zero)) * x_scale
    return float((np.abs(head.weights).sum(axis=0) * reach + np.abs(head.bias)).max()) + 1e-3


def _tensor(m: TfliteModel, name: str, shape: Sequence[int], dtype: type, scale: float = 0.0,
            zero_point: int = 0, data: Optional[np.ndarray] = None) -> int:
    quantized = scale > 0
    return m.add_tensor(name, shape, dtype, None if data is None else np.ascontiguousarray(data),
                        scale=scale if quantized else None, zero_point=zero_point if quantized else None)


def append_head(base: ModelLike, head: LinearHead, embeddings: Optional[np.ndarray] = None,
                logit_range: Optional[Tuple[float, float]] = None, logits: str = "int16",
                normalization: str = "float") -> TfliteModel:
    """The base with ``head`` appended; its one output is the uint8 scores ``[1, K]``.

    ``embeddings`` (raw, ``[N, D]``, e.g. the head's samples) or ``logit_range`` set the
    logits' quantization; without either, the range any input could reach is used.

    Raises:
        PreconditionError: the base's output is not a uint8 embedding of the head's size.
        InvalidArgumentError: an unknown ``logits``/``normalization`` choice or a bad range.
    """
    if logits not in ("int16", "uint8") or normalization not in ("float", "uint8"):
        raise InvalidArgumentError("logits is int16 or uint8, normalization float or uint8")
    m = base if isinstance(base, TfliteModel) else TfliteModel.read(base)
    m = m.copy()
    index, dim = embedding_output(m)
    emb = m.tensor(index)
    if emb.dtype != np.dtype(np.uint8) or not emb.quantized or emb.per_channel:
        raise PreconditionError(f"export needs a uint8 embedding with one scale; '{emb.name}' is {emb.type_name}")
    if dim != head.dim:
        raise PreconditionError(f"the head takes {head.dim} values, the base's embedding has {dim}")
    shape = list(emb.shape)
    x, x_scale, x_zero = index, float(emb.scale), int(emb.zero_point)
    if head.normalize:
        x, x_scale, x_zero = _normalize(m, x, shape, x_zero, embeddings, normalization)
    k = head.num_classes
    if logits == "int16":
        bound = _logit_bound(head, x_scale, x_zero, embeddings, logit_range)
        z_scale, z_zero, z_type = bound / _INT16_MAX, 0, np.int16
    else:
        z_scale, z_zero = _asymmetric(np.array(_uint8_logit_range(head, embeddings, logit_range)))
        z_type = np.uint8
    parts = []
    for n, (start, stop) in enumerate(_column_groups(head)):
        w = head.weights[:, start:stop]
        w_scale, w_zero = _uint8_grid(w) or _asymmetric(w)
        weights = _tensor(m, f"head/weights_{n}", [stop - start, dim], np.uint8, w_scale, w_zero,
                          _quantize(w.T, w_scale, w_zero, np.uint8))
        b_scale = x_scale * w_scale
        bias = _tensor(m, f"head/bias_{n}", [stop - start], np.int32, b_scale, 0,
                       _quantize(head.bias[start:stop], b_scale, 0, np.int32))
        part = _tensor(m, f"head/logits_{n}", [1, stop - start], z_type, z_scale, z_zero)
        m.add_operator("FULLY_CONNECTED", [x, weights, bias], [part], schema.FullyConnectedOptionsT())
        parts.append(part)
    z = parts[0]
    if len(parts) > 1:
        z = _tensor(m, "head/logits", [1, k], z_type, z_scale, z_zero)
        concat = schema.ConcatenationOptionsT()
        concat.axis = -1
        m.add_operator("CONCATENATION", parts, [z], concat)
    soft = schema.SoftmaxOptionsT()
    soft.beta = 1.0  # the schema's default is 0: a uniform softmax
    scores = _tensor(m, "scores", [1, k], np.uint8, SCORE_SCALE, 0)
    if logits == "int16":
        # int16 SOFTMAX clamps every logit to at most 10 below the top, and with 1000 classes those
        # floors hold 4.5% of the mass; a float softmax on the dequantized logits is exact
        real = _tensor(m, "head/logits_float", [1, k], np.float32)
        m.add_operator("DEQUANTIZE", [z], [real])
        probabilities = _tensor(m, "head/scores_float", [1, k], np.float32)
        m.add_operator("SOFTMAX", [real], [probabilities], soft)
        m.add_operator("QUANTIZE", [probabilities], [scores])
    else:
        m.add_operator("SOFTMAX", [z], [scores], soft)
    m.set_outputs([scores])
    signatures = [s for s in m.signatures if s.subgraph == 0]
    m.remove_signatures()
    if signatures:
        m.set_signature(signatures[0].key, {m.tensor(i).name: i for i in m.input_indices()}, {"scores": scores})
    m.set_associated_files({LABELS_FILE: labels_text(head.labels).encode("utf-8")})
    m.remove_unused()
    return m


def _column_groups(head: LinearHead) -> list:
    """Runs of columns of one source, each quantized with its own weight scale.

    A calibrated imprinted column is several times larger than a pretrained one;
    one per-tensor scale for both cost the pretrained classes 15/256 of score on
    mobilenet_v1_0.25_128_quant, so each run gets its own FULLY_CONNECTED (same
    logit quantization) and a CONCATENATION joins them.
    """
    groups, start = [], 0
    for i in range(1, head.num_classes + 1):
        if i == head.num_classes or head.sources[i] != head.sources[start]:
            groups.append((start, i))
            start = i
    return groups


def _normalize(m: TfliteModel, x: int, shape: Sequence[int], zero: int, embeddings: Optional[np.ndarray],
               normalization: str) -> Tuple[int, float, int]:
    """L2-normalize the embedding; returns the uint8 tensor the FC reads, its scale and zero point."""
    if normalization == "uint8":
        out = _tensor(m, "head/normalized", shape, np.uint8, 1.0 / 128, 128)
        m.add_operator("L2_NORMALIZATION", [x], [out])
        return out, 1.0 / 128, 128
    real = _tensor(m, "head/embedding_float", shape, np.float32)
    m.add_operator("DEQUANTIZE", [x], [real])
    unit = _tensor(m, "head/normalized_float", shape, np.float32)
    m.add_operator("L2_NORMALIZATION", [real], [unit])
    if zero == 0:  # a non-negative embedding: its unit vector lies in [0, top]
        top = 1.0
        if embeddings is not None:
            top = min(1.0, float(l2_normalize(np.asarray(embeddings, np.float32)).max()) * HEADROOM)
        scale, q_zero = top / 255.0, 0
    else:
        scale, q_zero = 2.0 / 255.0, 128
    out = _tensor(m, "head/normalized", shape, np.uint8, scale, q_zero)
    m.add_operator("QUANTIZE", [unit], [out])
    return out, scale, q_zero


def _uint8_logit_range(head: LinearHead, embeddings: Optional[np.ndarray],
                       logit_range: Optional[Tuple[float, float]]) -> Tuple[float, float]:
    if logit_range is not None:
        return float(logit_range[0]), float(logit_range[1])
    if embeddings is None:
        raise InvalidArgumentError("uint8 logits need the sample embeddings or a logit range")
    z = head.logits(embeddings)
    return float(z.min()), float(z.max())


def labels_text(labels: Sequence[str]) -> str:
    """``labels.txt`` in the ``id label`` layout (unambiguous even for labels that start with digits).

    Raises:
        InvalidArgumentError: a label holds a line break.
    """
    for label in labels:
        if _LABEL_BREAK.search(label) or not label.strip():
            raise InvalidArgumentError(f"label {label!r} cannot be written one a line: it is empty or has a line break")
    return "".join(f"{i} {label}\n" for i, label in enumerate(labels))


def export_bundle(out: Union[str, Path], base: ModelLike, head: LinearHead,
                  base_edgetpu: Optional[ModelLike] = None, embeddings: Optional[np.ndarray] = None,
                  logit_range: Optional[Tuple[float, float]] = None, description: str = "") -> Path:
    """Write the retrained model: a bundle folder, or one ``.tflite`` when ``out`` ends in ``.tflite``.

    The folder holds ``model.tflite`` (the CPU twin with the head), ``model_edgetpu.tflite``
    when ``base_edgetpu`` is given (the same head ops after its ``edgetpu-custom-op``),
    ``labels.txt`` and ``model.toml``. Either way the .tflite carries ``labels.txt`` as
    an associated file. Returns ``out``.

    Raises:
        PreconditionError, InvalidArgumentError: as ``append_head``.
        OSError: the files cannot be written.
    """
    out = Path(out)
    cpu = append_head(base, head, embeddings, logit_range)
    if description:
        cpu.description = description
    if out.suffix == ".tflite":
        out.parent.mkdir(parents=True, exist_ok=True)
        cpu.write(out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    if base_edgetpu is not None:
        _check_twin_embeddings(base, base_edgetpu)
        compiled = append_head(base_edgetpu, head, embeddings, logit_range)
        compiled.write(out / EDGETPU_FILE)
    cpu.write(out / MODEL_FILE)
    (out / LABELS_FILE).write_text(labels_text(head.labels), encoding="utf-8")
    toml = 'task = "classify"\n'
    if description:
        toml += f"description = {_toml_string(description)}\n"
    (out / CONFIG_FILE).write_text(toml, encoding="utf-8")
    return out


def _check_twin_embeddings(cpu: ModelLike, compiled: ModelLike) -> None:
    """Both files get the same head ops, so their embeddings must be quantized alike.

    Raises:
        PreconditionError: the two embeddings differ in shape or quantization.
    """
    a, b = (m if isinstance(m, TfliteModel) else TfliteModel.read(m) for m in (cpu, compiled))
    ta, tb = a.tensor(embedding_output(a)[0]), b.tensor(embedding_output(b)[0])
    if (ta.shape, ta.scale, ta.zero_point) != (tb.shape, tb.scale, tb.zero_point):
        raise PreconditionError(
            f"the compiled base's embedding {list(tb.shape)} (scale {tb.scale}, zero point {tb.zero_point}) is not "
            f"its CPU twin's {list(ta.shape)} (scale {ta.scale}, zero point {ta.zero_point}): not twins")


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch >= " " else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'


__all__ = ["HEADROOM", "SCORE_SCALE", "append_head", "export_bundle", "labels_text"]
