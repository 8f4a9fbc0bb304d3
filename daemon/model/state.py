"""Recurrent state: model inputs fed, frame after frame, from the model's own outputs.

A video model such as Google's AutoML Video traffic detector takes, besides its
image, an LSTM state (``raw_inputs/init_lstm_c``) and gives the next one back
(``raw_outputs/lstm_c``); its reference loop copies each frame's state outputs to
the next frame's state inputs, starting from zeros. ``model.toml`` declares those
pairs::

    [[state]]
    input = "raw_inputs/init_lstm_c"
    output = "raw_outputs/lstm_c"
    initial = 0        # the stored (quantized) value every element starts at

This module holds the pure parts (validation, initial values, splitting inputs and
outputs); who keeps a state between frames (a stream, a KServe sequence) is the
service's business.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgetpud.daemon.errors import InvalidArgumentError, ModelError
from edgetpud.hal.executor import TensorSpec

#: Keys a ``[[state]]`` entry accepts.
STATE_KEYS = ("input", "output", "initial")


@dataclass(frozen=True)
class StatePair:
    """One state: the input at ``input_index`` is fed from the output at ``output_index``."""

    input: str
    output: str
    input_index: int
    output_index: int
    shape: Tuple[int, ...]
    dtype: np.dtype
    initial: float = 0.0

    def initial_value(self) -> np.ndarray:
        """A fresh array of the initial value (the start of every unary call, stream and sequence)."""
        return np.full(self.shape, self.initial, dtype=self.dtype)


def parse_state(entries: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                where: str) -> Tuple[StatePair, ...]:
    """Validate the ``[[state]]`` entries of model.toml against the model's tensors.

    Raises:
        ModelError: not a list of tables, an unknown key, a tensor the model does not have, an
            input or output used twice, shapes or dtypes that differ, or an initial value the
            input's dtype cannot hold.
    """
    if entries is None:
        return ()
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ModelError(f"{where}: state must be a list of tables ([[state]] with input, output, initial)")
    in_names = [s.name for s in inputs]
    out_names = [s.name for s in outputs]
    pairs: List[StatePair] = []
    for n, entry in enumerate(entries, 1):
        at = f"{where}: [[state]] entry {n}"
        unknown = sorted(set(entry) - set(STATE_KEYS))
        if unknown:
            raise ModelError(f"{at}: unknown key(s) {unknown}; allowed: {', '.join(STATE_KEYS)}")
        for key in ("input", "output"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ModelError(f"{at}: '{key}' must name a tensor of the model")
        name_in, name_out = entry["input"], entry["output"]
        if name_in not in in_names:
            raise ModelError(f"{at}: the model has no input '{name_in}'; its inputs are {in_names}")
        if name_out not in out_names:
            raise ModelError(f"{at}: the model has no output '{name_out}'; its outputs are {out_names}")
        i, o = in_names.index(name_in), out_names.index(name_out)
        spec_in, spec_out = inputs[i], outputs[o]
        if tuple(spec_in.shape) != tuple(spec_out.shape) or np.dtype(spec_in.dtype) != np.dtype(spec_out.dtype):
            raise ModelError(
                f"{at}: input '{name_in}' {list(spec_in.shape)} {np.dtype(spec_in.dtype).name} cannot be fed from "
                f"output '{name_out}' {list(spec_out.shape)} {np.dtype(spec_out.dtype).name}: shape and dtype must match")
        if any(p.input == name_in for p in pairs) or any(p.output == name_out for p in pairs):
            raise ModelError(f"{at}: input '{name_in}' or output '{name_out}' is already in another state pair")
        initial = entry.get("initial", 0)
        if not isinstance(initial, (int, float)) or isinstance(initial, bool):
            raise ModelError(f"{at}: initial must be a number (the stored value every element starts at)")
        dtype = np.dtype(spec_in.dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if initial != int(initial) or not info.min <= initial <= info.max:
                raise ModelError(f"{at}: initial {initial} is not a {dtype.name} value ({info.min}..{info.max})")
        elif not np.isfinite(initial):
            raise ModelError(f"{at}: initial must be finite")
        pairs.append(StatePair(name_in, name_out, i, o, tuple(int(d) for d in spec_in.shape), dtype,
                               float(initial)))
    return tuple(pairs)


def initial_state(pairs: Sequence[StatePair]) -> List[np.ndarray]:
    """The initial value of every state, in pair order."""
    return [p.initial_value() for p in pairs]


def next_state(pairs: Sequence[StatePair], outputs: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The state outputs of one run, copied (output buffers may be reused by the runtime)."""
    return [np.array(outputs[p.output_index], copy=True) for p in pairs]


def with_state(pairs: Sequence[StatePair], n_inputs: int, others: Sequence[np.ndarray],
               state: Optional[Sequence[np.ndarray]]) -> List[np.ndarray]:
    """All the model's inputs in order: ``others`` fill the non-state inputs, ``state`` (or the
    initial values) the state ones."""
    values = list(state) if state is not None else initial_state(pairs)
    by_index = {p.input_index: v for p, v in zip(pairs, values)}
    rest = iter(others)
    return [by_index[i] if i in by_index else next(rest) for i in range(n_inputs)]


def fill_state(pairs: Sequence[StatePair], tensors: Mapping[str, np.ndarray],
               state: Optional[Sequence[np.ndarray]]) -> Mapping[str, np.ndarray]:
    """Named raw inputs with the state inputs added.

    Without a carried ``state`` (a unary call) a state input the caller sent is used as sent
    and a missing one starts at its initial value; with a carried state (a stream or a
    sequence) the state is the carrier's, and sending it too is refused.

    Raises:
        StateInputSent: a carried state input is also sent.
    """
    names = {p.input for p in pairs}
    if state is not None:
        sent = sorted(names & set(tensors))
        if sent:
            raise StateInputSent(f"input(s) {sent} are the model's recurrent state, carried from frame to frame "
                                 "by this stream or sequence: do not send them (reset the state instead)")
    values = list(state) if state is not None else [None] * len(pairs)
    filled = dict(tensors)
    for pair, value in zip(pairs, values):
        if pair.input not in filled:
            filled[pair.input] = value if value is not None else pair.initial_value()
    return filled


class StateInputSent(InvalidArgumentError):
    """A request sent a state input that its stream or sequence carries itself."""


def task_outputs(pairs: Sequence[StatePair], items: Sequence[Any]) -> List[Any]:
    """``items`` (outputs, their specs or names) without the state outputs: what the task adapters see."""
    skip = {p.output_index for p in pairs}
    return [item for i, item in enumerate(items) if i not in skip]


def task_inputs(pairs: Sequence[StatePair], items: Sequence[Any]) -> List[Any]:
    """``items`` (input specs) without the state inputs."""
    skip = {p.input_index for p in pairs}
    return [item for i, item in enumerate(items) if i not in skip]
