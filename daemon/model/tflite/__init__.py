"""Read, inspect, mutate and write ``.tflite`` files through the schema object API.

``model`` (``TfliteModel``: read, write, inspect), ``edit`` (its mutation API),
``serialize`` (bytes in and out), ``validation`` (what the runtime must never
see), ``tables`` (schema enums as names and dtypes), ``info`` (the snapshots the
reader returns).
"""
from __future__ import annotations

from edgetpud.hal.runtime import EDGETPU_CUSTOM_OP

from .._schema import schema
from .edit import ModelEditor
from .info import OperatorInfo, SignatureInfo, TensorInfo
from .model import TfliteModel
from .serialize import FILE_IDENTIFIER, LARGE_MODEL_THRESHOLD, SCHEMA_VERSION, ModelSource
from .tables import (
    PACKED_TYPES, DTypeLike, default_options, enum_names, numpy_dtype, op_code, op_name, options_type_name,
    tensor_type,
)
from .validation import validate

__all__ = [
    "DTypeLike", "EDGETPU_CUSTOM_OP", "FILE_IDENTIFIER", "LARGE_MODEL_THRESHOLD", "ModelEditor", "ModelSource",
    "OperatorInfo", "PACKED_TYPES", "SCHEMA_VERSION", "SignatureInfo", "TensorInfo", "TfliteModel",
    "default_options", "enum_names", "schema", "numpy_dtype", "op_code", "op_name", "options_type_name", "tensor_type",
    "validate",
]
