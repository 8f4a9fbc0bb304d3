"""When a model's files change under its head, the samples that kept their image are embedded again."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from daemon_fixture import RealDaemon
from edgetpud.daemon.client import Client
from edgetpud.daemon.learn.store import Store, content_hash, store_path
from edgetpud.daemon.model.tflite import TfliteModel

pytestmark = pytest.mark.slow

MODEL = "embedding_extractor"


def test_a_changed_base_re_embeds_the_stored_images_and_rebuilds_the_head(tmp_path: Path, test_data: Path) -> None:
    daemon = RealDaemon(tmp_path, test_data, bundles=[MODEL]).start()
    try:
        with Client(daemon.address, timeout=60) as c:
            c.add_samples(MODEL, "parrot", images=[(test_data / "parrot.jpg").read_bytes()])
            c.add_samples(MODEL, "owl", images=[(test_data / "owl.jpg").read_bytes()])
            c.add_samples(MODEL, "vector", embeddings=[np.random.default_rng(1).random(1024)])
            before = c.classes(MODEL)
    finally:
        daemon.stop()
    cpu_twin = daemon.models_dir / MODEL / "model.tflite"
    changed = TfliteModel.read(cpu_twin)
    changed.description = "the same network, saved again"  # other bytes, the same embeddings
    changed.write(cpu_twin)
    new_hash = content_hash(cpu_twin)

    again = RealDaemon(tmp_path, test_data, bundles=[MODEL])
    changed.write(again.models_dir / MODEL / "model.tflite")  # RealDaemon laid the original out again
    again.start()
    try:
        with Client(again.address, timeout=60) as c:
            deadline = time.monotonic() + 30
            while c.classes(MODEL).head_version == before.head_version and time.monotonic() < deadline:
                time.sleep(0.1)
            after = c.classes(MODEL)
            assert after.head_version > before.head_version
            # the samples with images are on the new base; the one sent as an embedding cannot be re-embedded
            assert [(x.label, x.samples) for x in after.classes] == [("parrot", 1), ("owl", 1)]
            assert c.classify(MODEL, (test_data / "owl.jpg").read_bytes()).classes[0].label == "owl"
    finally:
        again.stop()
    store = Store(store_path(tmp_path / "state"))
    try:
        assert set(store.embeddings(MODEL, new_hash)) == {"parrot", "owl"}
    finally:
        store.close()
