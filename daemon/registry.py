"""The models the daemon serves: bundles on disk, versions, and availability-preserving replacement.

Each load makes a new version (``name@N``, N increasing per name). A request leases
the version it starts on; replacing a model loads and warms the new version on the
devices first, switches new requests to it, and releases the old version only when
its last lease ends. So a replacement under load fails no request.
"""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edgetpud.hal.errors import DeviceUnavailableError, HalError
from edgetpud.hal.executor import TensorSpec

from .errors import ModelError, ModelNameError, NotFoundError
from .learn.session import HeadSession
from .model import ModelBundle, ModelSession
from .model.checker import check_model
from .model.tflite import TfliteModel

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
Run = Callable[..., Awaitable[Any]]
Session = Union[ModelSession, HeadSession]
#: Called (off the loop) on every freshly read bundle: returns the bundle and session to serve, so a
#: model with a learned head gets it back (and a classifier cut at its head's input) whenever it loads.
Adapt = Callable[[str, ModelBundle, ModelSession], Tuple[ModelBundle, Session]]


def check_name(name: str) -> str:
    """Model names become folder and metric label names: keep them plain.

    Raises:
        ModelNameError: empty, too long, or with characters other than letters, digits, '_', '.', '-'.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ModelNameError(f"invalid model name {name!r}: use letters, digits, '_', '.' and '-' (up to 128)")
    return name


def _spec_dict(spec: TensorSpec) -> Dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": np.dtype(spec.dtype).name,
            "scale": spec.scale, "zero_point": spec.zero_point}


@dataclass(eq=False)
class ModelVersion:
    """One loaded version of a model: its bundle, the CPU-side session and where it is placed."""

    name: str
    version: int
    bundle: ModelBundle
    session: Session
    report: Optional[Dict[str, Any]]
    problems: List[str]
    source: str
    fingerprint: Tuple[Any, ...] = ()
    devices: Set[str] = field(default_factory=set)
    refs: int = 0
    state: str = "loading"
    loaded_at: float = field(default_factory=time.time)
    upload_dir: Optional[Path] = None  # the daemon's own copy of uploaded bytes: deleted when released
    #: Versions that differ only in their head share the base loaded on the devices under one key.
    pool_key: str = ""

    @property
    def id(self) -> str:
        """``name@version``: how requests and the registry name this version."""
        return f"{self.name}@{self.version}"

    @property
    def key(self) -> str:
        """The key the pool and the scheduler know this version's base model by."""
        return self.pool_key or self.id

    @property
    def tasks(self) -> Tuple[str, ...]:
        """The tasks this version serves (raw tensors work for any model)."""
        if isinstance(self.session, HeadSession):
            return self.session.tasks
        return (self.bundle.task, "raw")

    @property
    def default_task(self) -> str:
        return self.session.default_task if isinstance(self.session, HeadSession) else self.bundle.task

    @property
    def head(self) -> Any:
        """The learned head served on the base's embedding, or None."""
        return self.session.head if isinstance(self.session, HeadSession) else None


@dataclass(frozen=True)
class ModelState:
    """A snapshot of a model for status output; also what a failed bundle leaves behind."""

    name: str
    version: Optional[int]
    task: Optional[str]
    state: str
    path: str
    devices: List[str]
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    label_count: int
    edgetpu_compiled: bool
    report: Optional[Dict[str, Any]]
    problems: List[str]
    description: str = ""
    versions: List[int] = field(default_factory=list)
    head_version: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: the keys the API layer and ``edgetpuctl models info`` show."""
        return {
            "name": self.name, "version": self.version, "task": self.task, "state": self.state,
            "path": self.path, "devices": list(self.devices),
            "inputs": [_spec_dict(s) for s in self.inputs], "outputs": [_spec_dict(s) for s in self.outputs],
            "labels": self.label_count, "label_count": self.label_count,
            "edgetpu_compiled": self.edgetpu_compiled,
            "compatibility": self.report, "report": self.report,
            "problems": list(self.problems), "error": "; ".join(self.problems) if self.state == "failed" else "",
            "description": self.description, "versions": list(self.versions),
            "head_version": self.head_version,
        }

    @classmethod
    def of(cls, mv: ModelVersion, live_versions: Sequence[int] = ()) -> "ModelState":
        bundle = mv.bundle
        head = mv.head
        return cls(
            name=mv.name, version=mv.version, task=mv.default_task, state=mv.state, path=str(bundle.path),
            devices=sorted(mv.devices), inputs=list(mv.session.inputs), outputs=list(mv.session.outputs),
            label_count=head.num_classes if head is not None else len(bundle.labels),
            edgetpu_compiled=bundle.edgetpu_path is not None,
            report=mv.report, problems=list(mv.problems), description=bundle.description,
            versions=list(live_versions) or [mv.version],
            head_version=head.info.get("head_version") if head is not None else None,
        )

    @classmethod
    def failed(cls, name: str, path: str, problem: str) -> "ModelState":
        return cls(name=name, version=None, task=None, state="failed", path=path, devices=[], inputs=[],
                   outputs=[], label_count=0, edgetpu_compiled=False, report=None, problems=[problem])


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


_REPLACEMENT_FAILED = "the changed bundle at "


def _note_failed_replacement(mv: ModelVersion, path: Path, exc: BaseException) -> None:
    """Tell ``models info`` why the served version was kept: otherwise only the log knows the new files were refused."""
    mv.problems[:] = [p for p in mv.problems if not p.startswith(_REPLACEMENT_FAILED)]
    mv.problems.append(f"{_REPLACEMENT_FAILED}{path} could not replace version {mv.version}, which keeps "
                       f"serving: {exc}")


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


class Registry:
    """Loads bundles onto the pool's devices and leases versions to requests.

    Every method runs on the event loop; blocking work (reading files, the checker,
    pool loads) goes to ``run_blocking``.
    """

    def __init__(self, pool: Any, scheduler: Any, state_dir: Path, run_blocking: Run) -> None:
        self._pool = pool
        self._scheduler = scheduler
        self._state_dir = Path(state_dir)
        self._run = run_blocking
        self._current: Dict[str, ModelVersion] = {}
        self._live: Dict[str, ModelVersion] = {}  # every version not yet released, by id (name@version)
        self._failed: Dict[str, ModelState] = {}
        self._next_version: Dict[str, int] = {}
        self._locks: Dict[str, asyncio.Lock] = {}
        self.adapt: Optional[Adapt] = None

    # ---- queries ----

    def states(self) -> List[ModelState]:
        """Every served model (current version) and every bundle that failed, by name."""
        out = {name: self.state(name) for name in self._current}
        for name, failed in self._failed.items():
            out.setdefault(name, failed)
        return [out[name] for name in sorted(out)]

    def state(self, name: str) -> ModelState:
        """Raises: NotFoundError: no model of that name (loaded or failed)."""
        mv = self._current.get(name)
        if mv is None:
            if name in self._failed:
                return self._failed[name]
            raise NotFoundError(self._unknown(name))
        return ModelState.of(mv, self._live_versions(name))

    def current(self, name: str) -> ModelVersion:
        """Raises: NotFoundError: no such model is being served."""
        mv = self._current.get(name)
        if mv is None:
            raise NotFoundError(self._unknown(name))
        return mv

    def names(self) -> List[str]:
        return sorted(self._current)

    def _live_versions(self, name: str) -> List[int]:
        return sorted(v.version for v in self._live.values() if v.name == name)

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._current)) or "none"
        if name in self._failed:
            return f"model {name} failed to load: {'; '.join(self._failed[name].problems)}"
        return f"no model named {name!r} is loaded (loaded: {known})"

    # ---- leases ----

    def acquire(self, name: str, version: Optional[int] = None) -> ModelVersion:
        """Lease the current (or a given, still live) version for one request.

        Raises:
            NotFoundError: no such model, or no such live version.
        """
        if version:
            mv = self._live.get(f"{name}@{int(version)}")
            if mv is None or mv.state not in ("ready", "retiring"):
                raise NotFoundError(f"model {name} has no version {version} "
                                    f"(live: {self._live_versions(name) or 'none'})")
        else:
            mv = self.current(name)
        mv.refs += 1
        return mv

    def release(self, mv: ModelVersion) -> None:
        """End a lease; the last lease of a retired version releases it from the devices."""
        mv.refs -= 1
        if mv.refs <= 0 and mv.state == "retiring":
            asyncio.ensure_future(self._release_version(mv))

    # ---- load, replace, unload ----

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _usable_devices(self) -> List[Any]:
        return [d for d in self._pool.devices() if d.in_service]

    async def load(self, name: str, path: Optional[Path] = None, data: Optional[bytes] = None,
                   source: str = "api") -> ModelState:
        """Load a bundle (folder or .tflite) or uploaded .tflite bytes as the next version of ``name``.

        If ``name`` is served already, this is an availability-preserving replacement.

        Raises:
            ModelError: bad name, unreadable or invalid bundle, the runtime refuses the model.
            DeviceUnavailableError: no device could take the model.
        """
        check_name(name)
        if (path is None) == (data is None):
            raise ModelError("give either a path or the model's bytes")
        async with self._lock(name):
            version = self._next_version.get(name, 0) + 1
            self._next_version[name] = version
            upload_dir = None
            if data is not None:
                upload_dir = self._upload_dir(name, version)
                path = await self._run(self._save_upload, name, version, bytes(data))
            assert path is not None
            path = Path(path)
            try:
                mv = await self._prepare(name, version, path, source)
                mv.upload_dir = upload_dir
                await self._place_everywhere(mv)
            except Exception as exc:
                if name not in self._current:
                    self._failed[name] = ModelState.failed(name, str(path), str(exc))
                if upload_dir is not None:  # a version that never served: nothing will release its copy
                    await self._run(self._delete_upload, upload_dir)
                raise
            self._failed.pop(name, None)
            old = self._current.get(name)
            mv.state = "ready"
            self._current[name] = mv
            self._live[mv.id] = mv
            log.info("model %s version %d serving on %s%s", name, version, ", ".join(sorted(mv.devices)) or "no device yet",
                     f" (replaces version {old.version})" if old else "")
            if old is not None:
                self._retire(old)
            return self.state(name)

    async def _prepare(self, name: str, version: int, path: Path, source: str) -> ModelVersion:
        bundle = await self._run(ModelBundle.load, path)
        problems: List[str] = []
        report = None
        try:
            checked = bundle.model_path or bundle.edgetpu_path
            report = (await self._run(check_model, checked)).to_dict()
            verdict = report.get("verdict")
            if verdict == "partial":
                problems.append("only part of the model maps to the Edge TPU; the rest runs on the CPU "
                                f"({report.get('summary', {}).get('cpu_ops', '?')} CPU op(s))")
            elif verdict == "none":
                problems.append("no operator maps to the Edge TPU: the model runs on the CPU only")
        except Exception as exc:  # the checker is advice: a model it cannot judge still serves
            problems.append(f"compatibility check failed: {exc}")
        for problem in problems:
            log.warning("model %s: %s", name, problem)
        fp = await self._run(fingerprint, path)
        session: Session = ModelSession(bundle)
        if self.adapt is not None:
            bundle, session = await self._run(self.adapt, name, bundle, session)
        return ModelVersion(name=name, version=version, bundle=bundle, session=session,
                            report=report, problems=problems, source=source, fingerprint=fp)

    async def replace_session(self, name: str, make_session: Callable[[ModelVersion], Tuple[ModelBundle, Session]],
                              same_base: bool = True) -> ModelState:
        """Serve ``name`` with another session as its next version (a head change), without failing a request.

        With ``same_base`` the new version runs the base already loaded on the devices (only
        the CPU-side head differs), so nothing is reloaded; otherwise the bundle
        ``make_session`` returns is loaded and warmed like any replacement first.

        Raises:
            NotFoundError: no such model is served. ModelError, DeviceUnavailableError: the new base
            could not be placed (the served version keeps serving).
        """
        async with self._lock(name):
            old = self.current(name)
            bundle, session = make_session(old)
            version = self._next_version.get(name, 0) + 1
            self._next_version[name] = version
            mv = ModelVersion(name=name, version=version, bundle=bundle, session=session, report=old.report,
                              problems=list(old.problems), source=old.source, fingerprint=old.fingerprint)
            if same_base:
                mv.pool_key, mv.devices = old.key, old.devices  # one placement, shared
            else:
                await self._place_everywhere(mv)
            mv.upload_dir, old.upload_dir = old.upload_dir, None  # the newest version owns the stored upload
            mv.state = "ready"
            self._current[name] = mv
            self._live[mv.id] = mv
            log.info("model %s version %d serving (%s; replaces version %d)", name, version,
                     "same base, new head" if same_base else "new base", old.version)
            self._retire(old)
            return self.state(name)


    def _upload_dir(self, name: str, version: int) -> Path:
        """The folder one uploaded version lives in: ``state_dir/uploads/NAME/vN``."""
        return self._state_dir / "uploads" / name / f"v{version}"

    def _save_upload(self, name: str, version: int, data: bytes) -> Path:
        """Keep uploaded bytes under the state folder (never under the models folder).

        Raises:
            ModelError: the bytes are not a .tflite model, or the folder cannot be written.
        """
        model = TfliteModel.read(data)
        folder = self._upload_dir(name, version)
        suffix = "_edgetpu" if model.is_edgetpu_compiled else ""
        target = folder / f"{name}{suffix}.tflite"
        try:
            if folder.exists():  # left by an earlier run (versions restart at 1): no stale twin may join these bytes
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(target)
        except OSError as exc:
            self._delete_upload(folder)
            raise ModelError(f"cannot store the uploaded model under {folder}: {exc.strerror or exc}") from None
        return target

    def _delete_upload(self, folder: Path) -> None:
        """Delete one uploaded version's folder, and its model's folder once empty, so uploads do not fill the disk.

        Only a ``state_dir/uploads/NAME/vN`` folder is ever touched: a bundle loaded from a
        user's path is not the daemon's to delete. A failure is logged, never raised: the
        version is released either way.
        """
        try:
            root = (self._state_dir / "uploads").resolve()
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

    async def _place_everywhere(self, mv: ModelVersion) -> None:
        """Load and warm ``mv`` on every usable device; it must land on at least one if any is usable.

        Raises:
            ModelError: the runtime refused the model on every device.
            DeviceUnavailableError: every device failed.
        """
        devices = self._usable_devices()
        if not devices:
            mv.problems.append("no device was available at load time; it is loaded on first use")
            log.warning("model %s: no device available; it will be loaded on first use", mv.name)
            return
        results = await asyncio.gather(*(self.place(d.id, mv.key, mv=mv) for d in devices), return_exceptions=True)
        errors = [(d.id, r) for d, r in zip(devices, results) if isinstance(r, BaseException)]
        if len(errors) == len(devices):
            first = errors[0][1]
            for device, _ in errors:
                self._unload_quietly(device, mv.key)
            if isinstance(first, (ModelError, DeviceUnavailableError)):
                raise first
            raise ModelError(f"model {mv.name} could not be loaded: {first}") from first
        for device, exc in errors:
            mv.problems.append(f"not loaded on {device}: {exc}")
            log.warning("model %s not loaded on %s: %s", mv.name, device, exc)

    async def place(self, device: str, key: str, mv: Optional[ModelVersion] = None) -> None:
        """Load the version ``key`` on ``device`` and warm it with one invocation (the scheduler's loader).

        Raises:
            ModelError: the runtime refused the model. DeviceUnavailableError: the device is gone.
            NotFoundError: the version is no longer live.
        """
        mv = mv or self._by_key(key)
        if mv is None:
            raise NotFoundError(f"model version {key} is no longer loaded")
        kind = next((d.kind for d in self._pool.devices() if d.id == device), device.split(":")[0])
        model_file = mv.bundle.file_for(kind)
        try:
            await self._run(self._pool.load, device, key, model_file, mv.bundle.model_path)
            zeros = [np.zeros(s.shape, dtype=s.dtype) for s in mv.bundle.inputs]
            await asyncio.wrap_future(self._pool.submit(device, key, zeros))
        except HalError as exc:
            if isinstance(exc, DeviceUnavailableError):
                raise
            raise ModelError(f"model {mv.name} cannot run on {device}: {exc}") from exc
        mv.devices.add(device)
        self._scheduler.placed(key, device)

    def _by_key(self, key: str) -> Optional[ModelVersion]:
        """A live version whose base is loaded under the pool key ``key`` (the newest, when several share it)."""
        found = [mv for mv in self._live.values() if mv.key == key]
        return max(found, key=lambda mv: mv.version) if found else None

    def _retire(self, mv: ModelVersion) -> None:
        mv.state = "retiring"
        if mv.refs <= 0:
            asyncio.ensure_future(self._release_version(mv))
        else:
            log.info("model %s version %d retires after its %d in-flight request(s)", mv.name, mv.version, mv.refs)

    async def _release_version(self, mv: ModelVersion) -> None:
        if mv.state != "retiring":
            return
        mv.state = "unloaded"
        self._live.pop(mv.id, None)
        if self._by_key(mv.key) is None:  # no later version runs the same base
            self._scheduler.unplaced(mv.key)
            for device in sorted(mv.devices):
                await self._run(self._unload_quietly, device, mv.key)
            mv.devices.clear()
        log.info("model %s version %d released", mv.name, mv.version)
        if mv.upload_dir is not None:
            async with self._lock(mv.name):  # a load of the same name may be creating the model's folder
                await self._run(self._delete_upload, mv.upload_dir)

    def _unload_quietly(self, device: str, key: str) -> None:
        try:
            self._pool.unload(device, key)
        except Exception as exc:  # a gone device has nothing to unload
            log.debug("unloading %s from %s: %s", key, device, exc)

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; requests already running finish first.

        Raises:
            NotFoundError: no such model.
        """
        async with self._lock(name):
            if name not in self._current:
                if self._failed.pop(name, None) is not None:
                    return
                raise NotFoundError(self._unknown(name))
            mv = self._current.pop(name)
            log.info("unloading model %s version %d", name, mv.version)
            self._retire(mv)

    async def place_all(self, device: str) -> None:
        """Load every served model on a device that just joined."""
        for mv in list(self._current.values()):
            if device in mv.devices:
                continue
            try:
                await self.place(device, mv.key, mv)
            except Exception as exc:
                log.warning("could not load %s on new device %s: %s", mv.key, device, exc)

    # ---- the models folder ----

    async def load_folder(self, models_dir: Path) -> Dict[str, Optional[str]]:
        """Load new bundles, replace changed ones and unload removed ones (those this folder provided).

        A bundle that fails is reported and skipped; the others serve. Returns name -> problem (None: ok).
        """
        found = await self._run(scan_models_dir, Path(models_dir))
        outcome: Dict[str, Optional[str]] = {}
        for name, path in found.items():
            try:
                check_name(name)
                mv = self._current.get(name)
                if mv is not None:
                    if mv.source == "folder" and mv.fingerprint == await self._run(fingerprint, path):
                        # The files are back to what is served: an earlier refused change no longer applies.
                        mv.problems[:] = [p for p in mv.problems if not p.startswith(_REPLACEMENT_FAILED)]
                        continue
                    if mv.source != "folder":
                        continue  # loaded through the API: the API owns it
                await self.load(name, path=path, source="folder")
                outcome[name] = None
            except Exception as exc:
                log.error("model bundle %s skipped: %s", path, exc)
                current = self._current.get(name)
                if current is None:
                    self._failed[name] = ModelState.failed(name, str(path), str(exc))
                else:
                    _note_failed_replacement(current, path, exc)
                outcome[name] = str(exc)
        for name, mv in list(self._current.items()):
            if mv.source == "folder" and name not in found:
                log.info("bundle %s left %s: unloading it", name, models_dir)
                await self.unload(name)
        for name in list(self._failed):
            if name not in found and name not in outcome:
                self._failed.pop(name, None)
        return outcome
