"""The state every view of a model shares: the ``ModelT``, where it came from, and lookups that check indices."""
from __future__ import annotations

from typing import Any

from ...errors import ModelError


class ModelBase:
    """A ``ModelT`` (its lists never None), its origin for messages, and the zip of files after it."""

    def __init__(self, model: Any, origin: str = "the model") -> None:
        self._model = model
        self._origin = origin
        self._tail = b""  # a zip of associated files (labels) appended after the flatbuffer
        for attr in ("operatorCodes", "subgraphs", "buffers", "metadata", "signatureDefs"):
            if getattr(model, attr) is None:
                setattr(model, attr, [])

    def _subgraph(self, subgraph: int) -> Any:
        if not (0 <= subgraph < len(self._model.subgraphs)):
            raise ModelError(f"subgraph {subgraph} does not exist ({len(self._model.subgraphs)} subgraphs)")
        return self._model.subgraphs[subgraph]

    def _tensor(self, index: int, subgraph: int) -> Any:
        tensors = self._subgraph(subgraph).tensors or []
        if not (0 <= index < len(tensors)):
            raise ModelError(f"tensor {index} does not exist in subgraph {subgraph} ({len(tensors)} tensors)")
        return tensors[index]
