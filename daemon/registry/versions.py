"""Versions of the served models: leases, loads, availability-preserving replacement, the models folder.

Each load makes a new version (``name@N``, N increasing per name). A request leases
the version it starts on; replacing a model loads and warms the new version on the
devices first, switches new requests to it, and releases the old version only when
its last lease ends. So a replacement under load fails no request.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..errors import ModelError, NotFoundError
from ..model import ModelBundle, ModelSession
from ..model.checker import check_model
from ..model.labels import decode_labels
from .placement import Placement, Run
from .state import ModelState, ModelVersion, Session, VersionState
from .store import UploadStore, check_name, fingerprint, scan_models_dir

log = logging.getLogger(__name__)

#: Called (off the loop) on every freshly read bundle: returns the bundle and session to serve, so a
#: model with a learned head gets it back (and a classifier cut at its head's input) whenever it loads.
Adapt = Callable[[str, ModelBundle, ModelSession], Tuple[ModelBundle, Session]]

_REPLACEMENT_FAILED = "the changed bundle at "


def _note_failed_replacement(mv: ModelVersion, path: Path, exc: BaseException) -> None:
    """Tell ``models info`` why the served version was kept: otherwise only the log knows the new files were refused."""
    _forget_failed_replacement(mv)
    mv.problems.append(f"{_REPLACEMENT_FAILED}{path} could not replace version {mv.version}, which keeps "
                       f"serving: {exc}")


def _forget_failed_replacement(mv: ModelVersion) -> None:
    mv.problems[:] = [p for p in mv.problems if not p.startswith(_REPLACEMENT_FAILED)]


async def _check(name: str, bundle: ModelBundle, run: Run) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """The compatibility report of a bundle and what it means for serving (advice: never fatal)."""
    problems: List[str] = []
    report = None
    try:
        checked = bundle.model_path or bundle.edgetpu_path
        report = (await run(check_model, checked)).to_dict()
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
    return report, problems


class Registry:
    """Loads bundles onto the pool's devices and leases versions to requests.

    Every method runs on the event loop; blocking work (reading files, the checker,
    pool loads) goes to ``run_blocking``.
    """

    def __init__(self, pool: Any, scheduler: Any, state_dir: Path, run_blocking: Run) -> None:
        self._run = run_blocking
        self._placement = Placement(pool, scheduler, run_blocking)
        self.uploads = UploadStore(state_dir)
        self._current: Dict[str, ModelVersion] = {}
        self._live: Dict[str, ModelVersion] = {}  # every version not yet released, by id (name@version)
        self._failed: Dict[str, ModelState] = {}
        self._failed_uploads: Set[str] = set()  # failed names whose stored upload would not load at start
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

    def _by_key(self, key: str) -> Optional[ModelVersion]:
        """A live version whose base is loaded under the pool key ``key`` (the newest, when several share it)."""
        found = [mv for mv in self._live.values() if mv.key == key]
        return max(found, key=lambda mv: mv.version) if found else None

    # ---- leases ----

    def acquire(self, name: str, version: Optional[int] = None) -> ModelVersion:
        """Lease the current (or a given, still live) version for one request.

        Raises:
            NotFoundError: no such model, or no such live version.
        """
        if version:
            mv = self._live.get(f"{name}@{int(version)}")
            if mv is None or not mv.state.leasable:
                raise NotFoundError(f"model {name} has no version {version} "
                                    f"(live: {self._live_versions(name) or 'none'})")
        else:
            mv = self.current(name)
        mv.refs += 1
        return mv

    def release(self, mv: ModelVersion) -> None:
        """End a lease; the last lease of a retired version releases it from the devices."""
        mv.refs -= 1
        if mv.refs <= 0 and mv.state == VersionState.RETIRING:
            asyncio.ensure_future(self._release_version(mv))

    # ---- load, replace, unload ----

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _next(self, name: str) -> int:
        version = self._next_version.get(name, 0) + 1
        self._next_version[name] = version
        return version

    async def load(self, name: str, path: Optional[Path] = None, data: Optional[bytes] = None,
                   source: str = "api", labels: Optional[bytes] = None) -> ModelState:
        """Load a bundle (folder or .tflite) or uploaded .tflite bytes as the next version of ``name``.

        If ``name`` is served already, this is an availability-preserving replacement.
        ``labels`` (a labels file's bytes) override the bundle's own labels; with uploaded
        bytes they are stored beside them. A failed load of a name that is not served
        leaves nothing behind: the caller has the error, and ``models list`` shows only what
        serves (and the models folder's failed bundles, which have no caller to tell).

        Raises:
            ModelError: bad name, unreadable or invalid bundle or labels, the runtime refuses the model.
            DeviceUnavailableError: no device could take the model.
        """
        check_name(name)
        if (path is None) == (data is None):
            raise ModelError("give either a path or the model's bytes")
        label_map = decode_labels(labels, "the labels file sent with the load") if labels is not None else None
        async with self._lock(name):
            version = self._next(name)
            upload_dir = None
            if data is not None:  # labels sent with uploaded bytes are stored beside them, for the next start
                upload_dir = self.uploads.folder(name, version)
                path = await self._run(self.uploads.save, name, version, bytes(data), labels)
                label_map = None
            assert path is not None
            try:
                return await self._load_version(name, version, Path(path), source, upload_dir, label_map)
            except Exception:
                if upload_dir is not None:  # a version that never served: nothing will release its copy
                    await self._run(self.uploads.delete, upload_dir)
                raise

    async def restore_uploads(self) -> Dict[str, Optional[str]]:
        """Serve again the uploaded models the last run served (at start, before the models folder).

        Their files stay under ``state_dir/uploads`` while they serve, so a restart must not
        drop them. Each keeps its version number, and later loads count on from it. One that
        no longer loads stays listed as failed, its files kept, until it is unloaded (which
        deletes them). Returns name -> problem (None: ok).
        """
        outcome: Dict[str, Optional[str]] = {}
        for name, (version, model_file, stale) in (await self._run(self.uploads.stored)).items():
            for folder in stale:  # versions that were retiring when the last run ended
                await self._run(self.uploads.delete, folder)
            async with self._lock(name):
                self._next_version[name] = max(self._next_version.get(name, 0), version)
                try:
                    await self._load_version(name, version, model_file, "api", model_file.parent)
                    outcome[name] = None
                except Exception as exc:
                    log.error("uploaded model %s (%s) is not served again: %s; unload it to delete its files",
                              name, model_file.parent, exc)
                    self._failed[name] = ModelState.failed(name, str(model_file), str(exc))
                    self._failed_uploads.add(name)
                    outcome[name] = str(exc)
        return outcome

    async def _load_version(self, name: str, version: int, path: Path, source: str, upload_dir: Optional[Path],
                            labels: Optional[Dict[int, str]] = None) -> ModelState:
        """Prepare, place and serve one version (the name's lock is held)."""
        mv = await self._prepare(name, version, path, source, labels)
        mv.upload_dir = upload_dir
        await self._placement.everywhere(mv)
        self._failed.pop(name, None)
        if name in self._failed_uploads:  # replaced: the stored files that would not load are not the model's now
            self._failed_uploads.discard(name)
            await self._run(self.uploads.delete_all_but, name, upload_dir)
        old = self._serve(mv)
        log.info("model %s version %d serving on %s%s", name, version, ", ".join(sorted(mv.devices)) or "no device yet",
                 f" (replaces version {old.version})" if old else "")
        if old is not None:
            self._retire(old)
        return self.state(name)

    async def _prepare(self, name: str, version: int, path: Path, source: str,
                       labels: Optional[Dict[int, str]] = None) -> ModelVersion:
        bundle = await self._run(ModelBundle.load, path)
        if labels is not None:  # given with the load: they replace the bundle's own
            bundle.labels, bundle.labels_path = labels, None
        report, problems = await _check(name, bundle, self._run)
        fp = await self._run(fingerprint, path)
        session: Session = ModelSession(bundle)
        if self.adapt is not None:
            bundle, session = await self._run(self.adapt, name, bundle, session)
        return ModelVersion(name=name, version=version, bundle=bundle, session=session,
                            report=report, problems=problems, source=source, fingerprint=fp)

    def _serve(self, mv: ModelVersion) -> Optional[ModelVersion]:
        """Make a placed version the current one (new requests go to it); returns the one it replaces."""
        old = self._current.get(mv.name)
        mv.state = VersionState.READY
        self._current[mv.name] = mv
        self._live[mv.id] = mv
        return old

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
            version = self._next(name)
            mv = ModelVersion(name=name, version=version, bundle=bundle, session=session, report=old.report,
                              problems=list(old.problems), source=old.source, fingerprint=old.fingerprint)
            if same_base:
                mv.pool_key, mv.devices = old.key, old.devices  # one placement, shared
            else:
                await self._placement.everywhere(mv)
            mv.upload_dir, old.upload_dir = old.upload_dir, None  # the newest version owns the stored upload
            self._serve(mv)
            log.info("model %s version %d serving (%s; replaces version %d)", name, version,
                     "same base, new head" if same_base else "new base", old.version)
            self._retire(old)
            return self.state(name)

    async def place(self, device: str, key: str, mv: Optional[ModelVersion] = None) -> None:
        """Load the version ``key`` on ``device`` and warm it with one invocation (the scheduler's loader).

        Raises:
            ModelError: the runtime refused the model. DeviceUnavailableError: the device is gone.
            NotFoundError: the version is no longer live.
        """
        mv = mv or self._by_key(key)
        if mv is None:
            raise NotFoundError(f"model version {key} is no longer loaded")
        await self._placement.place(device, mv)

    async def place_all(self, device: str) -> None:
        """Load every served model on a device that just joined."""
        for mv in list(self._current.values()):
            if device in mv.devices:
                continue
            try:
                await self._placement.place(device, mv)
            except Exception as exc:
                log.warning("could not load %s on new device %s: %s", mv.key, device, exc)

    def _retire(self, mv: ModelVersion) -> None:
        mv.state = VersionState.RETIRING
        if mv.refs <= 0:
            asyncio.ensure_future(self._release_version(mv))
        else:
            log.info("model %s version %d retires after its %d in-flight request(s)", mv.name, mv.version, mv.refs)

    async def _release_version(self, mv: ModelVersion) -> None:
        if mv.state != VersionState.RETIRING:
            return
        mv.state = VersionState.UNLOADED
        self._live.pop(mv.id, None)
        if self._by_key(mv.key) is None:  # no later version runs the same base
            await self._placement.remove(mv)
        log.info("model %s version %d released", mv.name, mv.version)
        if mv.upload_dir is not None:
            async with self._lock(mv.name):  # a load of the same name may be creating the model's folder
                await self._run(self.uploads.delete, mv.upload_dir)

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; requests already running finish first.

        Raises:
            NotFoundError: no such model.
        """
        async with self._lock(name):
            if name not in self._current:
                if self._failed.pop(name, None) is not None:
                    if name in self._failed_uploads:  # a stored upload that no longer loads: its files go too
                        self._failed_uploads.discard(name)
                        await self._run(self.uploads.delete_all, name)
                    return
                raise NotFoundError(self._unknown(name))
            mv = self._current.pop(name)
            log.info("unloading model %s version %d", name, mv.version)
            self._retire(mv)

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
                        _forget_failed_replacement(mv)
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
            if name not in found and name not in outcome and name not in self._failed_uploads:
                self._failed.pop(name, None)
        return outcome
