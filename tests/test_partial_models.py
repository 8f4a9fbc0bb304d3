"""A model the Edge TPU can run only in part loads with a warning and serves (issue: checker at load time)."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from edgetpud.daemon.config import build_config
from edgetpud.daemon.model._schema import schema
from edgetpud.daemon.model.builder import ModelBuilder
from edgetpud.daemon.service import InferenceRequest, Service

pytestmark = pytest.mark.slow  # starts worker processes or the daemon


def partially_mapped_model() -> bytes:
    """ADD (mapped) then ARG_MAX (not an Edge TPU op): the compiler would cut before ARG_MAX."""
    b = ModelBuilder("partial")
    x = b.input("x", [1, 8], np.uint8, scale=1.0, zero_point=0)
    doubled = b.add(x, x, scale=2.0, zero_point=0, name="doubled")
    axis = b.const("axis", np.array([1], np.int32))
    index = b.tensor("index", [1], np.int32)
    options = schema.ArgMaxOptionsT()
    options.outputType = schema.TensorType.INT32
    b.op("ARG_MAX", [doubled, axis], [index], options)
    b.output(index)
    return b.build()


def test_a_partially_mapped_model_loads_with_a_warning_and_serves(tmp_path: Path, caplog) -> None:
    models = tmp_path / "models"
    (models / "partial").mkdir(parents=True)
    (models / "partial" / "model.tflite").write_bytes(partially_mapped_model())
    (models / "partial" / "model.toml").write_text('task = "raw"\n')
    config = build_config({"devices": ["mock:1"], "models_dir": str(models), "state_dir": str(tmp_path / "state")})

    async def main() -> None:
        service = Service(config)
        with caplog.at_level(logging.WARNING):
            await service.start()
        try:
            state = service.model_info("partial").to_dict()
            assert state["state"] == "ready"
            report = state["compatibility"]
            assert report["verdict"] == "partial"
            assert (report["summary"]["tpu_ops"], report["summary"]["cpu_ops"]) == (1, 1)
            assert [(op["op"], op["target"]) for op in report["operators"]] == [("ADD", "tpu"), ("ARG_MAX", "cpu")]
            assert any("only part of the model maps to the Edge TPU" in p for p in state["problems"])
            assert any("partial" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

            values = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], np.uint8)
            result = await service.infer("partial", "raw", InferenceRequest(tensors={"x": values}))
            assert [int(v) for v in result.payload["index"]] == [5]
        finally:
            await service.stop(5)

    asyncio.run(asyncio.wait_for(main(), 60))
