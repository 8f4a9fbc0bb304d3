"""What the registry knows of one version (``ModelVersion``) and what it shows of a model (``ModelState``)."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edgetpud.hal.executor import TensorSpec

from ..learn.session import HeadSession
from ..model import ModelBundle, ModelSession

Session = Union[ModelSession, HeadSession]


class VersionState(str, enum.Enum):
    """Life of one version: the values are what ``status`` and ``models info`` print.

    ``loading`` until it is placed and warmed, ``ready`` while it takes requests,
    ``retiring`` once replaced or unloaded (its leases still finish), ``unloaded``
    after its last lease; ``failed`` is a bundle that never served.
    """

    LOADING = "loading"
    READY = "ready"
    RETIRING = "retiring"
    UNLOADED = "unloaded"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @property
    def leasable(self) -> bool:
        """Whether a request may still name this version explicitly."""
        return self in (VersionState.READY, VersionState.RETIRING)


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
    state: VersionState = VersionState.LOADING
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
    state: VersionState
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
            "name": self.name, "version": self.version, "task": self.task, "state": VersionState(self.state).value,
            "path": self.path, "devices": list(self.devices),
            "inputs": [_spec_dict(s) for s in self.inputs], "outputs": [_spec_dict(s) for s in self.outputs],
            "labels": self.label_count, "label_count": self.label_count,
            "edgetpu_compiled": self.edgetpu_compiled,
            "compatibility": self.report, "report": self.report,
            "problems": list(self.problems),
            "error": "; ".join(self.problems) if self.state == VersionState.FAILED else "",
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
        return cls(name=name, version=None, task=None, state=VersionState.FAILED, path=path, devices=[], inputs=[],
                   outputs=[], label_count=0, edgetpu_compiled=False, report=None, problems=[problem])
