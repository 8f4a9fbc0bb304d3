"""A tiny recurrent model for the state tests: ``state_out = state_in + x`` (float32 [1, 4])."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetpud.daemon.model.builder import ModelBuilder

TOML = '''task = "raw"

[[state]]
input = "state_in"
output = "state_out"
initial = 0
'''


def write_counter(folder: Path, toml: str = TOML) -> Path:
    """The bundle ``folder``: a model whose state is the running sum of its inputs ``x``."""
    b = ModelBuilder("running sum: state_out = state_in + x")
    x = b.input("x", [1, 4], np.float32)
    state = b.input("state_in", [1, 4], np.float32)
    b.output(b.add(x, state, name="state_out"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(b.build())
    (folder / "model.toml").write_text(toml)
    return folder
