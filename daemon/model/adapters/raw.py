"""Raw tensors: named input arrays in the model's order, and output arrays by name."""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Union

import numpy as np

from edgetpud.daemon.errors import ImageError
from edgetpud.hal.errors import ModelRuntimeError
from edgetpud.hal.executor import TensorSpec, check_inputs

from .common import check_outputs


def raw_inputs(
    tensors: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]], specs: Sequence[TensorSpec]
) -> List[np.ndarray]:
    """Order named (or positional) input arrays as the model's inputs, checking dtype and shape.

    Raises:
        ImageError: a missing or unknown name, or an array of the wrong dtype or shape.
    """
    if isinstance(tensors, Mapping):
        known = [s.name for s in specs]
        unknown = sorted(set(tensors) - set(known))
        missing = [n for n in known if n not in tensors]
        if unknown or missing:
            raise ImageError(
                f"raw inputs must be exactly {known}; unknown: {unknown or 'none'}, missing: {missing or 'none'}"
            )
        arrays = [tensors[s.name] for s in specs]
    else:
        arrays = list(tensors)
    try:
        check_inputs(specs, arrays)  # the executor's own check: count, type, dtype and shape
    except ModelRuntimeError as exc:
        raise ImageError(str(exc)) from None
    return [np.ascontiguousarray(array) for array in arrays]


def raw_outputs(outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec]) -> Dict[str, np.ndarray]:
    """Name each output array after its tensor (duplicate names get ``#index`` appended).

    Raises:
        ModelError: the number of arrays differs from the number of outputs.
    """
    check_outputs(outputs, specs, "raw")
    named: Dict[str, np.ndarray] = {}
    for i, (spec, array) in enumerate(zip(specs, outputs)):
        key = spec.name if spec.name and spec.name not in named else f"{spec.name}#{i}"
        named[key] = array
    return named
