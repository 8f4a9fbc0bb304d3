"""A throw-away edgetpud serving the Coral embedding extractor as an ``embed`` bundle, for the retraining benchmarks.

``BenchDaemon`` lays out a classifier (it copies a labels file and sets no task);
the retraining benchmarks need the extractor the test data ships "as the base for
retraining", served with ``task = "embed"`` like ``tests/daemon_fixture.py`` does.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

from _daemon import BenchDaemon, test_data_dir

#: The bundle name the benchmarks address, as in tests/daemon_fixture.py.
EXTRACTOR_BUNDLE = "embedding_extractor"
#: The extractor's CPU twin in the Coral test data (its compiled twin is this name with ``_edgetpu``).
EXTRACTOR_FILE = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def extractor_path() -> Path:
    """The extractor's CPU twin in the test data (SystemExit when the test data is missing)."""
    return test_data_dir() / EXTRACTOR_FILE


class EmbeddingDaemon(BenchDaemon):
    """``BenchDaemon`` with one bundle, the embedding extractor (both twins, ``task = "embed"``, no labels).

    ``state_parent`` puts the temporary folder (and so the state dir with its SQLite
    store) on another filesystem, where a durable commit may cost more than in /tmp.
    """

    def __init__(self, devices: List[str], mock_latency_s: Optional[float] = None,
                 state_parent: Optional[Path] = None) -> None:
        self.model = EXTRACTOR_BUNDLE
        self.workdir = Path(tempfile.mkdtemp(prefix="edgetpud-bench-", dir=state_parent))
        self.address = f"unix:{self.workdir / 'edgetpud.sock'}"
        data = test_data_dir()
        bundle = self.workdir / "models" / EXTRACTOR_BUNDLE
        bundle.mkdir(parents=True)
        shutil.copyfile(data / EXTRACTOR_FILE, bundle / "model.tflite")
        shutil.copyfile(data / EXTRACTOR_FILE.replace(".tflite", "_edgetpu.tflite"), bundle / "model_edgetpu.tflite")
        (bundle / "model.toml").write_text('task = "embed"\n')
        lines = ["devices = [" + ", ".join(f'"{d}"' for d in devices) + "]",
                 f'models_dir = "{self.workdir / "models"}"', f'state_dir = "{self.workdir / "state"}"',
                 f'listen = ["{self.address}"]', 'log_level = "warning"', "queue_depth = 64",
                 "max_concurrent_requests = 256"]
        if mock_latency_s is not None:
            lines.append(f"mock_latency_s = {mock_latency_s}")
        (self.workdir / "edgetpud.toml").write_text("\n".join(lines) + "\n")
        self.process = None
