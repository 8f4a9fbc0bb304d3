"""Subgraph 0 of a model with the lookups the rules, the conversions and the partitioner share."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ...errors import ModelError
from ..tflite import TfliteModel
from .context import Note, OpContext
from .rules import OpRule, RuleTable


class Graph:
    """The operators, tensors, producers and consumers of the subgraph the interpreter runs."""

    def __init__(self, model: TfliteModel, runtime: int, rules: RuleTable) -> None:
        self.model = model
        self.runtime = runtime
        self.rules = rules
        self.ops = model.operators(0)
        self.tensors = model.tensors(0)
        self.inputs = frozenset(model.input_indices(0))
        self.outputs = frozenset(model.output_indices(0))
        self.producers: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = {}
        for op in self.ops:
            for t in op.outputs:
                if t >= 0:
                    self.producers.setdefault(t, op.index)
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op.index)
        self.names = [op.opcode for op in self.ops]
        self.notes: dict[str, Note] = {}

    def values(self, tensor: Any) -> Optional[np.ndarray]:
        """A constant tensor's data, or None when the model cannot give it."""
        try:
            return self.model.tensor_data(tensor.index)
        except ModelError:
            return None

    def context(self, op: Any, rule: Optional[OpRule]) -> OpContext:
        """What a limitation check sees of ``op``."""
        return OpContext(
            index=op.index, op=op.opcode, builtin=op.builtin, inputs=list(op.inputs),
            outputs=list(op.outputs), options=op.options, tensors=self.tensors,
            runtime=self.runtime, producers=self.producers, op_names=self.names,
            graph_inputs=self.inputs, tensor_values=self.values, rule=rule,
        )

    def keep_notes(self, ctx: OpContext) -> None:
        """Merge an op's notes into the model's, one per key."""
        for note in ctx.notes:
            kept = self.notes.setdefault(note.key, Note(note.key, note.text, []))
            kept.ops.extend(i for i in note.ops if i not in kept.ops)

    def op_consumers(self, op: Any) -> set[int]:
        """Indices of the ops that read any output of ``op``."""
        return {c for t in op.outputs if t >= 0 for c in self.consumers.get(t, ())}
