"""Replacing a model in the real daemon while clients keep classifying: no request fails.

Camera apps call continuously; the operator pushes a new version with ``edgetpuctl
models load``. The new version is loaded and warmed before the old one is
released, and requests that started on the old one finish there.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from daemon_fixture import ctl, real_daemon_fixture

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"
CLIENTS = 4
REPLACEMENTS = 3

daemon = real_daemon_fixture("hot-swap", [SMALL])


def test_replacing_a_model_under_continuous_load_fails_no_request(daemon, test_data: Path) -> None:
    from edgetpud.client import Client

    cat = (test_data / "cat.bmp").read_bytes()
    bundle = str(daemon.models_dir / SMALL)
    stop = threading.Event()
    served: List[Tuple[str, int]] = []
    failures: List[BaseException] = []
    lock = threading.Lock()

    def keep_classifying() -> None:
        with Client(daemon.address, timeout=60) as client:
            while not stop.is_set():
                try:
                    result = client.classify(SMALL, cat, top_k=1)
                except BaseException as exc:  # every failure counts, whatever its kind
                    with lock:
                        failures.append(exc)
                    continue
                with lock:
                    served.append((result.version, result.classes[0].id))

    workers = [threading.Thread(target=keep_classifying, name=f"camera-{i}") for i in range(CLIENTS)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(REPLACEMENTS):
            before = len(served)
            result = ctl("--json", "models", "load", SMALL, bundle, address=daemon.address)
            assert result.returncode == 0, result.stderr
            deadline = time.monotonic() + 30
            while len(served) < before + 2 * CLIENTS and not failures:  # the new version serves too
                assert time.monotonic() < deadline, "no request was served for 30 s after the replacement"
                stop.wait(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)

    assert not failures, f"{len(failures)} request(s) failed during replacement, first: {failures[0]!r}"
    versions = {version for version, _ in served}
    assert len(versions) == REPLACEMENTS + 1, f"versions that served: {sorted(versions)}"
    assert {class_id for _, class_id in served} == {283}, "every version gives the same answer"
