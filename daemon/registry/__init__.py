"""The models the daemon serves: where bundles come from, and the versions built from them.

``store`` finds bundles and keeps uploads (names, the models folder, fingerprints,
``state_dir/uploads``); ``versions`` leases and swaps versions (``Registry``);
``placement`` puts them on devices; ``state`` holds the types (``VersionState``,
``ModelVersion``, ``ModelState``).
"""
from __future__ import annotations

from .placement import Placement
from .state import ModelState, ModelVersion, Session, VersionState
from .store import NAME_PATTERN, UploadStore, check_name, fingerprint, scan_models_dir
from .versions import Adapt, Registry

__all__ = ["Adapt", "ModelState", "ModelVersion", "NAME_PATTERN", "Placement", "Registry", "Session",
           "UploadStore", "VersionState", "check_name", "fingerprint", "scan_models_dir"]
