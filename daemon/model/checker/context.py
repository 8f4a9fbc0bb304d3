"""What a limitation check sees of one operator: its tensors, options and graph.

The limitation checks in ``limitations.py`` are small functions of one
``OpContext``; keeping the graph plumbing here lets each check read like the
sentence in Coral's documentation it implements.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

EIGHT_BIT = (np.dtype(np.int8), np.dtype(np.uint8))


def dims(shape: Sequence[int]) -> str:
    """Format a shape the way the reasons print it: ``[2,2,1,8,8]``."""
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def dtype_name(dtype: Any) -> str:
    """``float32``, ``int8``... for a numpy dtype (or anything numpy accepts)."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def effective_rank(shape: Sequence[int]) -> int:
    """How many dimensions have size > 1: a ``[1,1001]`` tensor is effectively 1-D."""
    return sum(1 for d in shape if int(d) > 1)


def axis_role(axis: int, rank: int) -> str:
    """Name an axis in the Edge TPU's layout: the 3 innermost are y, x, z; axis 0 of a 4-D tensor is batch.

    Tensors with more than 4 dimensions call every axis outside the 3
    innermost ``outer``; the rank rule already forbids sizes > 1 there.
    """
    if axis < 0:
        axis += rank
    inner = rank - axis  # 1 for the innermost axis
    if inner == 1:
        return "z"
    if inner == 2:
        return "x"
    if inner == 3:
        return "y"
    if rank == 4 and axis == 0:
        return "batch"
    return "outer"


@dataclass
class Note:
    """Something the report should say although it does not change the verdict."""

    key: str
    text: str
    ops: list[int] = field(default_factory=list)


@dataclass
class OpContext:
    """One operator in its graph, as the rule checks need it.

    ``tensor_values`` reads the data of a constant tensor (or returns None);
    it is injected so this module does not depend on how the model stores buffers.
    """

    index: int
    op: str
    builtin: bool
    inputs: list[int]
    outputs: list[int]
    options: Any
    tensors: Sequence[Any]
    runtime: int
    producers: dict[int, int]
    op_names: Sequence[str]
    graph_inputs: frozenset[int]
    tensor_values: Callable[[Any], Optional[np.ndarray]]
    rule: Any = None
    notes: list[Note] = field(default_factory=list)

    # ----------------------------------------------------------------- tensors
    def tensor(self, index: int) -> Any:
        """The TensorInfo at ``index`` of the subgraph."""
        return self.tensors[index]

    def input(self, position: int) -> Any:
        """The op's input tensor at ``position``, or None when absent (-1 or missing)."""
        if position >= len(self.inputs) or self.inputs[position] < 0:
            return None
        return self.tensors[self.inputs[position]]

    def output(self, position: int = 0) -> Any:
        """The op's output tensor at ``position``, or None when absent."""
        if position >= len(self.outputs) or self.outputs[position] < 0:
            return None
        return self.tensors[self.outputs[position]]

    def present_inputs(self) -> list[tuple[int, Any]]:
        """(position, tensor) for every input that is present."""
        return [(p, self.tensors[i]) for p, i in enumerate(self.inputs) if i >= 0]

    def present_outputs(self) -> list[tuple[int, Any]]:
        """(position, tensor) for every output that is present."""
        return [(p, self.tensors[i]) for p, i in enumerate(self.outputs) if i >= 0]

    def values(self, tensor: Any) -> Optional[np.ndarray]:
        """The data of a constant tensor, or None when it has none."""
        if tensor is None or not tensor.is_constant:
            return None
        return self.tensor_values(tensor)

    def int_values(self, position: int) -> Optional[list[int]]:
        """A constant integer input (axis, paddings, strides) as a flat list, or None."""
        data = self.values(self.input(position))
        if data is None:
            return None
        return [int(v) for v in np.asarray(data).reshape(-1)]

    def shape(self, tensor: Any) -> list[int]:
        """A tensor's static shape as plain ints."""
        return [int(d) for d in (tensor.shape if tensor is not None else [])]

    def option(self, name: str, default: Any = None) -> Any:
        """An option of the op, whether options come as a schema object or a dict."""
        opts = self.options
        if opts is None:
            return default
        if isinstance(opts, dict):
            return opts.get(name, default)
        return getattr(opts, name, default)

    def origin(self, tensor: Any) -> str:
        """Where a non-constant tensor comes from, in words: a model input, op N, or state."""
        index = tensor.index
        if index in self.producers:
            p = self.producers[index]
            return f"it is computed by op {p} ({self.op_names[p]})"
        if index in self.graph_inputs:
            return "it is a model input"
        return "it is a variable (state) tensor"

    def note(self, key: str, text: str) -> None:
        """Record a note (merged by key across operators)."""
        self.notes.append(Note(key, text, [self.index]))


def tensor_label(tensor: Any) -> str:
    """``'name'`` or ``#index`` when the tensor has no name."""
    name = getattr(tensor, "name", "") or ""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"'{name}'" if name else f"#{tensor.index}"
