"""Writing what ``edgetpuctl export`` received: one .tflite, or a bundle edgetpud (and stock TFLite) loads.

Every file is written to a temporary name in its folder, synced, then renamed over the
target, so a reader (or the daemon's models folder scan) never sees half a model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional

from edgetpud.daemon.client import ExportResult

CPU_FILE = "model.tflite"
EDGETPU_FILE = "model_edgetpu.tflite"
LABELS_FILE = "labels.txt"
TOML_FILE = "model.toml"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename; the temporary file is removed on failure."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (not every filesystem can open a folder; then the rename is all we get)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def labels_text(labels: Iterable[str]) -> str:
    """``id label`` lines: unambiguous even for labels that start with a digit; a class without a label has none."""
    return "".join(f"{index} {label.strip()}\n" for index, label in enumerate(labels) if label.strip())


def write_bundle(folder: Path, cpu: ExportResult, edgetpu: Optional[ExportResult]) -> List[Path]:
    """Write the bundle files into ``folder`` (made if missing); returns the paths written.

    A ``model_edgetpu.tflite`` left from an earlier export is removed when there is no
    compiled export now: it would carry the old head, and an Edge TPU would run it.
    The CPU twin is written last, so a bundle that has it has the rest.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in ((LABELS_FILE, labels_text(cpu.labels).encode()), (TOML_FILE, b'task = "classify"\n')):
        write_atomic(folder / name, data)
        written.append(folder / name)
    if edgetpu is not None:
        write_atomic(folder / EDGETPU_FILE, edgetpu.data)
        written.append(folder / EDGETPU_FILE)
    else:
        (folder / EDGETPU_FILE).unlink(missing_ok=True)
    write_atomic(folder / CPU_FILE, cpu.data)
    written.append(folder / CPU_FILE)
    return written
