"""Start a throw-away edgetpud for a benchmark: one bundle, a temporary socket, mock devices."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from edgetpud.daemon.client import Client

DEFAULT_TEST_DATA = Path(__file__).resolve().parents[3] / "shared" / "coral-test-data"


def test_data_dir() -> Path:
    """$EDGETPUD_TEST_DATA, else ../shared/coral-test-data next to the checkout.

    Raises:
        SystemExit: neither exists.
    """
    path = Path(os.environ.get("EDGETPUD_TEST_DATA") or DEFAULT_TEST_DATA)
    if not path.is_dir():
        raise SystemExit(f"no Coral test data at {path}: set EDGETPUD_TEST_DATA")
    return path


class BenchDaemon:
    """``python -m edgetpud.daemon.main`` serving ``model`` from the test data on a temporary unix socket."""

    def __init__(self, model: str, devices: List[str], mock_latency_s: Optional[float] = None,
                 labels: Optional[str] = "imagenet_labels.txt", task: Optional[str] = None,
                 file_stem: Optional[str] = None, state_parent: Optional[Path] = None,
                 extra_listen: Sequence[str] = (), model_bytes: Optional[bytes] = None,
                 extra_config: Sequence[str] = ()) -> None:
        """``model`` names the bundle, made of the test data's ``file_stem`` (default: ``model``) twins,
        or of ``model_bytes`` alone (a model the benchmark built).

        ``state_parent`` puts the temporary folder (and so the state dir) on another file system;
        ``extra_config`` lines are added to ``edgetpud.toml``.
        """
        self.model = model
        self.workdir = Path(tempfile.mkdtemp(prefix="edgetpud-bench-", dir=state_parent))
        self.address = f"unix:{self.workdir / 'edgetpud.sock'}"
        bundle = self.workdir / "models" / model
        bundle.mkdir(parents=True)
        if model_bytes is not None:
            (bundle / "model.tflite").write_bytes(model_bytes)
        else:
            data = test_data_dir()
            stem = file_stem or model
            shutil.copyfile(data / f"{stem}.tflite", bundle / "model.tflite")
            shutil.copyfile(data / f"{stem}_edgetpu.tflite", bundle / "model_edgetpu.tflite")
        if labels and model_bytes is None:
            shutil.copyfile(data / labels, bundle / "labels.txt")
        if task:
            (bundle / "model.toml").write_text(f'task = "{task}"\n')
        lines = ["devices = [" + ", ".join(f'"{d}"' for d in devices) + "]",
                 f'models_dir = "{self.workdir / "models"}"', f'state_dir = "{self.workdir / "state"}"',
                 "listen = [" + ", ".join(f'"{a}"' for a in [self.address, *extra_listen]) + "]", 'log_level = "warning"', "queue_depth = 64",
                 "max_concurrent_requests = 256"]
        if mock_latency_s is not None:
            lines.append(f"mock_latency_s = {mock_latency_s}")
        lines.extend(extra_config)
        (self.workdir / "edgetpud.toml").write_text("\n".join(lines) + "\n")
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "BenchDaemon":
        log = (self.workdir / "edgetpud.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "edgetpud.daemon.main", "--config",
                                         str(self.workdir / "edgetpud.toml")], stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        with Client(self.address) as client:
            try:
                client.wait_ready(timeout=120)
            except Exception:
                self.__exit__()
                raise SystemExit("edgetpud did not become ready:\n" +
                                 (self.workdir / "edgetpud.log").read_text(errors="replace")[-3000:])
        self.startup_s = time.monotonic() - started
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
