"""The schema's enums as names and numpy dtypes: builtin operators, tensor types, options tables.

Everything that turns a schema number into something a caller reads (``"CONV_2D"``,
``np.int8``, ``Conv2DOptionsT``) and back lives here, so the reader, the writer
and the checker agree on one table.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ...errors import ModelError
from .._schema import schema
from ._values import text

DTypeLike = Union[str, int, type, np.dtype]

# Builtin codes above this live only in OperatorCode.builtin_code (schema v3a).
PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def enum_names(enum_cls: type) -> Dict[int, str]:
    """Value -> name of a schema enum class (``ActivationFunctionType``, ``TensorType``...)."""
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_OP_NAMES: Dict[int, str] = enum_names(schema.BuiltinOperator)
_OP_CODES: Dict[str, int] = {name: code for code, name in _OP_NAMES.items()}
_TYPE_NAMES: Dict[int, str] = enum_names(schema.TensorType)
_TYPE_CODES: Dict[str, int] = {name: code for code, name in _TYPE_NAMES.items()}
_OPTIONS1: Dict[str, int] = {k: v for k, v in vars(schema.BuiltinOptions).items() if isinstance(v, int) and k != "NONE"}
_OPTIONS2: Dict[str, int] = {
    k: v for k, v in vars(getattr(schema, "BuiltinOptions2", object)).items() if isinstance(v, int) and k != "NONE"
}

# numpy dtype of each TensorType; packed/opaque types map to their storage (or object).
_NP_DTYPES: Dict[str, np.dtype] = {
    "FLOAT32": np.dtype(np.float32),
    "FLOAT16": np.dtype(np.float16),
    "FLOAT64": np.dtype(np.float64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "BOOL": np.dtype(np.bool_),
    "COMPLEX64": np.dtype(np.complex64),
    "COMPLEX128": np.dtype(np.complex128),
    "STRING": np.dtype(object),
    "RESOURCE": np.dtype(object),
    "VARIANT": np.dtype(object),
    "INT4": np.dtype(np.int8),
    "INT2": np.dtype(np.int8),
    "UINT4": np.dtype(np.uint8),
    "BFLOAT16": np.dtype(np.uint16),
    "FLOAT8_E4M3FN": np.dtype(np.uint8),
    "FLOAT8_E5M2": np.dtype(np.uint8),
}
# Types whose bytes are not one numpy element per tensor element.
PACKED_TYPES = {"STRING", "RESOURCE", "VARIANT", "INT4", "INT2", "UINT4", "BFLOAT16", "FLOAT8_E4M3FN", "FLOAT8_E5M2"}
_NP_TO_TYPE: Dict[np.dtype, str] = {
    dt: name for name, dt in _NP_DTYPES.items() if name not in PACKED_TYPES
}

# Ops whose options table is not named after the op (the rest follow the naming rule).
_OPTIONS_OVERRIDES: Dict[str, Optional[str]] = {
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "REDUCE_ANY": "ReducerOptions",
    "REDUCE_ALL": "ReducerOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "L2_NORMALIZATION": "L2NormOptions",
    "CONCAT_EMBEDDINGS": "ConcatEmbeddingsOptions",
    "LSH_PROJECTION": "LSHProjectionOptions",
    "UNIDIRECTIONAL_SEQUENCE_RNN": "SequenceRNNOptions",
    "RANDOM_STANDARD_NORMAL": "RandomOptions",
    "RANDOM_UNIFORM": "RandomOptions",
    "MULTINOMIAL": "RandomOptions",
    "CONV_3D_TRANSPOSE": "Conv3DOptions",
    "CUSTOM": None,
}


def op_code(name: str) -> int:
    """The BuiltinOperator value of an op name such as ``"FULLY_CONNECTED"``.

    Raises:
        ModelError: no such builtin operator in this schema.
    """
    try:
        return _OP_CODES[name.upper()]
    except KeyError:
        raise ModelError(f"unknown builtin operator '{name}'") from None


def op_name(code: int) -> str:
    """The BuiltinOperator name of a code; unknown (newer) codes become ``UNKNOWN_<n>``."""
    return _OP_NAMES.get(int(code), f"UNKNOWN_{int(code)}")


def tensor_type(dtype: DTypeLike) -> int:
    """The TensorType value for a numpy dtype, a TensorType name (``"INT8"``) or value.

    Raises:
        ModelError: the dtype has no TensorType.
    """
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        if dtype in _TYPE_NAMES:
            return dtype
        raise ModelError(f"unknown TensorType value {dtype}")
    if isinstance(dtype, str) and dtype.upper() in _TYPE_CODES:
        return _TYPE_CODES[dtype.upper()]
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ModelError(f"cannot map dtype {dtype!r} to a TFLite tensor type") from None
    name = _NP_TO_TYPE.get(np_dtype)
    if name is None:
        raise ModelError(f"numpy dtype {np_dtype} has no TFLite tensor type")
    return _TYPE_CODES[name]


def numpy_dtype(type_code: int) -> np.dtype:
    """The numpy dtype a TensorType is stored as (object for strings and resources)."""
    return _NP_DTYPES.get(_TYPE_NAMES.get(int(type_code), ""), np.dtype(object))


def options_type_name(op: str) -> Optional[str]:
    """The union member name of the options table an op takes (``"Conv2DOptions"``), or None."""
    op = op.upper()
    if op in _OPTIONS_OVERRIDES:
        return _OPTIONS_OVERRIDES[op]
    wanted = op.replace("_", "").lower() + "options"
    for name in list(_OPTIONS1) + list(_OPTIONS2):
        if name.lower() == wanted:
            return name
    return None


def default_options(op: str) -> Any:
    """A default-valued ``*OptionsT`` object for an op, or None when it takes no options."""
    name = options_type_name(op)
    if name is None:
        return None
    cls = getattr(schema, name + "T", None)
    return cls() if cls is not None else None


def opcode_of(code: Any) -> Tuple[str, bool, int]:
    """An ``OperatorCodeT`` as (name, builtin?, builtin code): custom ops are named by their custom code."""
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        return text(code.customCode), False, builtin
    return op_name(builtin), True, builtin
