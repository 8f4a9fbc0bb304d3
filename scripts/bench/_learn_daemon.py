"""A throw-away edgetpud serving the Coral embedding extractor as an ``embed`` bundle, for the retraining benchmarks.

``BenchDaemon`` lays out a classifier by default;
the retraining benchmarks need the extractor the test data ships "as the base for
retraining", served with ``task = "embed"`` like ``tests/daemon_fixture.py`` does.
"""
from __future__ import annotations

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
    """``BenchDaemon`` with one bundle, the embedding extractor (both twins, ``task = "embed"``, no labels)."""

    def __init__(self, devices: List[str], mock_latency_s: Optional[float] = None,
                 state_parent: Optional[Path] = None) -> None:
        super().__init__(EXTRACTOR_BUNDLE, devices, mock_latency_s, labels=None, task="embed",
                         file_stem=EXTRACTOR_FILE[: -len(".tflite")], state_parent=state_parent)
