"""Where bundles come from: model names, the models folder, and uploaded bytes kept under the state folder.

Nothing here knows of versions or devices: it finds and keeps files, so the
versions can be swapped without caring whether a bundle came from a folder or
over the API.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ModelError, ModelNameError
from ..model.tflite import TfliteModel

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str) -> str:
    """Model names become folder and metric label names: keep them plain.

    Raises:
        ModelNameError: empty, too long, or with characters other than letters, digits, '_', '.', '-'.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ModelNameError(f"invalid model name {name!r}: use letters, digits, '_', '.' and '-' (up to 128)")
    return name


def fingerprint(path: Path) -> Tuple[Any, ...]:
    """What changes when a bundle's files change (names, sizes, modification times)."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    out = []
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def scan_models_dir(models_dir: Path) -> Dict[str, Path]:
    """Bundles under ``models_dir``: each folder, and each lone ``.tflite`` (its compiled twin folded in).

    A folder with no ``.tflite`` file at all (sample images, notes) is not a bundle and
    is passed over; one with a ``.tflite`` but no ``model.tflite`` is a broken bundle
    and is reported when it fails to load.
    """
    found: Dict[str, Path] = {}
    if not models_dir.is_dir():
        return found
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if any(entry.glob("*.tflite")):
                found[entry.name] = entry
            else:
                log.debug("%s holds no .tflite file; not a model bundle", entry)
        elif entry.suffix == ".tflite":
            stem = entry.stem
            if stem.endswith("_edgetpu"):
                base = stem[: -len("_edgetpu")]
                if (models_dir / f"{base}.tflite").is_file():
                    continue
                stem = base
            found.setdefault(stem, entry)
    return found


class UploadStore:
    """Uploaded model bytes, one folder per version: ``state_dir/uploads/NAME/vN`` (never the models folder).

    Every method blocks on the file system: the registry runs them off the loop.
    """

    def __init__(self, state_dir: Path) -> None:
        self._root = Path(state_dir) / "uploads"

    def folder(self, name: str, version: int) -> Path:
        """The folder one uploaded version lives in."""
        return self._root / name / f"v{version}"

    def save(self, name: str, version: int, data: bytes, labels: Optional[bytes] = None) -> Path:
        """Keep uploaded bytes as ``NAME.tflite`` (or ``NAME_edgetpu.tflite``) in the version's folder.

        ``labels`` become ``NAME_labels.txt`` beside it, where the bundle reader finds them
        (at this load, and when the next start serves the upload again).

        Raises:
            ModelError: the bytes are not a .tflite model, or the folder cannot be written.
        """
        model = TfliteModel.read(data)
        folder = self.folder(name, version)
        suffix = "_edgetpu" if model.is_edgetpu_compiled else ""
        target = folder / f"{name}{suffix}.tflite"
        try:
            if folder.exists():  # left by an earlier run (versions restart at 1): no stale twin may join these bytes
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            if labels is not None:
                _write_atomically(folder / f"{name}_labels.txt", labels)
            _write_atomically(target, data)
        except OSError as exc:
            self.delete(folder)
            raise ModelError(f"cannot store the uploaded model under {folder}: {exc.strerror or exc}") from None
        return target

    def stored(self) -> Dict[str, Tuple[int, Path, List[Path]]]:
        """The uploads kept by an earlier run: name -> (newest version, its model file, older version folders).

        Only the newest version of a name was serving (older ones were retiring). A
        folder without a model file (a save cut short) counts as an older one.
        """
        found: Dict[str, Tuple[int, Path, List[Path]]] = {}
        if not self._root.is_dir():
            return found
        for model_dir in sorted(p for p in self._root.iterdir() if p.is_dir()):
            if not NAME_PATTERN.match(model_dir.name) or ".." in model_dir.name:
                log.warning("%s is not an uploaded model's folder (not a model name): left alone", model_dir)
                continue
            versions = sorted((int(v.name[1:]), v) for v in model_dir.iterdir()
                              if v.is_dir() and v.name[:1] == "v" and v.name[1:].isdigit())
            complete = [(n, v, f) for n, v in versions for f in sorted(v.glob(f"{model_dir.name}*.tflite"))]
            if not complete:
                log.warning("%s holds no uploaded model file: deleting it", model_dir)
                for _, folder in versions:
                    self.delete(folder)
                continue
            number, newest, model_file = complete[-1]
            found[model_dir.name] = (number, model_file, [v for _, v in versions if v != newest])
        return found

    def delete_all(self, name: str) -> None:
        """Delete every stored version of ``name`` (a stored upload that no longer loads, unloaded)."""
        self.delete_all_but(name, None)

    def delete_all_but(self, name: str, keep: Optional[Path]) -> None:
        """Delete every stored version of ``name`` except the folder ``keep`` (the one now served)."""
        for folder in sorted((self._root / name).glob("v*")):
            if keep is None or folder.resolve() != Path(keep).resolve():
                self.delete(folder)

    def delete(self, folder: Path) -> None:
        """Delete one uploaded version's folder, and its model's folder once empty, so uploads do not fill the disk.

        Only a ``state_dir/uploads/NAME/vN`` folder is ever touched: a bundle loaded from a
        user's path is not the daemon's to delete. A failure is logged, never raised: the
        version is released either way.
        """
        try:
            root = self._root.resolve()
            target = Path(folder).resolve()
        except (OSError, RuntimeError) as exc:
            log.warning("could not delete the uploaded model folder %s: %s", folder, exc)
            return
        if target.parent.parent != root:
            log.warning("not deleting %s: it is not an uploaded model's folder under %s", folder, root)
            return
        try:
            shutil.rmtree(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete the uploaded model folder %s: %s", target, exc.strerror or exc)
            return
        try:
            target.parent.rmdir()
        except OSError:
            pass  # another version of the model is still stored there


def _write_atomically(target: Path, data: bytes) -> None:
    """A crash leaves the whole file or none of it: the next start serves what is stored."""
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)
